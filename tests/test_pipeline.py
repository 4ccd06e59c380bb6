"""The real pipeline on the DirectRunner's in-process engine over the seed and small fixtures,
read back with DuckDB. Measures on the seed against tests/seed_gold.json."""
import logging
import re
import shutil
from pathlib import Path

import pytest

from conftest import SEED

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).parent / "fixtures"


def same_speaker(predicted: str | None, gold: str) -> bool:
    def norm(name: str) -> str:
        name = name.lower().strip()
        return name[4:] if name.startswith("the ") else name

    return predicted is not None and norm(predicted) == norm(gold)


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    from pipeline.run import run

    inbox = tmp_path_factory.mktemp("inbox")
    shutil.copy(SEED, inbox / SEED.name)
    for fixture in (f for f in FIXTURES.iterdir() if f.is_file()):
        shutil.copy(fixture, inbox / fixture.name)
    out = tmp_path_factory.mktemp("out")
    counts = run(["--input", str(inbox), "--output", str(out)])
    return out, counts


@pytest.fixture(scope="module")
def con(output):
    from pipeline.query import connect

    return connect(str(output[0]))


def rows(con, sql):
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def test_every_record_is_accounted_for(output, con):
    _, counts = output
    # seed.txt, kremlin.html, corrupt.txt, feed.jsonl x4 lines
    assert counts["records"] == 7
    assert counts["duplicates"] == 1  # the seed again inside feed.jsonl
    assert counts["articles"] == 3 and counts["errors"] == 3
    errors = {(r["stage"], r["error"]) for r in rows(con, "SELECT * FROM errors")}
    assert errors == {("read", "decode"), ("parse", "json"), ("parse", "no_text")}
    assert rows(con, "SELECT count(DISTINCT article_id) n FROM articles")[0]["n"] == 3


def test_layout_is_hive_partitioned_parquet(output):
    out, _ = output
    for table in ("articles", "entities", "quotes", "stances", "errors"):
        files = list((out / table).glob("dt=*/part-*.parquet"))
        assert files, table
    assert not list(out.rglob("*.inprogress"))


def test_offsets_index_the_article_text(con):
    for table in ("entities", "quotes"):
        mismatched = rows(con, f"""
            SELECT t.* FROM {table} t JOIN articles a USING (article_id)
            WHERE substring(a.text, t.start_char + 1, t.end_char - t.start_char) <> t.text""")
        assert mismatched == [], table


def test_seed_txt_text_is_the_file(con, seed_text):
    [article] = rows(con, f"SELECT * FROM articles WHERE source_uri LIKE '%{SEED.name}'")
    assert article["text"] == seed_text
    assert article["ner_model"].startswith("default@") and article["language"] == "en"


def test_seed_quotes_and_speakers(con, seed_text, seed_gold):
    found = {(r["start_char"], r["end_char"]): r for r in rows(con, """
        SELECT q.* FROM quotes q JOIN articles a USING (article_id) WHERE a.text LIKE 'The Pentagon believes%'""")}
    gold = seed_gold["quotes"]
    spans = [(g["start"], g["end"]) for g in gold]
    assert [s for s in spans if s not in found] == []
    right = sum(same_speaker(found[(g["start"], g["end"])]["speaker"], g["speaker"]) for g in gold)
    assert right >= 12, f"speaker right for {right}/13"


def test_seed_reported_speech_rows(con):
    indirect = rows(con, """
        SELECT q.speaker, q.cue, q.text, s.label FROM quotes q JOIN stances s USING (quote_id)
        JOIN articles a ON a.article_id = q.article_id
        WHERE a.text LIKE 'The Pentagon believes%' AND q.kind = 'indirect' ORDER BY q.start_char""")
    assert [(r["speaker"], r["cue"]) for r in indirect] == [
        ("Pentagon", "believes"), ("Pentagon", "said"), ("Sabrina Singh", "said")]
    assert indirect[2]["text"].startswith("that these troops would nevertheless be regarded as co-belligerents")


def test_seed_people_have_their_full_names(con, seed_gold):
    canonical = {r["canonical"] for r in rows(con, """
        SELECT e.canonical FROM entities e JOIN articles a USING (article_id)
        WHERE a.text LIKE 'The Pentagon believes%' AND e.label = 'PER'""")}
    assert set(seed_gold["entities"]["PER"]) <= canonical


def test_seed_stances(con, seed_gold):
    predicted = {(r["start_char"], r["end_char"]): r["label"] for r in rows(con, """
        SELECT q.start_char, q.end_char, s.label FROM quotes q JOIN stances s USING (quote_id)
        JOIN articles a ON a.article_id = q.article_id WHERE a.text LIKE 'The Pentagon believes%'""")}
    agree = sum(predicted.get((g["start"], g["end"])) in g["stance"] for g in seed_gold["quotes"])
    assert agree >= 11, f"stance agrees for {agree}/13"


def test_one_article_level_stance_row_per_article(con):
    counts = rows(con, """SELECT a.article_id, count(s.article_id) n FROM articles a
                          LEFT JOIN stances s ON s.article_id = a.article_id AND s.quote_id IS NULL GROUP BY 1""")
    assert [c["n"] for c in counts] == [1, 1, 1]
    bad = rows(con, "SELECT * FROM stances WHERE abs(escalation_score - (p_escalatory - p_deescalatory)) > 1e-5 "
                    "OR abs(p_escalatory + p_deescalatory + p_neutral - 1) > 1e-4")
    assert bad == []


def test_fixture_quotes_and_metadata(con):
    wire = rows(con, "SELECT * FROM articles WHERE title = 'Ceasefire talks resume'")[0]
    assert wire["url"] == "https://example.org/wire-1" and wire["source"] == "Example Wire"
    assert str(wire["published_at"]).startswith("2024-11-22 08:30:00")
    speakers = rows(con, f"SELECT speaker, text FROM quotes WHERE article_id = '{wire['article_id']}' AND kind = 'direct' ORDER BY start_char")
    assert [s["speaker"] for s in speakers] == ["Ahmed Al-Khulaifi", "Benjamin Netanyahu"]
    html = rows(con, "SELECT q.speaker FROM quotes q JOIN articles a USING (article_id) WHERE a.source_uri LIKE '%kremlin.html' AND q.kind = 'direct' ORDER BY q.start_char")
    assert [h["speaker"] for h in html] == ["Dmitry Peskov", "Mark Rutte"]


def test_rerun_into_the_same_output_shows_each_article_once(output, tmp_path):
    from pipeline.query import connect
    from pipeline.run import run

    out, _ = output
    inbox = tmp_path / "again"
    inbox.mkdir()
    shutil.copy(SEED, inbox / "seed-again.txt")
    run(["--input", str(inbox), "--output", str(out)])
    con = connect(str(out))
    assert rows(con, "SELECT count(*) n FROM articles")[0]["n"] == 3
    assert rows(con, "SELECT count(*) n FROM quotes q JOIN articles a USING (article_id) WHERE a.text LIKE 'The Pentagon%' AND kind = 'direct'")[0]["n"] == 13


def test_direct_quotes_only_leaves_out_reported_speech(tmp_path, caplog):
    from pipeline.models import resolve_precision
    from pipeline.query import connect
    from pipeline.run import run

    inbox = tmp_path / "in"
    inbox.mkdir()
    shutil.copy(SEED, inbox / SEED.name)
    with caplog.at_level(logging.INFO, logger="pipeline.run"):
        counts = run(["--input", str(inbox), "--output", str(tmp_path / "out"), "--direct_quotes_only"])
    assert counts["quotes"] == 13
    # the start-up line says what the models run in and on which malloc
    started = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("models: "))
    assert f"NER in {resolve_precision('ner', None)}, stance in {resolve_precision('stance', None)}; malloc: " in started
    # and the last line how long the run took, at what rate, and what it wrote
    done = caplog.records[-1].getMessage()
    assert re.fullmatch(r"done in \d+\.\d s, \d+\.\d\d articles/s: records=1 articles=1 errors=0 duplicates=0 quotes=13 .*", done), done
    assert rows(connect(str(tmp_path / "out")), "SELECT DISTINCT kind FROM quotes") == [{"kind": "direct"}]


def test_bad_input_path_fails_clearly(tmp_path):
    from pipeline.cli import main

    assert main(["run", "--input", str(tmp_path / "nothing-here"), "--output", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("flag", ["--inference_batch_size", "--stance_batch_size"])
def test_a_batch_size_below_one_fails_clearly(tmp_path, flag, capsys):
    from pipeline.cli import main

    assert main(["run", "--input", str(SEED), "--output", str(tmp_path / "o"), flag, "0"]) == 2
    assert f"{flag} must be at least 1" in capsys.readouterr().err
