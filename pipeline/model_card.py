"""MODEL_CARD.md beside each artifact: written from artifact.json and fresh measurements."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from pipeline.models import ARTIFACT_CONFIG
from pipeline.weights import COMPACT_FORMAT, DELTA_BITS

STORED_AS = {"fp16": "fp16", COMPACT_FORMAT: f"{DELTA_BITS}-bit per-row changes from the pip base encoder, zstd"}


def sentences_per_second(predict: Callable[[Sequence[str]], object], texts: Sequence[str]) -> float:
    predict(texts[:32])  # warm-up
    started = time.perf_counter()
    predict(texts)
    return len(texts) / (time.perf_counter() - started)


def write_model_card(folder: Path, title: str, evaluations: dict[str, str], speed: float, speed_note: str) -> Path:
    config = json.loads((folder / ARTIFACT_CONFIG).read_text())
    training = config.get("training", {})
    history = "\n".join(f"| {h['epoch']} | {h['seconds']} | {h['train_loss']} | "
                        + ", ".join(f"{k}={v}" for k, v in h.items() if k not in ("epoch", "seconds", "train_loss")) + " |"
                        for h in training.get("history", []))
    data = "\n".join(f"- {k}: `{v}`" for k, v in training.get("data", {}).items())
    evaluation = "\n\n".join(f"### {name}\n\n```\n{text}\n```" for name, text in evaluations.items())
    size_mb = (folder / config["weights"]).stat().st_size / 1e6
    card = f"""# {title}

- Base model: {config['base_model']} (weights from the pip package; only the trained parameters are stored here)
- Labels: {', '.join(config['labels'])}
- Weights: `{config['weights']}`, {size_mb:.1f} MB ({STORED_AS[config.get('format', 'fp16')]}), sha256 `{config['sha256']}` (checked at every load)
- Temperature (calibration): {config.get('temperature', 1.0)}
- Casing features: {config.get('case_features', False)}
- Trained with: `{training.get('command', '')}`
- Seed {training.get('seed')}, {training.get('epochs')} epochs (kept: epoch {training.get('best_epoch')}), lr {training.get('lr')}, batch {training.get('batch_size')}, frozen: {training.get('frozen')}, {training.get('minutes')} min on {platform.processor() or platform.machine()} with {torch.get_num_threads()} threads

## Data

{data}

## Training history

| epoch | seconds | train loss | dev |
|---|---|---|---|
{history}

## Evaluation

{evaluation}

## Speed

{speed:.0f} sentences/s on CPU at batch 32 ({speed_note}; torch {torch.__version__}, {torch.get_num_threads()} threads).
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(card)
    return path


def card_ner(folder: str | Path, data_dir: str | Path) -> Path:
    """Evaluate the stored artifact on eng.testa, time it, and write its card."""
    from pipeline import ner
    from pipeline.conll import read_conll
    from pipeline.evaluate import score_ner
    from pipeline.models import load_model

    folder = Path(folder)
    loaded = load_model("ner", str(folder), "fp32")  # the card describes the stored weights
    dev = read_conll(Path(data_dir) / "eng.testa")
    scores = score_ner(loaded, dev)
    texts = [s.text_and_spans()[0] for s in dev]
    speed = sentences_per_second(lambda batch: ner.predict(loaded, batch, batch_size=32), texts)
    report = f"{scores.report}\nprecision={scores.precision:.4f} recall={scores.recall:.4f} f1={scores.f1:.4f}"
    return write_model_card(folder, "Default NER model (CoNLL-2003 PER/ORG/LOC/MISC)",
                            {"eng.testa (CoNLL-2003 dev), seqeval strict IOB2, entity level": report},
                            speed, f"{len(texts)} eng.testa sentences, length-sorted")


def card_stance(folder: str | Path, cameo_path: str | Path, quotes_path: str | Path | None = None) -> Path:
    from pipeline import stance
    from pipeline.evaluate import evaluate_stance
    from pipeline.models import load_model
    from pipeline.stance_data import PROJECT_QUOTES, read_labelled_tsv

    folder = Path(folder)
    loaded = load_model("stance", str(folder), "fp32")
    quotes_path = quotes_path or PROJECT_QUOTES
    evaluations = {
        "CAMEO-class dev split (fixed 20% hash split of train.tsv)": evaluate_stance(loaded, cameo_path, "dev"),
        "Project quote dev split (data/quote_stance.tsv, split=dev)": evaluate_stance(loaded, quotes_path, "dev"),
    }
    texts = [e.text for e in read_labelled_tsv(quotes_path)]
    speed = sentences_per_second(lambda batch: stance.predict(loaded, batch, batch_size=32), texts)
    return write_model_card(folder, "Default escalation-stance model (escalatory / deescalatory / neutral)", evaluations,
                            speed, f"{len(texts)} quoted statements from data/quote_stance.tsv")
