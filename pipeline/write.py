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
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from schemas import PARTITION_COLUMN, TABLES

LOG = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED_ROWS = 5_000
TEMP_SUFFIX = ".inprogress"
COMMIT_TABLE = "articles"  # written after the rows that belong to it
PARTITION_TIME = {name: ("occurred_at" if name == "errors" else "ingested_at") for name in TABLES}


def partition_of(table: str, row: dict) -> str:
    moment = row.get(PARTITION_TIME[table]) or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d")


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


class WriteParquetFn(beam.DoFn):
    def __init__(self, output: str, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS):
        self._output = output
        self._max_buffered_rows = max_buffered_rows
        self._buffers: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self.counters = {name: Metrics.counter("rows", name) for name in TABLES}
        self.files = Metrics.counter("pipeline", "parquet_files")

    def start_bundle(self) -> None:
        self._buffers = defaultdict(list)

    def process(self, element: tuple[str, dict]) -> None:
        table, row = element
        key = (table, partition_of(table, row))
        self._buffers[key].append(row)
        if len(self._buffers[key]) >= self._max_buffered_rows:
            if table == COMMIT_TABLE:
                self._flush_all()
            else:
                self._flush(key)

    def finish_bundle(self) -> None:
        self._flush_all()

    def _flush_all(self) -> None:
        # an article's own rows first, its articles row last: the views show an article only
        # through its articles row, so a run killed in between leaves nothing half-visible
        for key in sorted(self._buffers, key=lambda k: k[0] == COMMIT_TABLE):
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        rows = self._buffers.pop(key, [])
        if not rows:
            return
        table, dt = key
        path = write_parquet_atomically(self._output, table, dt, rows)
        self.counters[table].inc(len(rows))
        self.files.inc()
        LOG.info("wrote %d %s rows to %s", len(rows), table, path)


class WriteTables(beam.PTransform):
    """(table, row) pairs -> output/<table>/dt=YYYY-MM-DD/part-*.parquet."""

    def __init__(self, output: str, max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS):
        super().__init__()
        self._output = output
        self._max_buffered_rows = max_buffered_rows

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.ParDo(WriteParquetFn(self._output, self._max_buffered_rows))
