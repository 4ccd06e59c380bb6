"""Nothing lost: hostile inputs, model failures and kills (the pipeline end to end)."""
import codecs
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SEED

pytestmark = pytest.mark.slow

SUMMARY = re.compile(r"records=(\d+) articles=(\d+) errors=(\d+) duplicates=(\d+)")


HUGE_COPIES = 290  # a 1 MB article: the seed 290 times


def write_hostile_corpus(folder: Path) -> int:
    """Writes one file per hostile case; returns the number of input records (files + JSONL lines)."""
    seed = SEED.read_text()
    files = {
        "empty.txt": b"",
        "blank.txt": b" \n\t\n  ",
        "image.txt": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
        "archive.txt": b"\x1f\x8b\x08\x00" + bytes(200),
        "latin1.txt": "Le ministre a déclaré « non ».".encode("latin-1"),
        "utf16.txt": codecs.BOM_UTF16_LE + '"We are ready for talks," the envoy said in Geneva.'.encode("utf-16-le"),
        "huge.txt": ((seed + "\n\n") * HUGE_COPIES).encode(),
        "one_sentence.txt": ("word " * 100_000).encode(),
        "no_article.html": b"<html><body><nav>Home | World</nav><footer>(c)</footer></body></html>",
        "german.txt": "Der Sprecher sagte: \"Wir lehnen jede Verhandlung ab.\" Die Regierung in Berlin schwieg dazu.".encode(),
        "unbalanced.txt": b'He said "we will respond and then \xe2\x80\x9cnothing more. The end" " "',
        "control.txt": "Putin\u200b said \u202e\"we\u200d will\u0007 strike\u202c\" \x0b in\u2066 Moscow\u2069.".encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    lines = [json.dumps({"text": "The envoy said talks would continue.", "published_at": "not a date"}),
             "{broken", json.dumps({"title": "no text"}), json.dumps({"text": ["not", "a", "string"]}),
             json.dumps({"text": seed})]
    (folder / "feed.jsonl").write_text("\n".join(lines) + "\n")
    return len(files) + len(lines)


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_hostile_record_is_accounted_for(tmp_path):
    from pipeline.query import connect

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    records = write_hostile_corpus(inbox)
    result = run_cli("run", "--input", str(inbox), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    n, articles, errors, duplicates = map(int, SUMMARY.search(result.stdout + result.stderr).groups())
    assert n == records and articles + errors + duplicates == records
    con = connect(str(out))
    by_uri = dict(con.execute("SELECT regexp_extract(source_uri, '[^/]+$'), error FROM errors").fetchall())
    assert by_uri == {"empty.txt": "empty", "blank.txt": "empty", "image.txt": "decode", "archive.txt": "decode",
                      "latin1.txt": "decode", "no_article.html": "empty", "feed.jsonl#2": "json",
                      "feed.jsonl#3": "no_text", "feed.jsonl#4": "bad_text"}
    languages = dict(con.execute("SELECT regexp_extract(source_uri, '[^/]+$'), language FROM articles").fetchall())
    assert languages["german.txt"] == "de" and languages["utf16.txt"] == "en"
    german = "(SELECT article_id FROM articles WHERE source_uri LIKE '%german.txt')"
    assert con.execute(f"SELECT count(*) FROM entities WHERE article_id IN {german}").fetchone()[0] == 0
    assert con.execute(f"SELECT count(*) FROM stances WHERE article_id IN {german}").fetchone()[0] == 0
    huge_quotes = con.execute("SELECT count(*) FROM quotes q JOIN articles a USING (article_id) "
                              "WHERE a.source_uri LIKE '%huge.txt' AND q.kind = 'direct'").fetchone()[0]
    assert huge_quotes == 13 * HUGE_COPIES
    for table in ("entities", "quotes"):
        bad = con.execute(f"SELECT count(*) FROM {table} t JOIN articles a USING (article_id) "
                          "WHERE substring(a.text, t.start_char + 1, t.end_char - t.start_char) <> t.text").fetchone()[0]
        assert bad == 0


def test_a_failing_model_batch_goes_to_errors_and_the_run_goes_on(tmp_path, monkeypatch):
    from pipeline.ner import NerModelHandler
    from pipeline.query import connect
    from pipeline.run import run

    original = NerModelHandler.run_inference

    def explode_on_marker(self, batch, model, inference_args=None):
        if any("EXPLODE" in a.text for a in batch):
            raise RuntimeError("simulated model failure")
        return original(self, batch, model, inference_args)

    monkeypatch.setattr(NerModelHandler, "run_inference", explode_on_marker)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "good.txt").write_text(SEED.read_text())
    (inbox / "bad.txt").write_text('EXPLODE: "We will retaliate," the general said.')
    counts = run(["--input", str(inbox), "--output", str(tmp_path / "out"), "--inference_batch_size", "1"])
    assert counts["articles"] == 1 and counts["errors"] == 1
    [(stage, error, detail)] = connect(str(tmp_path / "out")).execute("SELECT stage, error, detail FROM errors").fetchall()
    assert (stage, error) == ("ner", "model") and "simulated model failure" in detail


def test_sigkill_leaves_no_partial_files_and_a_rerun_completes(tmp_path):
    from pipeline.query import connect

    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    seed = SEED.read_text()
    for i in range(40):
        (inbox / f"a{i:02d}.txt").write_text(f"Dispatch {i}.\n{seed}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pipeline", "run", "--input", str(inbox), "--output", str(out), "--inference_batch_size", "4"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.rglob("*.parquet*")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for path in out.rglob("*.parquet"):
        pq.read_metadata(path)  # every file a reader's glob can see is whole
    assert run_cli("run", "--input", str(inbox), "--output", str(out)).returncode == 0
    con = connect(str(out))
    assert con.execute("SELECT count(*), count(DISTINCT article_id) FROM articles").fetchone() == (40, 40)
    assert con.execute("SELECT count(*) FROM quotes WHERE kind = 'direct'").fetchone()[0] == 40 * 13
