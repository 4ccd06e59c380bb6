"""Canonical names: map every entity mention to the fullest form of it in the article.

"Singh" -> "Sabrina Singh", "Putin's" -> "Vladimir Putin", "the Pentagon" -> "Pentagon".
Pure Python, no models: mentions are compared as lists of lower-cased tokens after
dropping a leading "the", a possessive "'s" and honorifics ("Mr.", "Dr.").
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

from pipeline.records import Entity

_POSSESSIVE_RE = re.compile(r"(?:['’]s|(?<=s)['’])$", re.IGNORECASE)
_LEADING_THE_RE = re.compile(r"^the\s+", re.IGNORECASE)
_EDGE_PUNCT = " \t\r\n\"'“”‘’«»„()[]{},;:!?"
_TOKEN_RE = re.compile(r"\S+")
# Honorifics say nothing about which person it is, so they never block a match.
_HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "dame", "mx"})


# News repeats its names: the two functions below are cached, as are ner.word_pieces and
# models.case_class (the quotes stage called them for 40,000 mentions in 300 articles).
@functools.lru_cache(maxsize=1 << 15)
def display_form(name: str) -> str:
    """The mention as it should be shown: no leading "the", no possessive, no edge punctuation."""
    s = name.strip().strip(_EDGE_PUNCT)
    s = _LEADING_THE_RE.sub("", s)
    s = _POSSESSIVE_RE.sub("", s)
    s = s.strip().strip(_EDGE_PUNCT)
    s = " ".join(s.split())  # NER spans may contain newlines or double spaces
    return s or name.strip()


def name_tokens(name: str) -> tuple[str, ...]:
    """Lower-cased comparison tokens of a mention (honorifics and trailing dots dropped)."""
    return _tokens_of_display(display_form(name))


@functools.lru_cache(maxsize=1 << 15)
def _tokens_of_display(display: str) -> tuple[str, ...]:
    toks = []
    for m in _TOKEN_RE.finditer(display):
        t = m.group().lower().strip(".,")
        if t and t not in _HONORIFICS:
            toks.append(t)
    return tuple(toks)


def contains_tokens(big: tuple[str, ...], small: tuple[str, ...]) -> bool:
    """True when ``small`` occurs in ``big`` as a contiguous run of whole tokens."""
    n, k = len(big), len(small)
    if k == 0 or k > n:
        return False
    return any(big[i:i + k] == small for i in range(n - k + 1))


def canonicalize(entities: Sequence[Entity]) -> list[Entity]:
    """Return the entities (same order) with ``.canonical`` set to the fullest form in the article.

    A shorter form takes the longest mention *of the same label* that contains it as whole
    tokens.  When several different longer forms contain it ("Biden" in "Joe Biden" and
    "Hunter Biden") the short form is ambiguous: it takes the most recent such full mention
    before it, or keeps its own form when there is none, so two people are never merged.
    """
    ents = list(entities)
    if not ents:
        return []
    order = sorted(range(len(ents)), key=lambda i: (ents[i].start, ents[i].end))
    display = [display_form(e.text) for e in ents]
    toks = [_tokens_of_display(d) for d in display]

    # Distinct forms per label; for each, the fullest display text seen (first occurrence).
    forms: dict[tuple[str, tuple[str, ...]], str] = {}
    for i in order:
        key = (ents[i].label, toks[i])
        if toks[i] and key not in forms:
            forms[key] = display[i]
    by_label: dict[str, list[tuple[str, ...]]] = {}
    for label, tk in forms:
        by_label.setdefault(label, []).append(tk)

    # Maximal forms containing each form; cache per (label, tokens).
    supers: dict[tuple[str, tuple[str, ...]], list[tuple[str, ...]]] = {}
    for label, all_forms in by_label.items():
        # Index forms by token so that a long article does not cost forms x forms comparisons.
        index: dict[str, set[tuple[str, ...]]] = {}
        for tk in all_forms:
            for t in tk:
                index.setdefault(t, set()).add(tk)
        for tk in all_forms:
            pool = set.intersection(*(index[t] for t in set(tk)))
            containing = [big for big in pool if len(big) > len(tk) and contains_tokens(big, tk)]
            maximal = [b for b in containing if not any(len(o) > len(b) and contains_tokens(o, b) for o in containing)]
            supers[(label, tk)] = maximal

    out: list[Entity | None] = [None] * len(ents)
    last_full: list[tuple[str, tuple[str, ...], str]] = []  # (label, tokens, canonical) seen so far
    for i in order:
        e = ents[i]
        label, tk = e.label, toks[i]
        if not tk:
            out[i] = _with_canonical(e, display[i])
            continue
        maximal = supers.get((label, tk), [])
        if len(maximal) == 1:
            canon = forms[(label, maximal[0])]
        elif not maximal:
            canon = forms[(label, tk)]
        else:
            # Ambiguous short form: the most recent earlier longer mention that contains it.
            canon = display[i]
            for lab, prev_tk, prev_canon in reversed(last_full):
                if lab == label and len(prev_tk) > len(tk) and contains_tokens(prev_tk, tk):
                    canon = prev_canon
                    break
        out[i] = _with_canonical(e, canon)
        last_full.append((label, tk, canon))
        if len(last_full) > 4096:  # bound the backwards scan on huge inputs
            del last_full[:2048]
    return [o for o in out if o is not None]


def _with_canonical(entity: Entity, canonical: str) -> Entity:
    # spelled out: dataclasses.replace looks the fields up on every call, and this runs per mention
    return Entity(entity.start, entity.end, entity.text, entity.label, entity.score, canonical)
