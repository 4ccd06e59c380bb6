"""Streaming: `watch` delivers rows while it runs, drains on a signal, and restarts without duplicates."""
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import ROOT, SEED

pytestmark = pytest.mark.slow


def test_windowed_writer_on_a_test_stream(tmp_path):
    """Rows of three ingest-time windows, arriving over several bundles: after the windows close,
    one file per table per window, holding exactly that window's rows."""
    import apache_beam as beam
    import pyarrow.dataset as ds
    from apache_beam.testing.test_stream import TestStream

    from pipeline.write import WriteTables

    base = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def error_row(i: int, seconds: int) -> tuple[str, dict]:
        return "errors", {"source_uri": f"in/{i}.txt", "article_id": None, "stage": "read", "error": "empty",
                          "detail": "no text", "occurred_at": base + timedelta(seconds=seconds)}

    stream = (TestStream()
              .add_elements([error_row(0, 1), error_row(1, 5)])
              .advance_processing_time(10).add_elements([error_row(2, 8)])
              .advance_processing_time(10).add_elements([error_row(3, 12), error_row(4, 25)])
              .advance_processing_time(10).add_elements([error_row(5, 27)])
              .advance_watermark_to_infinity())
    out = tmp_path / "out"
    with beam.Pipeline() as p:
        p | stream | WriteTables(str(out), window_secs=10)
    files = sorted((out / "errors").rglob("*.parquet"))
    windows = []
    for path in files:
        table = ds.dataset(path).to_table()
        seconds = sorted((t - base).total_seconds() for t in table.column("occurred_at").to_pylist())
        windows.append(seconds)
    assert sorted(windows) == [[1, 5, 8], [12], [25, 27]]


def start_watch(inbox: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "watch", "--input", str(inbox), "--output", str(out),
                             "--poll_interval", "1", "--window_secs", "5"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count(out: Path, sql: str) -> int:
    from pipeline.query import connect

    try:
        return connect(str(out)).execute(sql).fetchone()[0]
    except Exception:  # no files yet
        return 0


def wait_for(predicate, timeout: float) -> float:
    started = time.time()
    while time.time() - started < timeout:
        if predicate():
            return time.time() - started
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s")


def drop(inbox: Path, name: str, text: str) -> None:
    """Write under a temporary name, then rename in: the way a feed should deliver files."""
    temporary = inbox / f".{name}.tmp"
    temporary.write_text(text)
    temporary.rename(inbox / name)


def test_watch_streams_drains_and_restarts_without_duplicates(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    seed = SEED.read_text()
    process = start_watch(inbox, out)
    try:
        latencies = []
        for i in range(3):
            drop(inbox, f"a{i}.txt", f"Bulletin {i}.\n{seed}")
            latencies.append(wait_for(lambda: count(out, "SELECT count(*) FROM articles") == i + 1, 120))
            assert process.poll() is None  # still running while its rows are queryable
        assert max(latencies[1:]) < 60
        drop(inbox, "late.txt", "Bulletin late.\n" + seed)
        process.send_signal(signal.SIGINT)
        log, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, log[-3000:]
    assert "records=4 articles=4" in log  # the file dropped just before the signal was drained too
    assert count(out, "SELECT count(*) FROM quotes WHERE kind = 'direct'") == 4 * 13
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a0.txt", "a1.txt", "a2.txt", "late.txt"]
    assert not list(out.rglob("*.inprogress"))

    # restart: the ledger (done/) keeps old files out; a re-sent article is hidden by the views
    drop(inbox, "again.txt", "Bulletin 0.\n" + seed)
    process = start_watch(inbox, out)
    try:
        wait_for(lambda: not (inbox / "again.txt").exists(), 120)
        process.send_signal(signal.SIGTERM)
        log, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "records=1 articles=1" in log
    assert count(out, "SELECT count(*) FROM articles") == 4
    assert count(out, "SELECT count(*) FROM quotes WHERE kind = 'direct'") == 4 * 13
