import codecs
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline.ner import is_english
from pipeline.read import (Article, ErrorRecord, article_id_of, decode, detect_language, input_pattern,
                           later_copies, parse_file, parse_timestamp)


def outcomes(uri, data: bytes):
    return list(parse_file(uri, data))


def test_txt_text_is_the_decoded_file_exactly():
    text = "“Quote,” she said.\r\nSecond line — é\n"
    [article] = outcomes("a.txt", text.encode())
    assert isinstance(article, Article)
    assert article.text == text
    assert article.article_id == article_id_of(text)
    assert article.language == "en"


def test_same_text_same_id_different_text_different_id():
    assert article_id_of("abc") == article_id_of("abc")
    assert article_id_of("abc") != article_id_of("abd")


def test_jsonl_good_and_bad_lines_each_get_an_outcome():
    lines = [
        json.dumps({"text": "The minister said the talks would resume.", "id": "1", "url": "https://x/1",
                    "title": "Talks", "published_at": "2024-11-21T10:00:00Z", "source": "Wire"}),
        "{broken json",
        json.dumps({"title": "no text"}),
        json.dumps({"text": 42}),
        json.dumps({"text": "A second article about the ceasefire.", "published_at": "yesterday-ish"}),
        "",
    ]
    results = outcomes("feed.jsonl", "\n".join(lines).encode())
    assert [type(r).__name__ for r in results] == ["Article", "ErrorRecord", "ErrorRecord", "ErrorRecord", "Article"]
    first, broken, no_text, not_string, bad_date = results
    assert first.url == "https://x/1" and first.title == "Talks" and first.source == "Wire"
    assert first.published_at == datetime(2024, 11, 21, 10, tzinfo=timezone.utc)
    assert first.source_uri == "feed.jsonl#1"
    assert (broken.error, broken.source_uri) == ("json", "feed.jsonl#2")
    assert no_text.error == "no_text"
    assert not_string.error == "bad_text"
    assert bad_date.published_at is None  # kept, with the unparseable date dropped


def test_hostile_inputs_become_error_records():
    cases = {
        "empty.txt": b"",
        "blank.txt": b"  \n\t \n",
        "image.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "bad.txt": "caf\u00e9".encode("latin-1"),
        "notes.docx": b"PK\x03\x04",
    }
    errors = {uri: outcomes(uri, data) for uri, data in cases.items()}
    assert {uri: [r.error for r in rs] for uri, rs in errors.items()} == {
        "empty.txt": ["empty"], "blank.txt": ["empty"], "image.txt": ["decode"], "bad.txt": ["decode"],
        "notes.docx": ["unsupported_format"],
    }
    assert all(isinstance(r, ErrorRecord) and r.detail for rs in errors.values() for r in rs)


def test_utf16_with_bom_is_decoded():
    text = "Le ministre a dit « non »."
    assert decode(codecs.BOM_UTF16_LE + text.encode("utf-16-le")) == text
    assert decode(codecs.BOM_UTF8 + b"plain") == "plain"


def test_too_large_article_is_an_error_not_a_crash():
    [error] = list(parse_file("big.txt", b"word " * 1000, max_chars=100))
    assert error.error == "too_large" and "--max_article_chars" in error.detail


def test_html_main_text_and_metadata():
    html = """<html><head><title>Kremlin warns NATO</title></head><body><nav>Home | World</nav>
    <article><h1>Kremlin warns NATO</h1><p>The Kremlin said on Thursday that it would respond to any new deployment.
    "We will take measures," the spokesman told reporters in Moscow, adding that talks remained possible.</p>
    <p>NATO officials declined to comment on the remarks, which came after a week of rising tension.</p></article>
    <footer>Copyright</footer></body></html>"""
    [article] = outcomes("page.html", html.encode())
    assert isinstance(article, Article)
    assert "We will take measures" in article.text and "Copyright" not in article.text
    [empty] = outcomes("empty.html", b"<html><body><nav>Home</nav></body></html>")
    assert empty.error == "empty"


def test_non_english_is_flagged():
    [article] = outcomes("de.txt", "Der Kreml hat die Entscheidung scharf kritisiert und mit Vergeltung gedroht.".encode())
    assert article.language == "de"


@pytest.mark.parametrize("text, language", [
    ("The ministry said the talks would resume on Monday.", "en"),
    ("Le gouvernement a annoncé mardi de nouvelles mesures contre la hausse des prix.", "fr"),
    ("Путин заявил, что Россия ответит на любые новые санкции Запада.", "ru"),
    ("הממשלה הודיעה היום כי השיחות עם הצבא יימשכו בשבוע הבא.", "he"),  # CLD2 says "iw"
    ("中华人民共和国外交部发言人今天在例行记者会上表示，中方坚决反对。", "zh"),
    ("NATO", "und"),  # too short to tell: py3langid had called it Italian
    ("12345 678", "und"),
])
def test_detect_language(text, language):
    assert detect_language(text) == language


def test_detect_language_survives_what_cld2_refuses():
    # U+0083 (in two PolNeAR articles), other control characters and a lone surrogate (a JSON "\ud800")
    noisy = "The Kremlin said the talks\x83 would resume\x00 on Monday \ud800 in Geneva."
    assert detect_language(noisy) == "en"


def test_text_too_short_to_tell_is_read_by_the_models():
    [article] = outcomes("short.txt", 'Putin said "no".'.encode())
    assert article.language == "und" and is_english(article)
    [german] = outcomes("de.txt", "Der Kreml hat die Entscheidung scharf kritisiert und mit Vergeltung gedroht.".encode())
    assert not is_english(german)


def test_input_patterns(tmp_path):
    assert input_pattern(str(tmp_path)) == f"{tmp_path}/**"
    assert input_pattern("gs://bucket/prefix/") == "gs://bucket/prefix/**"
    assert input_pattern("in/*.jsonl") == "in/*.jsonl"
    assert input_pattern("in/a.txt") == "in/a.txt"


def test_timestamps():
    assert parse_timestamp("2024-01-02") == datetime(2024, 1, 2, tzinfo=timezone.utc)
    assert parse_timestamp("2024-01-02T03:04:05+02:00") == datetime(2024, 1, 2, 1, 4, 5, tzinfo=timezone.utc)
    assert parse_timestamp("not a date") is None and parse_timestamp(12) is None


def test_later_copies_keep_the_smallest_source_uri():
    assert list(later_copies(("id1", ["b.txt", "a.jsonl#3", "c.txt"]))) == [("b.txt", "id1"), ("c.txt", "id1")]
    assert list(later_copies(("id2", ["only.txt"]))) == []


@pytest.mark.slow
def test_articles_stream_to_the_models_while_files_are_read_and_repeats_are_dropped(tmp_path, monkeypatch):
    """Duplicates are found from ids alone, so NER starts before the last file is parsed (grouping
    whole articles would hold every text in memory until all files were read)."""
    import pipeline.read
    from pipeline.ner import NerModelHandler
    from pipeline.query import connect
    from pipeline.run import run

    events: list[str] = []
    original_parse, original_ner = pipeline.read.parse_file, NerModelHandler.run_inference

    def parse_file_logged(uri, data, max_chars=pipeline.read.DEFAULT_MAX_ARTICLE_CHARS, **kwargs):
        events.append("parse")
        yield from original_parse(uri, data, max_chars, **kwargs)

    def ner_logged(self, batch, model, inference_args=None):
        events.append("ner")
        return original_ner(self, batch, model, inference_args)

    monkeypatch.setattr(pipeline.read, "parse_file", parse_file_logged)
    monkeypatch.setattr(NerModelHandler, "run_inference", ner_logged)
    inbox = tmp_path / "in"
    inbox.mkdir()
    for i in range(12):
        (inbox / f"a{i:02d}.txt").write_text(f'"Talks {i} will resume," Minister Anna Berg said in Oslo.')
    (inbox / "z_copy.txt").write_text((inbox / "a03.txt").read_text())
    counts = run(["--input", str(inbox), "--output", str(tmp_path / "out"), "--inference_batch_size", "2"])
    assert (counts["records"], counts["articles"], counts["duplicates"]) == (13, 12, 1)
    kept = connect(str(tmp_path / "out")).execute(
        "SELECT source_uri FROM articles WHERE text LIKE '\"Talks 3 %'").fetchall()
    assert [Path(uri).name for (uri,) in kept] == ["a03.txt"]
    assert events.count("parse") == 26  # two passes: ids, then texts
    last_parse = len(events) - 1 - events[::-1].index("parse")
    assert events.index("ner") < last_parse
