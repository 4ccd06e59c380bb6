"""Stage: write (table, row) pairs as hive-partitioned Parquet, atomically.

A DoFn sink with no GroupByKey: rows are buffered per table and ingest date within a bundle and
written in ``finish_bundle`` (or when a buffer is full), one file per table per partition.
Each file is written under a temporary name that no reader's glob matches (``*.parquet.inprogress``)
and then renamed, so a reader never sees a half-written file, on local disk or any Beam
filesystem (gs://, s3://). Works the same in batch and streaming, on every runner.
"""
from __future__ import annotations

import io
import logging
import os
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.inbox import done_path
from schemas import PARTITION_COLUMN, TABLES

LOG = logging.getLogger(__name__)

# Rows held in memory before the buffers are written (all tables together, about 70 articles of
# news): a batch run's single big bundle must not keep every article's rows until it ends.
DEFAULT_MAX_BUFFERED_ROWS = 5_000
TEMP_SUFFIX = ".inprogress"
WINDOW_GRACE_SECS = 10  # a window is compacted this long after it ends
FORGET_WINDOW_AFTER_SECS = 600  # a closed window that got no rows for this long is no longer tracked
COMMIT_TABLE = "articles"  # written after the rows that belong to it
PARTITION_TIME = {name: ("occurred_at" if name == "errors" else "ingested_at") for name in TABLES}


def partition_of(table: str, row: dict) -> str:
    moment = row.get(PARTITION_TIME[table]) or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).date().isoformat()  # 0.46 us a row, strftime 2.43 (bench/RESULTS.md "The garbage collector")


def table_folder(output: str, table: str, dt: str) -> str:
    return FileSystems.join(output, table, f"{PARTITION_COLUMN}={dt}")


def write_parquet_atomically(output: str, table: str, dt: str, rows: list[dict]) -> str:
    """Write one Parquet file of `rows` under output/table/dt=.../ and return its path."""
    arrow_table = pa.Table.from_pylist(rows, schema=TABLES[table])
    buffer = io.BytesIO()
    pq.write_table(arrow_table, buffer, compression="zstd")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    final = FileSystems.join(table_folder(output, table, dt), f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet")
    temporary = final + TEMP_SUFFIX
    with FileSystems.create(temporary) as handle:
        handle.write(buffer.getvalue())
    FileSystems.rename([temporary], [final])
    return final


def window_of(table: str, row: dict, window_secs: int | None) -> int:
    """Start (epoch seconds) of the ingest-time window of a row; 0 when not windowing (batch)."""
    if not window_secs:
        return 0
    moment = row.get(PARTITION_TIME[table]) or datetime.now(timezone.utc)
    return int(moment.timestamp()) // window_secs * window_secs


def source_file(source_uri: str) -> str:
    """The input file a row came from ("feed.jsonl#3" -> "feed.jsonl")."""
    return source_uri.split("#", 1)[0]


def compact(output: str, table: str, dt: str, paths: list[str]) -> str:
    """Merge one window's files into one. The merged file appears before the parts disappear;
    the views drop exact duplicate rows, so a reader in between sees each row once."""
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(io.BytesIO(handle.read()), schema=TABLES[table]))
    merged = write_parquet_atomically(output, table, dt, pa.concat_tables(tables).to_pylist())
    FileSystems.delete(paths)
    return merged


_WINDOW_STATE: dict[str, tuple[dict, dict]] = {}  # sink id -> (window files, window last-write times)


class WriteParquetFn(beam.DoFn):
    """Batch: one file per table per bundle. Streaming (``window_secs``): the same, so rows are
    queryable within seconds, then each closed ingest-time window is compacted into one file per
    table; with ``inbox``, input files are moved to ``inbox/done/`` once their rows are durable."""

    def __init__(self, output: str, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS, window_secs: int | None = None,
                 inbox: str | None = None, stop_file: str | None = None):
        self._output = output
        self._max_buffered_rows = max_buffered_rows
        self._window_secs = window_secs
        self._inbox = inbox
        self._stop_file = stop_file
        self._buffers: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
        self._window_files: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        self._window_written: dict[tuple[str, str, int], float] = {}  # wall time of the window's last write
        self._sink_id = uuid.uuid4().hex
        self._sources: set[str] = set()
        self.counters = {name: Metrics.counter("rows", name) for name in TABLES}
        self.files = Metrics.counter("pipeline", "parquet_files")

    def setup(self) -> None:
        # per worker process, not per DoFn instance: some runners (the DirectRunner with TestStream)
        # make a new instance for every bundle, and a window's files must still be found later
        self._window_files, self._window_written = _WINDOW_STATE.setdefault(self._sink_id, (defaultdict(list), {}))

    def start_bundle(self) -> None:
        self._buffers = defaultdict(list)
        self._sources = set()

    def process(self, element: tuple[str, dict]) -> None:
        table, row = element
        if table == COMMIT_TABLE and sum(map(len, self._buffers.values())) >= self._max_buffered_rows:
            self._flush_all()  # an article's rows follow its articles row: the ones before are whole
        key = (table, partition_of(table, row), window_of(table, row, self._window_secs))
        self._buffers[key].append(row)
        if self._inbox and row.get("source_uri"):
            self._sources.add(source_file(row["source_uri"]))
        if table != COMMIT_TABLE and len(self._buffers[key]) >= self._max_buffered_rows:
            self._flush(key)  # one huge article, or an errors-only sink; never an articles row early

    def finish_bundle(self) -> None:
        self._flush_all()
        if self._inbox:
            self._move_to_done()
        if self._window_secs:
            self._compact_closed_windows()

    def _flush_all(self) -> None:
        # an article's own rows first, its articles row last: the views show an article only
        # through its articles row, so a run killed in between leaves nothing half-visible
        for key in sorted(self._buffers, key=lambda k: k[0] == COMMIT_TABLE):
            self._flush(key)

    def _flush(self, key: tuple[str, str, int]) -> None:
        rows = self._buffers.pop(key, [])
        if not rows:
            return
        table, dt, _ = key
        path = write_parquet_atomically(self._output, table, dt, rows)
        self.counters[table].inc(len(rows))
        self.files.inc()
        if self._window_secs:
            self._window_files[key].append(path)
            self._window_written[key] = time.time()
        LOG.info("wrote %d %s rows to %s", len(rows), table, path)

    def _move_to_done(self) -> None:
        for path in sorted(self._sources):
            try:
                target = done_path(self._inbox, path)
                parent = target.rsplit("/", 1)[0]
                if not FileSystems.exists(parent):
                    FileSystems.mkdirs(parent)
                FileSystems.rename([path], [target])
            except Exception as exc:  # already moved, or removed by the user: the views dedupe a reprocessed file
                LOG.warning("could not move %s to done/: %s", path, exc)
        self._sources = set()

    def _compact_closed_windows(self) -> None:
        draining = bool(self._stop_file) and os.path.exists(self._stop_file)  # a local watch's stop request
        now = time.time()
        for key, paths in list(self._window_files.items()):
            table, dt, start = key
            # rows carry the time they were read, so a window still gets rows for a few seconds after it ends
            closed = draining or now >= start + self._window_secs + WINDOW_GRACE_SECS
            if closed and len(paths) > 1:
                merged = compact(self._output, table, dt, paths)
                self._window_files[key] = [merged]
                LOG.info("compacted %d %s files of window %s into %s", len(paths), table,
                         datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), merged)
            if closed and now - self._window_written[key] > FORGET_WINDOW_AFTER_SECS:
                del self._window_files[key], self._window_written[key]


class WriteTables(beam.PTransform):
    """(table, row) pairs -> output/<table>/dt=YYYY-MM-DD/part-*.parquet."""

    def __init__(self, output: str, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS, window_secs: int | None = None,
                 inbox: str | None = None, stop_file: str | None = None):
        super().__init__()
        self._sink = WriteParquetFn(output, max_buffered_rows, window_secs, inbox, stop_file)

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.ParDo(self._sink)
