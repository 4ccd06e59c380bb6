"""Labelled stance data: CAMEO-class sentences (third-person event reports) and the project's
own quoted statements (data/quote_stance.tsv). Fixed dev splits, so scores are comparable."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.stance import CAMEO_TO_STANCE, STANCE_LABELS

PROJECT_QUOTES = Path(__file__).resolve().parent.parent / "data" / "quote_stance.tsv"


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # one of STANCE_LABELS
    split: str  # train | dev


def cameo_split(sentence: str) -> str:
    """A fixed 20% dev split, by hash of the sentence (stable across runs and machines)."""
    return "dev" if int(hashlib.sha1(sentence.encode()).hexdigest(), 16) % 5 == 0 else "train"


def read_labelled_tsv(path: str | Path) -> list[Example]:
    """A CAMEO-class file (sentence<TAB>0-4) or a project file (text, label, split[, category] with a header)."""
    examples: list[Example] = []
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise ValueError(f"{path}: empty file")
    has_header = rows[0][:2] == ["text", "label"]
    for number, row in enumerate(rows[1:] if has_header else rows, 2 if has_header else 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}:{number}: expected text<TAB>label, got {row!r}")
        text, raw = row[0].strip(), row[1].strip()
        if raw.isdigit() and int(raw) in CAMEO_TO_STANCE:
            label = CAMEO_TO_STANCE[int(raw)]
        elif raw in STANCE_LABELS:
            label = raw
        else:
            raise ValueError(f"{path}:{number}: label {raw!r} is neither a CAMEO class 0-4 nor one of {STANCE_LABELS}")
        split = row[2].strip() if has_header and len(row) > 2 and row[2].strip() else cameo_split(text)
        examples.append(Example(text, label, split))
    return examples
