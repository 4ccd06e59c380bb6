"""`python -m pipeline evaluate precision`: the outputs of a precision against fp32 on unlabelled articles."""
import shutil
from pathlib import Path

import pytest

from conftest import SEED
from pipeline.cli import main
from pipeline.evaluate import corpus_texts

FIXTURES = Path(__file__).parent / "fixtures"


def test_corpus_texts_reads_every_format_and_skips_bad_files(tmp_path) -> None:
    for fixture in (f for f in FIXTURES.iterdir() if f.is_file()):
        shutil.copy(fixture, tmp_path / fixture.name)
    texts = corpus_texts(tmp_path)
    assert any("Ahmed Al-Khulaifi" in t for t in texts)  # a JSON Lines record
    assert any("Kremlin" in t for t in texts)  # the HTML page
    assert len(texts) >= 3
    assert corpus_texts(tmp_path, limit=2) == texts[:2]


def test_corpus_texts_bad_folders(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        corpus_texts(tmp_path / "missing")
    (tmp_path / "notes.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="no articles"):
        corpus_texts(tmp_path)


def test_cli_rejects_bad_input(tmp_path, capsys) -> None:
    assert main(["evaluate", "precision", "--corpus", str(tmp_path / "missing")]) == 2
    assert main(["evaluate", "precision", "--corpus", str(SEED.parent), "--articles", "0"]) == 2
    assert "--articles" in capsys.readouterr().err


def precision_on_the_seed(capsys, precision: str) -> tuple[str, dict[str, str]]:
    """The command's output and its last line's fields, both models in ``precision``."""
    assert main(["evaluate", "precision", "--corpus", str(SEED.parent),
                 "--ner_precision", precision, "--stance_precision", precision]) == 0
    out = capsys.readouterr().out
    return out, dict(item.split("=") for item in out.strip().splitlines()[-1].split())


@pytest.mark.slow
def test_fp32_against_itself_agrees_fully(capsys) -> None:
    out, fields = precision_on_the_seed(capsys, "fp32")
    assert "0 labels changed" in out and "1 of 1 articles with identical entities" in out
    assert fields == {"ner_precision": "fp32", "entity_f1_vs_fp32": "1.0000",
                      "stance_precision": "fp32", "stance_label_agreement": "1.0000"}


@pytest.mark.slow
def test_int8_on_the_seed(capsys) -> None:
    out, fields = precision_on_the_seed(capsys, "int8")
    assert "+int8" in out and "texts to classify" in out
    assert fields["ner_precision"] == "int8" and fields["stance_precision"] == "int8"
    # int8 moves a few answers, not most of them
    assert 0.8 <= float(fields["entity_f1_vs_fp32"]) <= 1.0
    assert 0.5 <= float(fields["stance_label_agreement"]) <= 1.0
