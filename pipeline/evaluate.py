"""`python -m pipeline evaluate ...`: scores of the models on labelled files."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline import ner
from pipeline.conll import Sentence, read_conll
from pipeline.models import LoadedModel


@dataclass
class NerScores:
    precision: float
    recall: float
    f1: float
    report: str


def ner_tags(loaded: LoadedModel, sentences: Sequence[Sentence], batch_size: int = 64) -> list[list[str]]:
    """Predicted tag per gold word, through the same preprocess/forward/postprocess as the pipeline."""
    docs = []
    for sentence in sentences:
        text, spans = sentence.text_and_spans()
        docs.append(ner.preprocess(loaded, text, word_spans=spans))
    predicted = []
    for doc, probs in zip(docs, ner.run_docs(loaded, docs, batch_size)):
        tags, _ = ner.word_tags(loaded, ner.word_predictions(doc, probs))
        predicted.append(_to_conll_tags(tags))
    return predicted


def _to_conll_tags(tags: Sequence[str]) -> list[str]:
    """Map another model's label names onto CoNLL IOB2 (PERSON -> PER, GPE -> LOC, ...)."""
    out = []
    for tag in tags:
        prefix, _, kind = tag.partition("-") if "-" in tag else ("I", "", tag)
        label = ner.LABEL_ALIASES.get(kind.upper()) if tag != "O" else None
        out.append("O" if label is None else f"{prefix}-{label}")
    return out


def score_ner(loaded: LoadedModel, sentences: Sequence[Sentence]) -> NerScores:
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    gold = [s.tags for s in sentences]
    predicted = ner_tags(loaded, sentences)
    kwargs = {"mode": "strict", "scheme": IOB2}
    return NerScores(
        precision_score(gold, predicted, **kwargs),
        recall_score(gold, predicted, **kwargs),
        f1_score(gold, predicted, **kwargs),
        classification_report(gold, predicted, digits=4, **kwargs),
    )


def evaluate_ner(loaded: LoadedModel, conll_file: str | Path) -> str:
    scores = score_ner(loaded, read_conll(conll_file))
    return (f"model: {loaded.name}\n{scores.report}\n"
            f"precision={scores.precision:.4f} recall={scores.recall:.4f} f1={scores.f1:.4f}")


def evaluate_stance(loaded: LoadedModel, tsv_file: str | Path, split: str | None = None) -> str:
    """Per-class F1, confusion matrix and calibration on a CAMEO-class (0-4) or project (label names) file."""
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    from pipeline import stance
    from pipeline.stance_data import read_labelled_tsv
    from pipeline.train.stance import expected_calibration_error

    examples = [e for e in read_labelled_tsv(tsv_file) if split is None or e.split == split]
    if not examples:
        raise ValueError(f"{tsv_file}: no examples" + (f" in split {split!r}" if split else ""))
    scores = stance.predict(loaded, [e.text for e in examples])
    gold = [e.label for e in examples]
    predicted = [s.label for s in scores]
    probs = np.array([[s.p_escalatory, s.p_deescalatory, s.p_neutral] for s in scores])
    gold_ids = np.array([stance.STANCE_LABELS.index(g) for g in gold])
    matrix = confusion_matrix(gold, predicted, labels=stance.STANCE_LABELS)
    width = max(len(label) for label in stance.STANCE_LABELS) + 2
    lines = [f"model: {loaded.name}", f"examples: {len(examples)}{' (' + split + ' split)' if split else ''} {dict(Counter(gold))}",
             classification_report(gold, predicted, labels=stance.STANCE_LABELS, digits=4, zero_division=0),
             "confusion matrix (rows gold, columns predicted):",
             " " * width + "".join(f"{label:>{width}}" for label in stance.STANCE_LABELS)]
    lines += [f"{label:<{width}}" + "".join(f"{n:>{width}}" for n in row) for label, row in zip(stance.STANCE_LABELS, matrix)]
    accuracy = float(np.mean([g == p for g, p in zip(gold, predicted)]))
    macro = float(f1_score(gold, predicted, labels=stance.STANCE_LABELS, average="macro", zero_division=0))
    lines.append(f"expected calibration error (10 bins): {expected_calibration_error(probs, gold_ids):.4f}")
    lines.append(f"accuracy={accuracy:.4f} macro_f1={macro:.4f}")
    return "\n".join(lines)
