"""`python -m pipeline train stance`: fine-tune the default escalation-stance model.

Trained on CAMEO-class event sentences (mapped to escalatory/deescalatory/neutral) AND the
project's hand-labelled quoted statements: event reports alone teach the wrong lesson about
first-person speech ("We don't seek war" is not a threat). Probabilities are calibrated by
temperature scaling on the two dev splits.
"""
from __future__ import annotations

import copy
import hashlib
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import stance
from pipeline.models import LoadedModel, ready_for_inference, build_default_architecture, save_artifact
from pipeline.stance import STANCE_LABELS
from pipeline.stance_data import PROJECT_QUOTES, Example, read_labelled_tsv
from pipeline.train.common import bucketed_batches, make_optimizer, pad, seed_everything, train_epochs


def macro_f1(gold: list[str], predicted: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, labels=STANCE_LABELS, average="macro", zero_division=0))


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, bins: int = 10) -> float:
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    ece = 0.0
    for low in np.linspace(0, 1, bins, endpoint=False):
        in_bin = (confidence > low) & (confidence <= low + 1 / bins)
        if in_bin.any():
            ece += in_bin.mean() * abs((predicted[in_bin] == gold[in_bin]).mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, gold: np.ndarray) -> float:
    """Temperature minimising the dev negative log-likelihood (Guo et al., 2017), by a log-spaced grid:
    robust where an optimiser can run off to 0 on a degenerate model."""
    def nll(temperature: float) -> float:
        probs = stance.probabilities(logits, temperature)
        return float(-np.log(probs[np.arange(len(gold)), gold] + 1e-12).mean())

    return min(np.exp(np.linspace(np.log(0.05), np.log(20.0), 400)), key=nll)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_stance(cameo_path: str, out_dir: str, quotes_path: str | None = None, epochs: int = 8, lr: float = 5e-5,
                 batch_size: int = 16, frozen_layers: int = 0, quote_repeat: int = 2, seed: int = 13, limit: int | None = None, command: str = "") -> dict:
    seed_everything(seed)
    quotes_file = Path(quotes_path) if quotes_path else PROJECT_QUOTES
    cameo, quotes = read_labelled_tsv(cameo_path), read_labelled_tsv(quotes_file)
    if limit:
        cameo, quotes = cameo[:limit], quotes[:limit]
    # the quotes are the target domain but the smaller set: repeat them so they weigh more
    train = [e for e in cameo if e.split == "train"] + [e for e in quotes if e.split == "train"] * quote_repeat
    devs = {"cameo": [e for e in cameo if e.split == "dev"], "quotes": [e for e in quotes if e.split == "dev"]}

    tokenizer, model, _ = build_default_architecture("stance", STANCE_LABELS, case_features=False)
    model.get_input_embeddings().weight.requires_grad_(False)
    for layer in model.base_model.encoder.layer[:frozen_layers]:  # little data: keep the lower layers as pip ships them
        layer.requires_grad_(False)
    loaded = ready_for_inference(LoadedModel("stance", "training", tokenizer, model, STANCE_LABELS))
    label_id = {label: i for i, label in enumerate(STANCE_LABELS)}
    encoded = list(zip(stance.preprocess(loaded, [e.text for e in train]), [label_id[e.label] for e in train]))

    rng = random.Random(seed)
    steps = epochs * ((len(encoded) + batch_size - 1) // batch_size)
    optimizer, scheduler = make_optimizer([{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}], steps)
    loss_fn = nn.CrossEntropyLoss()

    def loss_of_batch(batch):
        input_ids = pad([b[0] for b in batch], tokenizer.pad_token_id)
        logits = loaded.forward(input_ids, (input_ids != tokenizer.pad_token_id).long())
        return loss_fn(logits, torch.tensor([b[1] for b in batch]))

    def dev_logits(examples: list[Example]) -> np.ndarray:
        return stance.forward(loaded, stance.preprocess(loaded, [e.text for e in examples]))

    best = {"score": -1.0}

    def on_epoch_end(epoch: int) -> dict:
        scores = {}
        for name, examples in devs.items():
            predicted = [STANCE_LABELS[i] for i in dev_logits(examples).argmax(axis=1)]
            scores[f"{name}_dev_macro_f1"] = round(macro_f1([e.label for e in examples], predicted), 4)
        mean = float(np.mean(list(scores.values())))
        if mean > best["score"]:
            best.update(score=mean, epoch=epoch, model=copy.deepcopy(model.state_dict()))
        return scores

    started = time.perf_counter()
    history = train_epochs([model], lambda e: bucketed_batches(encoded, lambda x: len(x[0]), batch_size, rng),
                           loss_of_batch, optimizer, scheduler, epochs, on_epoch_end)
    model.load_state_dict(best["model"])

    all_dev = devs["cameo"] + devs["quotes"]
    logits = dev_logits(all_dev)
    gold = np.array([label_id[e.label] for e in all_dev])
    temperature = fit_temperature(logits, gold)
    calibration = {
        "temperature": round(float(temperature), 4),
        "dev_ece_before": round(expected_calibration_error(stance.probabilities(logits, 1.0), gold), 4),
        "dev_ece_after": round(expected_calibration_error(stance.probabilities(logits, temperature), gold), 4),
    }
    print(f"calibration: {calibration}", flush=True)
    save_artifact(Path(out_dir), "stance", STANCE_LABELS, model, None, temperature, {
        "training": {
            "data": {"cameo": str(cameo_path), "cameo_sha256": _sha256(Path(cameo_path)), "quotes": str(quotes_file),
                     "quotes_sha256": _sha256(quotes_file), "train_examples": len(train),
                     "dev_examples": {k: len(v) for k, v in devs.items()}},
            "command": command, "seed": seed, "epochs": epochs, "best_epoch": best["epoch"], "lr": lr,
            "batch_size": batch_size, "quote_repeat": quote_repeat, "frozen": f"word embeddings and encoder layers 0-{frozen_layers - 1}",
            "minutes": round((time.perf_counter() - started) / 60, 1), "history": history, "calibration": calibration,
        },
    })
    from pipeline.int8 import calibrate_artifact
    from pipeline.model_card import card_stance

    calibrate_artifact("stance", out_dir, cameo_path, quotes_file)

    print(f"model card: {card_stance(out_dir, cameo_path, quotes_file)}", flush=True)
    return {"best_epoch": best["epoch"], **calibration, "out": out_dir}
