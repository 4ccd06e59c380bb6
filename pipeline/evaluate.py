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
        tags, _ = ner.word_tags(loaded, ner.word_predictions(doc, probs, len(loaded.labels)))
        ner.untag_titles(doc.text, doc.word_spans, tags)
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


def corpus_texts(folder: str | Path, limit: int | None = None) -> list[str]:
    """Article texts of the supported files under ``folder`` (sorted by path, parse errors skipped)."""
    from pipeline.read import SUPPORTED_EXTENSIONS, parse_file
    from pipeline.records import Article

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    texts: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS):
        texts += [r.text for r in parse_file(str(path), path.read_bytes(), language=False) if isinstance(r, Article)]
        if limit is not None and len(texts) >= limit:
            break
    texts = texts[:limit]
    if not texts:
        raise ValueError(f"{folder}: no articles in {', '.join(SUPPORTED_EXTENSIONS)} files")
    return texts


def span_f1(reference: Sequence[set[tuple[int, int, str]]], tested: Sequence[set[tuple[int, int, str]]]) -> float:
    """F1 of ``tested`` against ``reference``: per article, sets of exact (start, end, label) entities."""
    total = sum(map(len, reference)) + sum(map(len, tested))
    return 2 * sum(len(a & b) for a, b in zip(reference, tested)) / total if total else 1.0


def evaluate_precision(folder: str | Path, ner_pair: tuple[LoadedModel, LoadedModel],
                       stance_pair: tuple[LoadedModel, LoadedModel], limit: int | None = None) -> str:
    """How much a precision changes the pipeline's outputs on unlabelled articles: each model in fp32
    (the first of its pair) and in the precision under test (the second), on the same inputs.

    Entities must match exactly (start, end, label); the stance model reads the texts the pipeline
    would classify (the quotes found with the fp32 entities, partial quotes as their sentence).
    A labelled dev set of a few hundred examples moves by 0.004 F1 or more per changed answer;
    this counts the changed answers themselves, on as many articles as the folder holds."""
    from pipeline import quotes, stance

    texts = corpus_texts(folder, limit)
    reference_entities = ner.predict(ner_pair[0], texts)
    per_article = [[{(e.start, e.end, e.label) for e in ents} for ents in entities]
                   for entities in (reference_entities, ner.predict(ner_pair[1], texts))]
    reference, tested = (sum(len(found) for found in sets) for sets in per_article)
    same = sum(len(a & b) for a, b in zip(*per_article))
    entity_f1 = span_f1(*per_article)
    articles_same = sum(a == b for a, b in zip(*per_article))

    stance_texts = list(dict.fromkeys(stance.stance_text(text, q) for text, ents in zip(texts, reference_entities)
                                      for q in quotes.find_quotes(text, ents)))
    reference_scores = stance.predict(stance_pair[0], stance_texts)
    tested_scores = stance.predict(stance_pair[1], stance_texts)
    flips = Counter((a.label, b.label) for a, b in zip(reference_scores, tested_scores) if a.label != b.label)
    changed = sum(flips.values())
    label_agreement = 1 - changed / len(stance_texts) if stance_texts else 1.0
    score_change = (sum(abs(a.escalation_score - b.escalation_score) for a, b in zip(reference_scores, tested_scores))
                    / len(stance_texts) if stance_texts else 0.0)

    lines = [f"articles: {len(texts)} from {folder}",
             f"NER: {ner_pair[0].name} against {ner_pair[1].name}: {reference:,} / {tested:,} entities, "
             f"{same:,} the same (start, end, label); {articles_same} of {len(texts)} articles with identical entities",
             f"stance: {stance_pair[0].name} against {stance_pair[1].name}: {len(stance_texts):,} texts to classify, "
             f"{changed:,} labels changed; mean |escalation score change| {score_change:.4f}"]
    lines += [f"  {a} -> {b}: {n}" for (a, b), n in flips.most_common()]
    lines.append(f"ner_precision={ner_pair[1].precision} entity_f1_vs_fp32={entity_f1:.4f} "
                 f"stance_precision={stance_pair[1].precision} stance_label_agreement={label_agreement:.4f}")
    return "\n".join(lines)
