"""The output tables, defined once. Writers, the SQL views, the README table and the tests derive from here.

Each table is an Arrow schema; every field carries a ``description`` in its metadata.
Files are written hive-partitioned by ingest date: ``<output>/<table>/dt=YYYY-MM-DD/*.parquet``
(``dt`` is a path column, not stored in the files).
"""
from __future__ import annotations

import pyarrow as pa

PARTITION_COLUMN = "dt"
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _field(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


_ARTICLE_ID = _field("article_id", pa.string(), "Stable id of the article: first 16 hex digits of SHA-256 of `text`; the same text always gets the same id", False)
_INGESTED_AT = _field("ingested_at", UTC_TIMESTAMP, "When the pipeline read this article (UTC); ties the rows of one ingestion together", False)

ARTICLES = pa.schema([
    _ARTICLE_ID,
    _field("source_uri", pa.string(), "File (or file#line for JSONL, or message id) the article came from", False),
    _field("url", pa.string(), "Article URL, when the input gave one"),
    _field("title", pa.string(), "Headline, when the input gave one"),
    _field("source", pa.string(), "Publisher or feed name, when the input gave one"),
    _field("published_at", UTC_TIMESTAMP, "Publication time as given by the input, in UTC; null when absent or not a date"),
    _INGESTED_AT,
    _field("language", pa.string(), "Detected language, ISO 639-1 (e.g. en), und when the text is too short to tell; entities, quotes and stances are produced for en and und only"),
    _field("text", pa.string(), "The article text; every start_char/end_char in the other tables indexes it (Python str offsets). For .txt input it is exactly the decoded file", False),
    _field("ner_model", pa.string(), "NER model that produced `entities` (default@<checksum> or the model id/path)", False),
    _field("stance_model", pa.string(), "Stance model that produced `stances`", False),
    _field("pipeline_version", pa.string(), "Version of this pipeline package", False),
])

ENTITIES = pa.schema([
    _ARTICLE_ID,
    _field("start_char", pa.int32(), "Start offset of the mention in articles.text", False),
    _field("end_char", pa.int32(), "End offset (exclusive) of the mention in articles.text", False),
    _field("text", pa.string(), "The mention, equal to text[start_char:end_char]", False),
    _field("label", pa.string(), "Entity type: PER, ORG, LOC or MISC (CoNLL-2003)", False),
    _field("score", pa.float32(), "Model confidence: mean probability of the mention's word labels", False),
    _field("canonical", pa.string(), "Fullest form of this entity in the article ('Singh' -> 'Sabrina Singh')", False),
    _INGESTED_AT,
])

QUOTES = pa.schema([
    _ARTICLE_ID,
    _field("quote_id", pa.string(), "article_id + '-q' + n, n counting the article's quotes in text order from 0", False),
    _field("start_char", pa.int32(), "Start offset in articles.text of the words inside the quotation marks", False),
    _field("end_char", pa.int32(), "End offset (exclusive) of the quoted words", False),
    _field("text", pa.string(), "The quoted words, equal to text[start_char:end_char]", False),
    _field("speaker", pa.string(), "Who said it: canonical name of the person or organisation; null when no one can be named"),
    _field("speaker_label", pa.string(), "PER or ORG; null when the speaker is unknown"),
    _field("cue", pa.string(), "Attribution cue as written: said, told, added, according to, ':' ..."),
    _field("confidence", pa.float32(), "Confidence in the speaker attribution, 0..1 (0 when speaker is null)", False),
    _field("kind", pa.string(), "direct (inside quotation marks) or indirect (reported speech)", False),
    _INGESTED_AT,
])

STANCES = pa.schema([
    _ARTICLE_ID,
    _field("quote_id", pa.string(), "The quote this stance is for; null on the one article-level row per article"),
    _field("label", pa.string(), "escalatory, deescalatory or neutral (CAMEO conflict / cooperation / neither): the most probable", False),
    _field("p_escalatory", pa.float32(), "Calibrated probability of escalatory", False),
    _field("p_deescalatory", pa.float32(), "Calibrated probability of deescalatory", False),
    _field("p_neutral", pa.float32(), "Calibrated probability of neutral", False),
    _field("escalation_score", pa.float32(), "p_escalatory - p_deescalatory, in -1..1. Article row: length-weighted mean over its quotes, or the lead paragraph's when it has none", False),
    _INGESTED_AT,
])

ERRORS = pa.schema([
    _field("source_uri", pa.string(), "Input the failure belongs to (file, file#line, message id)", False),
    _field("article_id", pa.string(), "Article id when the text was read before the failure"),
    _field("stage", pa.string(), "Stage that failed: read, parse, ner, quotes, stance, write", False),
    _field("error", pa.string(), "Short error kind, e.g. empty, binary, decode, json, unsupported_format, model", False),
    _field("detail", pa.string(), "Human-readable explanation", False),
    _field("occurred_at", UTC_TIMESTAMP, "When the failure was recorded (UTC)", False),
])

TABLES: dict[str, pa.Schema] = {
    "articles": ARTICLES,
    "entities": ENTITIES,
    "quotes": QUOTES,
    "stances": STANCES,
    "errors": ERRORS,
}


def description(field: pa.Field) -> str:
    return (field.metadata or {}).get(b"description", b"").decode()


def markdown_table(name: str) -> str:
    """The column table the README shows for one table."""
    rows = [f"| {f.name} | {f.type} | {'' if f.nullable else 'not null'} | {description(f)} |" for f in TABLES[name]]
    return "\n".join(["| column | type | | description |", "|---|---|---|---|", *rows])
