"""Reading CoNLL-2003 files (token POS chunk NER per line, blank line between sentences)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@dataclass(frozen=True)
class Sentence:
    words: list[str]
    tags: list[str]

    def text_and_spans(self) -> tuple[str, list[tuple[int, int]]]:
        """The words joined by spaces, and each word's span in that text."""
        spans, cursor = [], 0
        for word in self.words:
            spans.append((cursor, cursor + len(word)))
            cursor += len(word) + 1
        return " ".join(self.words), spans


def read_conll(path: str | Path) -> list[Sentence]:
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if words:
                    sentences.append(Sentence(words, tags))
                words, tags = [], []
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{line_number}: expected 'token ... tag', got {line.rstrip()!r}")
            tag = parts[-1]
            if tag not in NER_LABELS:
                raise ValueError(f"{path}:{line_number}: unknown tag {tag!r} (expected IOB2 over PER/ORG/LOC/MISC)")
            words.append(parts[0])
            tags.append(tag)
    if words:
        sentences.append(Sentence(words, tags))
    if not sentences:
        raise ValueError(f"{path}: no sentences found")
    return sentences
