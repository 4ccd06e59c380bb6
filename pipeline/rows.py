"""Stage: analysed articles and errors -> (table, row) pairs, one row dict per schemas/ row."""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam

import pipeline
from pipeline.progress import process_progress
from pipeline.read import ErrorRecord
from pipeline.records import AnalysedArticle, StanceScores

Row = tuple[str, dict]


def quote_id(article_id: str, index: int) -> str:
    return f"{article_id}-q{index}"


def _stance_row(article_id: str, qid: str | None, scores: StanceScores, ingested_at) -> dict:
    return {
        "article_id": article_id, "quote_id": qid, "label": scores.label, "p_escalatory": scores.p_escalatory,
        "p_deescalatory": scores.p_deescalatory, "p_neutral": scores.p_neutral,
        "escalation_score": scores.escalation_score, "ingested_at": ingested_at,
    }


def article_rows(item: AnalysedArticle) -> Iterator[Row]:
    a = item.article
    yield "articles", {
        "article_id": a.article_id, "source_uri": a.source_uri, "url": a.url, "title": a.title, "source": a.source,
        "published_at": a.published_at, "ingested_at": a.ingested_at, "language": a.language, "text": a.text,
        "ner_model": item.ner_model, "stance_model": item.stance_model, "pipeline_version": pipeline.__version__,
    }
    for e in item.entities:
        yield "entities", {
            "article_id": a.article_id, "start_char": e.start, "end_char": e.end, "text": e.text, "label": e.label,
            "score": e.score, "canonical": e.canonical or e.text, "ingested_at": a.ingested_at,
        }
    for index, q in enumerate(item.quotes):
        yield "quotes", {
            "article_id": a.article_id, "quote_id": quote_id(a.article_id, index), "start_char": q.start, "end_char": q.end,
            "text": q.text, "speaker": q.speaker, "speaker_label": q.speaker_label, "cue": q.cue,
            "confidence": q.confidence, "kind": q.kind, "ingested_at": a.ingested_at,
        }
    for index, scores in enumerate(item.quote_stances):
        yield "stances", _stance_row(a.article_id, quote_id(a.article_id, index), scores, a.ingested_at)
    if item.article_stance is not None:
        yield "stances", _stance_row(a.article_id, None, item.article_stance, a.ingested_at)


def error_row(error: ErrorRecord) -> Row:
    return "errors", {
        "source_uri": error.source_uri, "article_id": error.article_id, "stage": error.stage, "error": error.error,
        "detail": error.detail[:10_000], "occurred_at": error.occurred_at,
    }


class _ArticleRowsFn(beam.DoFn):
    """article_rows, counting each article for the worker's progress line (pipeline.progress)."""

    def __init__(self, report_progress: bool) -> None:
        self._report_progress = report_progress

    def setup(self) -> None:
        self._progress = process_progress() if self._report_progress else None

    def process(self, item: AnalysedArticle) -> Iterator[Row]:
        yield from article_rows(item)
        if self._progress is not None:
            self._progress.written()


class ToRows(beam.PTransform):
    """AnalysedArticles -> (table, row). ``report_progress``: count them for the progress lines
    that local runs log every 30 s (pipeline.progress)."""

    def __init__(self, report_progress: bool = False) -> None:
        super().__init__()
        self._report_progress = report_progress

    def expand(self, analysed):
        return analysed | "ArticleRows" >> beam.ParDo(_ArticleRowsFn(self._report_progress))


class ErrorRows(beam.PTransform):
    def expand(self, errors):
        return errors | "ErrorRows" >> beam.Map(error_row)
