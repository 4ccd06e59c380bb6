"""`python -m pipeline train ner`: fine-tune the default NER model on CoNLL-2003.

The default is the pip-shipped MiniLM encoder with every layer fine-tuned except the word
embeddings (frozen: they are half the parameters and come from pip), a new token-classification
head, and a casing embedding (the encoder is uncased; casing is the strongest NER cue).
Only the trained parameters are stored, as 6-bit changes from the pip encoder (weights.encode_deltas), so the artifact stays small.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import random
import time
from pathlib import Path

import torch
from torch import nn

from pipeline import ner
from pipeline.conll import NER_LABELS, read_conll
from pipeline.evaluate import score_ner
from pipeline.models import CASE_PAD, LoadedModel, ready_for_inference, build_default_architecture, save_artifact
from pipeline.train.common import bucketed_batches, make_optimizer, pad, seed_everything, train_epochs

LOG = logging.getLogger(__name__)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_ner(data_dir: str, out_dir: str, epochs: int = 5, lr: float = 1e-4, case_lr: float = 1e-3,
              batch_size: int = 32, seed: int = 13, limit: int | None = None, command: str = "") -> dict:
    seed_everything(seed)
    train_path, dev_path = Path(data_dir) / "eng.train", Path(data_dir) / "eng.testa"
    train, dev = read_conll(train_path), read_conll(dev_path)
    if limit:
        train, dev = train[:limit], dev[: max(1, limit // 4)]
    tokenizer, model, case_embeddings = build_default_architecture("ner", NER_LABELS, case_features=True)
    model.get_input_embeddings().weight.requires_grad_(False)
    loaded = ready_for_inference(LoadedModel("ner", "training", tokenizer, model, NER_LABELS, case_embeddings))
    label_id = {label: i for i, label in enumerate(NER_LABELS)}

    examples = []
    for sentence in train:
        text, spans = sentence.text_and_spans()
        doc = ner.preprocess(loaded, text, word_spans=spans, window_tokens=loaded.max_length)
        window = doc.windows[0]  # a CoNLL sentence always fits one window
        labels = [-100] * len(window.input_ids)
        for position, tag in zip(window.word_positions, sentence.tags):
            labels[position] = label_id[tag]
        examples.append((window.input_ids, window.case_ids, labels))

    rng = random.Random(seed)
    steps = epochs * ((len(examples) + batch_size - 1) // batch_size)
    optimizer, scheduler = make_optimizer([
        {"params": [p for p in model.parameters() if p.requires_grad], "lr": lr},
        {"params": case_embeddings.parameters(), "lr": case_lr, "weight_decay": 0.0},
    ], steps)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)

    def loss_of_batch(batch):
        input_ids = pad([b[0] for b in batch], tokenizer.pad_token_id)
        case_ids = pad([b[1] for b in batch], CASE_PAD)
        labels = pad([b[2] for b in batch], -100)
        logits = loaded.forward(input_ids, (input_ids != tokenizer.pad_token_id).long(), case_ids)
        return loss_fn(logits.view(-1, logits.shape[-1]), labels.view(-1))

    best = {"f1": -1.0}

    def on_epoch_end(epoch: int) -> dict:
        scores = score_ner(loaded, dev)
        if scores.f1 > best["f1"]:
            best.update(f1=float(scores.f1), epoch=epoch, model=copy.deepcopy(model.state_dict()),
                        case=case_embeddings.weight.detach().clone())
        return {"dev_precision": round(float(scores.precision), 4), "dev_recall": round(float(scores.recall), 4), "dev_f1": round(float(scores.f1), 4)}

    started = time.perf_counter()
    history = train_epochs([model, case_embeddings], lambda e: bucketed_batches(examples, lambda x: len(x[0]), batch_size, rng),
                           loss_of_batch, optimizer, scheduler, epochs, on_epoch_end)
    model.load_state_dict(best["model"])
    case_embeddings.weight.data.copy_(best["case"])
    out = Path(out_dir)
    save_artifact(out, "ner", NER_LABELS, model, case_embeddings, 1.0, {
        "training": {
            "data": {"train": str(train_path), "train_sha256": file_sha256(train_path), "dev": str(dev_path),
                     "dev_sha256": file_sha256(dev_path), "train_sentences": len(train), "dev_sentences": len(dev)},
            "command": command, "seed": seed, "epochs": epochs, "best_epoch": best["epoch"], "lr": lr, "case_lr": case_lr,
            "batch_size": batch_size, "frozen": "word embeddings", "minutes": round((time.perf_counter() - started) / 60, 1),
            "history": history,
        },
    })
    from pipeline.int8 import calibrate_artifact
    from pipeline.model_card import card_ner

    calibrate_artifact("ner", out, train_path)

    print(f"model card: {card_ner(out, data_dir)}", flush=True)
    return {"best_epoch": best["epoch"], "dev_f1": best["f1"], "out": str(out)}
