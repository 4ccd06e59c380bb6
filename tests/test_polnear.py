"""PolNeAR scoring (pipeline/polnear.py): a hand-made fixture with scores worked out by hand,
and a slow check of the real dev split when ../shared has it."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.polnear import (Counts, evaluate_quotes, quote_stretches, read_folder, report, score_article,
                              source_kind, speaker_right)
from pipeline.records import Quote

FIXTURE = Path(__file__).parent / "fixtures" / "polnear"
DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "polnear" / "dev"


def last_line(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in (kv.split("=") for kv in out.strip().splitlines()[-1].split())}


def test_reads_first_annotator_by_name() -> None:
    arts = {a.stem: a for a in read_folder(str(FIXTURE))}
    assert sorted(arts) == ["art1", "art2"]
    a1 = arts["art1"]
    # art1_aaaa.ann, not art1_bbbb.ann (whose only Content is "Ann Lee said", no quote)
    assert [a1.text[g.start:g.end] for g in a1.quotes] == ["We will win,", "We are ready."]
    assert [g.source for g in a1.quotes] == ["Ann Lee", "He"]
    assert [a2q.source for a2q in arts["art2"].quotes] == ["Bob Ray"]


def test_quote_stretches() -> None:
    t = "He said ''yes'' and \"no, never"
    assert [t[s:e] for s, e in quote_stretches(t, 0, len(t))] == ["yes", "no, never"]  # unclosed runs to the end
    t = "“First part.\n\n“Second part.”"
    assert [t[s:e] for s, e in quote_stretches(t, 0, len(t))] == ["First part.", "Second part."]


def test_source_kinds_and_speaker_match() -> None:
    assert source_kind("Gov. Mike Pence (R-IN)") == "named"
    assert source_kind("He") == "pronoun" and source_kind("the spokeswoman") == "nominal"
    assert speaker_right("Mike Pence", "Gov. Mike Pence (R-IN)")
    assert speaker_right("Mike Pence", "PENCE")
    assert not speaker_right("Mike Pence", "Tim Kaine") and not speaker_right(None, "Pence")


def test_hand_scored_predictions() -> None:
    """Predictions written by hand; every figure below is worked out by hand."""
    arts = {a.stem: a for a in read_folder(str(FIXTURE))}
    a1, a2 = arts["art1"], arts["art2"]
    t1, t2 = a1.text, a2.text

    def q(text: str, sub: str, speaker: str | None, kind: str = "direct") -> Quote:
        s = text.index(sub)
        return Quote(s, s + len(sub), sub, speaker, "PER" if speaker else None, None, 0.5 if speaker else 0.0, kind)

    c = Counts()
    score_article(c, a1, [
        q(t1, "We will win,", "Lee"),  # matched, named gold "Ann Lee": right
        q(t1, "will", None),  # inside a gold Content, no match: counts neither way
        q(t1, "Ann Lee said", None),  # false positive, no speaker
        q(t1, "We are ready.", "Ann Lee"),  # matched; gold "He" is a pronoun: reported apart
    ])
    score_article(c, a2, [
        q(t2, "Nothing is certain,", None),  # matched, named gold "Bob Ray", no speaker returned
        q(t2, "taxes would rise next year", "Mary Poe", "indirect"),  # indirect: matched
        q(t2, "Nothing is certain", "Bob Ray", "indirect"),  # indirect: overlaps a sourced Content -> matched too
        q(t2, "Bob Ray said", "Bob Ray", "indirect"),  # indirect: false positive
    ])
    # direct: gold 3, counted 4 (3 matched + 1 FP), 1 ignored -> P 3/4, R 3/3, F1 6/7
    assert (c.gold, c.pred, c.ignored, c.tp) == (3, 4, 1, 3)
    # named gold: "Ann Lee" (right) and "Bob Ray" (no speaker) -> all 1/2, returned 1/1; unknown 2/4
    assert (c.named_gold, c.named_matched_returned, c.speaker_right, c.unknown) == (2, 1, 1, 2)
    assert (c.unnamed_gold, c.unnamed_matched, c.unnamed_pred_person) == (1, 1, 1)
    # indirect: 4 sourced attributions, 3 predicted, 2 matched -> P 2/3, R 1/2, F1 4/7
    assert (c.ind_gold, c.ind_pred, c.ind_tp) == (4, 3, 2)
    out = report(c)
    assert last_line(out) == {"quote_f1": 0.8571, "speaker_all": 0.5, "speaker_returned": 1.0, "unknown_rate": 0.5}
    assert "precision 0.6667  recall 0.5000  F1 0.5714" in out


def test_evaluate_quotes_on_fixture() -> None:
    """The real find_quotes: all three quotes found, both named speakers right, and the
    indirect "Mary Poe said taxes would rise next year" (1 of 4 sourced attributions)."""
    out = evaluate_quotes(str(FIXTURE))
    assert last_line(out) == {"quote_f1": 1.0, "speaker_all": 1.0, "speaker_returned": 1.0, "unknown_rate": 0.0}
    assert "precision 1.0000  recall 0.2500  F1 0.4000" in out


def test_missing_folder_fails_clearly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        evaluate_quotes(str(tmp_path))


@pytest.mark.slow
def test_polnear_dev_figures() -> None:
    """Rules only (no NER), on the 84 PolNeAR dev articles; a little below the measured figures."""
    if not DEV.is_dir():
        pytest.skip(f"{DEV} not present")
    got = last_line(evaluate_quotes(str(DEV)))
    assert got["quote_f1"] >= 0.959
    assert got["speaker_all"] >= 0.855
    assert got["speaker_returned"] >= 0.944
    assert got["unknown_rate"] <= 0.115
