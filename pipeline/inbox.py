"""Stage 1, streaming: watch an inbox folder and read each new file once it is complete.

A throttled ``Watch`` poll over the inbox (local or any Beam filesystem): it sleeps until its
interval has passed (Beam's MatchContinuously busy-polls on the local runner), reports files
whose size and modification time have settled, and completes when the stop file appears,
which drains the pipeline. Files are moved to ``<inbox>/done/`` by the writer once their rows
are durable: that folder is the ledger that makes a restart skip them.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable

import apache_beam as beam
from apache_beam import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.watch import PollFn, PollResult, Watch
from apache_beam.metrics import Metrics

from pipeline.read import DEFAULT_MAX_ARTICLE_CHARS, ERRORS_TAG, ErrorRecord, parse_readable, routed

LOG = logging.getLogger(__name__)

DONE_FOLDER = "done"
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".inprogress")
FIELD_SEPARATOR = "\t"  # a poll output is "path<TAB>size<TAB>mtime": a re-dropped file is new again


def is_candidate(path: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return bool(name) and not name.startswith(".") and not name.endswith(PARTIAL_SUFFIXES)


def done_path(inbox: str, path: str) -> str:
    return FileSystems.join(inbox.rstrip("/"), DONE_FOLDER, path.rstrip("/").rsplit("/", 1)[-1])


class InboxPoll(PollFn):
    """Lists the inbox's top-level files that have not changed for ``settle_secs``."""

    def __init__(self, poll_interval: float, settle_secs: float, stop_file: str):
        self._poll_interval = poll_interval
        self._settle_secs = settle_secs
        self._stop_file = stop_file
        self._last_poll = 0.0

    def __call__(self, inbox: str) -> PollResult:
        wait = self._last_poll + self._poll_interval - time.time()
        if wait > 0:
            time.sleep(wait)
        self._last_poll = time.time()
        stopping = os.path.exists(self._stop_file)
        outputs = []
        pattern = inbox.rstrip("/") + "/*"
        for metadata in FileSystems.match([pattern])[0].metadata_list:
            settled = time.time() - (metadata.last_updated_in_seconds or 0) >= self._settle_secs
            if is_candidate(metadata.path) and (settled or stopping):
                outputs.append(FIELD_SEPARATOR.join([metadata.path, str(metadata.size_in_bytes),
                                                     str(metadata.last_updated_in_seconds)]))
        if outputs:
            LOG.info("picked up %d file(s): %s", len(outputs), ", ".join(o.split(FIELD_SEPARATOR)[0] for o in outputs))
        return PollResult.complete(outputs) if stopping else PollResult.incomplete(outputs)

    def default_output_coder(self):
        return coders.StrUtf8Coder()


class ParsePaths(beam.DoFn):
    """A picked-up path -> Articles and ErrorRecords, as ParseFiles does for batch input."""

    def __init__(self, max_chars: int):
        self._max_chars = max_chars
        self.records = Metrics.counter("pipeline", "records")

    def process(self, element: tuple[str, str]) -> Iterable:
        path = element[1].split(FIELD_SEPARATOR)[0]

        def read_bytes() -> bytes:
            with FileSystems.open(path) as handle:
                return handle.read()

        for record in parse_readable(path, read_bytes, self._max_chars):
            self.records.inc()
            yield routed(record)


class WatchInbox(beam.PTransform):
    """Unbounded: every file that lands in ``inbox``, parsed; outputs ``articles`` and ``errors``."""

    def __init__(self, inbox: str, stop_file: str, poll_interval: float = 2.0, settle_secs: float = 1.0,
                 max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        super().__init__()
        self._inbox = inbox
        self._poll = InboxPoll(poll_interval, settle_secs, stop_file)
        self._poll_interval = poll_interval
        self._max_chars = max_chars

    def expand(self, pbegin):
        outputs = (
            pbegin
            | "Inbox" >> beam.Create([self._inbox])
            | "Poll" >> Watch(self._poll, poll_interval=self._poll_interval)
            | "Parse" >> beam.ParDo(ParsePaths(self._max_chars)).with_outputs(ERRORS_TAG, main="articles")
        )
        return {"articles": outputs.articles, "errors": outputs[ERRORS_TAG]}


# --- Pub/Sub: each message one article (JSON with "text", or plain text) --------------------

PUBSUB_SCHEME = "pubsub://"


def subscription_of(uri: str) -> str:
    """pubsub://projects/P/subscriptions/S -> projects/P/subscriptions/S (checked)."""
    path = uri[len(PUBSUB_SCHEME):]
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions" or not all(parts):
        raise ValueError(f"--input {uri!r}: expected pubsub://projects/PROJECT/subscriptions/SUBSCRIPTION")
    return path


def parse_message(source_uri: str, data: bytes, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
    """A Pub/Sub message body as one Article or ErrorRecord: a JSON object like a JSONL line, else text."""
    import json

    from pipeline.read import decode, make_article

    try:
        text = decode(data)
    except ValueError as exc:
        return ErrorRecord(source_uri, "read", "decode", str(exc))
    if text.lstrip().startswith("{"):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            return ErrorRecord(source_uri, "parse", "json", f"message is not valid JSON: {exc.msg} at column {exc.colno}")
        if not isinstance(record, dict) or "text" not in record:
            return ErrorRecord(source_uri, "parse", "no_text", "message has no 'text' field")
        return make_article(source_uri, record["text"], max_chars,
                            **{k: record.get(k) for k in ("url", "title", "source", "published_at")})
    return make_article(source_uri, text, max_chars)


class ParseMessages(beam.DoFn):
    def __init__(self, subscription: str, max_chars: int):
        self._subscription = subscription
        self._max_chars = max_chars
        self.records = Metrics.counter("pipeline", "records")

    def process(self, message) -> Iterable:
        self.records.inc()
        record = parse_message(f"{PUBSUB_SCHEME}{self._subscription}#{message.message_id}", message.data, self._max_chars)
        yield routed(record)


class ReadPubSubArticles(beam.PTransform):
    """Unbounded: each message of a subscription, parsed; outputs ``articles`` and ``errors``.
    Needs the [gcp] extra and a streaming runner (Dataflow with --streaming)."""

    def __init__(self, uri: str, max_chars: int = DEFAULT_MAX_ARTICLE_CHARS):
        super().__init__()
        self._subscription = subscription_of(uri)
        self._max_chars = max_chars

    def expand(self, pbegin):
        from apache_beam.io.gcp.pubsub import ReadFromPubSub

        outputs = (
            pbegin
            | "ReadMessages" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
            | "Parse" >> beam.ParDo(ParseMessages(self._subscription, self._max_chars)).with_outputs(ERRORS_TAG, main="articles")
        )
        return {"articles": outputs.articles, "errors": outputs[ERRORS_TAG]}
