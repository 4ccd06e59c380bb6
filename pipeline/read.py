"""Stage 1: read input files and parse them into Articles.

Pure functions (`parse_file`) turn one file's bytes into Articles and ErrorRecords. The Beam
transforms: `MatchInput` lists the files; `FindDuplicates` finds, from article ids alone, the
records that repeat an article; `ReadArticles` reads each file, skips those, and splits Articles
from ErrorRecords.
Nothing is lost: a record that cannot be parsed becomes an ErrorRecord, never an exception.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

import apache_beam as beam
import pycld2
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.records import Article

LOG = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".html", ".htm")
DEFAULT_MAX_ARTICLE_CHARS = 2_000_000  # larger texts become an errors row (see --max_article_chars)
ERRORS_TAG = "errors"
MIN_HTML_ARTICLE_WORDS = 10


@dataclass(frozen=True)
class ErrorRecord:
    source_uri: str
    stage: str
    error: str
    detail: str
    article_id: str | None = None
    occurred_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.occurred_at is None:
            object.__setattr__(self, "occurred_at", datetime.now(timezone.utc))


def article_id_of(text: str) -> str:
    """Derived from the content only, so the same article read twice gets the same id."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def input_pattern(path: str) -> str:
    """A file, a folder (every supported file below it) or a glob, local or on any Beam filesystem."""
    if any(ch in path for ch in "*?["):
        return path
    if path.endswith("/") or os.path.isdir(path):
        return path.rstrip("/") + "/**"
    if FileSystems.get_scheme(path) not in (None, "file") and not FileSystems.exists(path):
        return path + "/**"  # object stores have no folders: gs://bucket/news names the objects below it
    return path


def decode(data: bytes) -> str:
    """UTF-8 (BOM optional) or UTF-16/32 with a BOM. Raises ValueError with a reason otherwise."""
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(encoding)
    if b"\x00" in data[:4096]:
        raise ValueError("binary data (NUL bytes) in a text input")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 at byte {exc.start}: {exc.reason}") from None


def parse_timestamp(value: object) -> datetime | None:
    """ISO-8601 dates and times to UTC; None when absent or not a date (the article is still kept)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def make_article(source_uri: str, text: object, max_chars: int, *, language: bool = True,
                 **metadata: object) -> Article | ErrorRecord:
    """``language=False`` skips language id (the duplicate pass needs only the id); ``language`` is then ""."""
    if not isinstance(text, str):
        return ErrorRecord(source_uri, "parse", "bad_text", f"'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        return ErrorRecord(source_uri, "parse", "empty", "no text (empty or whitespace only)")
    if len(text) > max_chars:
        return ErrorRecord(source_uri, "parse", "too_large",
                           f"{len(text):,} characters is over the limit of {max_chars:,} (--max_article_chars)",
                           article_id_of(text))
    return Article(
        article_id=article_id_of(text), source_uri=source_uri, text=text,
        url=_optional_str(metadata.get("url")), title=_optional_str(metadata.get("title")),
        source=_optional_str(metadata.get("source")), published_at=parse_timestamp(metadata.get("published_at")),
        language=detect_language(text) if language else "", ingested_at=datetime.now(timezone.utc),
    )


# CLD2 refuses a text with C0/C1 control characters or lone surrogates as "invalid UTF-8"
# (two PolNeAR articles hold U+0083); they carry no language, so they become spaces.
_CLD2_REFUSES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# CLD2's codes that ISO 639-1 has since replaced
_CLD2_OLD_CODES = {"iw": "he", "jw": "jv", "in": "id", "ji": "yi", "mo": "ro"}
LANGUAGE_SAMPLE_CHARS = 2000


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language, or "und" when CLD2 cannot tell (a line or two, digits).

    CLD2 (pycld2) on the first LANGUAGE_SAMPLE_CHARS characters: its tables are compiled in, so
    there is no model to load, and an article takes about 0.2 ms."""
    sample = _CLD2_REFUSES.sub(" ", text[:LANGUAGE_SAMPLE_CHARS])
    try:
        _reliable, _bytes, languages = pycld2.detect(sample)
    except pycld2.error:  # not expected after the cleaning above; an article is never lost to it
        return "und"
    code = languages[0][1]
    if code == "un" or code.startswith("xx-"):  # unknown, or a script without a language ("xx-Copt")
        return "und"
    code = code.split("-")[0]  # "zh-Hant" -> "zh"
    return _CLD2_OLD_CODES.get(code, code)


def parse_file(uri: str, data: bytes, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS, *,
               language: bool = True) -> Iterator[Article | ErrorRecord]:
    """Every record of one input file, as an Article or an ErrorRecord."""
    extension = os.path.splitext(uri.lower())[1]
    if extension not in SUPPORTED_EXTENSIONS:
        yield ErrorRecord(uri, "read", "unsupported_format", f"extension {extension or '(none)'!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
        return
    try:
        text = decode(data)
    except ValueError as exc:
        yield ErrorRecord(uri, "read", "decode", str(exc))
        return
    if extension == ".txt":
        yield make_article(uri, text, max_chars, language=language)
    elif extension == ".jsonl":
        yield from parse_jsonl(uri, text, max_chars, language)
    else:
        yield parse_html(uri, text, max_chars, language)


def parse_jsonl(uri: str, text: str, max_chars: int, language: bool = True) -> Iterator[Article | ErrorRecord]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        source_uri = f"{uri}#{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield ErrorRecord(source_uri, "parse", "json", f"line {number} is not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(record, dict) or "text" not in record:
            yield ErrorRecord(source_uri, "parse", "no_text", f"line {number} has no 'text' field")
            continue
        yield make_article(source_uri, record["text"], max_chars, language=language,
                           **{k: record.get(k) for k in ("url", "title", "source", "published_at")})


def parse_html(uri: str, html: str, max_chars: int, language: bool = True) -> Article | ErrorRecord:
    import trafilatura

    try:
        document = trafilatura.bare_extraction(html, with_metadata=True, include_comments=False)
    except Exception as exc:  # trafilatura raises various lxml errors on hostile HTML
        return ErrorRecord(uri, "parse", "html", f"{type(exc).__name__}: {exc}")
    fields = document.as_dict() if hasattr(document, "as_dict") else (document or {})
    text = (fields or {}).get("text") or ""
    if len(text.split()) < MIN_HTML_ARTICLE_WORDS:  # what is left of a page without an article: menus, footers
        return ErrorRecord(uri, "parse", "empty", f"no article text found in the HTML (extracted {len(text.split())} words)")
    return make_article(uri, fields["text"], max_chars, language=language, url=fields.get("url"), title=fields.get("title"),
                        source=fields.get("sitename"), published_at=fields.get("date"))


def routed(record: Article | ErrorRecord):
    """An Article to the main output, an ErrorRecord to the ``errors`` output."""
    return beam.pvalue.TaggedOutput(ERRORS_TAG, record) if isinstance(record, ErrorRecord) else record


def parse_readable(uri: str, read_bytes: Callable[[], bytes], max_chars: int, *,
                   language: bool = True) -> Iterator[Article | ErrorRecord]:
    """Every record of one input, an unreadable input (permissions, vanished, ...) included."""
    try:
        data = read_bytes()
    except Exception as exc:
        yield ErrorRecord(uri, "read", "io", f"{type(exc).__name__}: {exc}")
        return
    yield from parse_file(uri, data, max_chars, language=language)


class MatchInput(beam.PTransform):
    """PATH (file, folder or glob, local or gs://...) -> the metadata of every file to read.

    The files are reshuffled so that a cloud runner spreads them (and the model work fused after
    the parse) over its workers; a single JSONL file is still read by one worker."""

    def __init__(self, path: str):
        super().__init__()
        self._pattern = input_pattern(path)

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "SkipHidden" >> beam.Filter(lambda m: not os.path.basename(m.path).startswith("."))
            | "SpreadFiles" >> beam.Reshuffle()
        )


class ArticleKeys(beam.DoFn):
    """ReadableFile -> (article_id, source_uri) of each article in it; texts are not kept."""

    def __init__(self, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        self._max_chars = max_chars

    def process(self, readable: fileio.ReadableFile) -> Iterator[tuple[str, str]]:
        for record in parse_readable(readable.metadata.path, readable.read, self._max_chars, language=False):
            if isinstance(record, Article):
                yield record.article_id, record.source_uri


def later_copies(keyed: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    """(article_id, its source_uris) -> (source_uri, article_id) of every copy but the first by source_uri."""
    article_id, sources = keyed
    sources = sorted(sources)
    if len(sources) > 1:
        LOG.info("article %s read %d times; keeping %s", article_id, len(sources), sources[0])
    for source_uri in sources[1:]:
        yield source_uri, article_id


class FindDuplicates(beam.PTransform):
    """Files -> (source_uri, article_id) of each record that repeats an article read elsewhere in
    the run: every copy but the one with the smallest source_uri.

    A pass of its own over the files that keeps only ids, so that the texts flow from the parse to
    the models without waiting: the local runner holds a GroupByKey's whole input in memory, and
    grouping the articles themselves made memory grow with the input (bench/RESULTS.md). It reads and
    parses each file twice, the first time without language id."""

    def __init__(self, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        super().__init__()
        self._max_chars = max_chars

    def expand(self, files):
        return (
            files
            | "ReadFiles" >> fileio.ReadMatches()
            | "ArticleKeys" >> beam.ParDo(ArticleKeys(self._max_chars))
            | "GroupById" >> beam.GroupByKey()
            | "LaterCopies" >> beam.FlatMap(later_copies)
        )


class ParseFiles(beam.DoFn):
    """ReadableFile -> Articles (main output) and ErrorRecords (``errors`` output), skipping the
    records that ``duplicates`` (source_uri -> article_id, a side input) names."""

    def __init__(self, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        self._max_chars = max_chars
        self.records = Metrics.counter("pipeline", "records")
        self.duplicates = Metrics.counter("pipeline", "duplicates")

    def process(self, readable: fileio.ReadableFile, duplicates: dict[str, str]) -> Iterable:
        for record in parse_readable(readable.metadata.path, readable.read, self._max_chars):
            self.records.inc()
            if isinstance(record, Article) and duplicates.get(record.source_uri) == record.article_id:
                self.duplicates.inc()
                continue
            yield routed(record)


class ReadArticles(beam.PTransform):
    """Files -> ``articles`` (each text once) and ``errors``; ``duplicates`` is FindDuplicates' output."""

    def __init__(self, duplicates, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        super().__init__()
        self._duplicates = duplicates
        self._max_chars = max_chars

    def expand(self, files):
        # The side input is read inside the parse, so the parse fuses with the stages after it and
        # articles stream on to the models (a Filter after the parse would split the stage there).
        outputs = (
            files
            | "ReadFiles" >> fileio.ReadMatches()
            | "Parse" >> beam.ParDo(ParseFiles(self._max_chars), beam.pvalue.AsDict(self._duplicates))
            .with_outputs(ERRORS_TAG, main="articles")
        )
        return {"articles": outputs.articles, "errors": outputs[ERRORS_TAG]}


def check_input(path: str) -> None:
    """Fail before building the graph when nothing matches, with a message a user understands."""
    pattern = input_pattern(path)
    matched = FileSystems.match([pattern])[0].metadata_list
    if not matched:
        raise FileNotFoundError(f"--input {path!r}: no files match {pattern!r}")


def failed_batch_errors(failure: tuple, stage: str) -> Iterator[ErrorRecord]:
    """RunInference's dead letters: (batch, exception) -> one ErrorRecord per element of the batch."""
    batch, exception = failure
    for element in batch if isinstance(batch, (list, tuple)) else [batch]:
        article = getattr(element, "article", element)
        yield ErrorRecord(getattr(article, "source_uri", "?"), stage, "model",
                          f"{type(exception).__name__}: {exception}", getattr(article, "article_id", None))
