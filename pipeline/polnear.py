"""Score ``find_quotes`` on a PolNeAR-style folder (``text/*.txt`` + brat ``attributions/*.ann``).

Gold, from the annotation:

* **direct quotes**: every stretch between double quotation marks (``"…"``, ``“…”``, ``''…''``)
  inside an attribution's Content span, each fragment separately; an opening mark left
  unclosed runs to the end of its fragment (a new opening mark while one is open ends the
  open one there: the multi-paragraph convention). Its speaker is the attribution's Source;
  when nested attributions give the same stretch, the innermost (shortest Content) wins.
* **indirect speech**: every attribution with a Source, its Content span.

Matching: overlap >= 50% of the longer span, one-to-one, greedily by overlap. A predicted
direct quote that matches nothing but lies inside a gold Content fragment (a quoted word in a
longer quote, a quote inside reported speech) counts neither way.

Speakers: right when one of the capitalised words of the predicted name appears as a word of
the gold Source text, case-insensitively ("Mike Pence" vs "Gov. Mike Pence (R-IN)"). Gold
Sources that are pronouns or hold no capitalised word ("officials", "the spokeswoman") are
kept out of both speaker figures and reported apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from pipeline.records import Entity, Quote

Frag = tuple[int, int]


@dataclass
class Attribution:
    source: str | None  # the Source text (fragments joined by a space), None when absent
    source_spans: list[Frag]
    content: list[Frag]


@dataclass
class GoldQuote:
    start: int
    end: int
    source: str | None
    content_len: int  # length of the Content it came from (innermost wins)


@dataclass
class Article:
    stem: str
    text: str
    attributions: list[Attribution]
    quotes: list[GoldQuote] = field(default_factory=list)


# --------------------------------------------------------------------------- reading

def _frags(spec: str) -> list[Frag]:
    out = []
    for part in spec.split(";"):
        bits = part.split()
        if len(bits) == 2 and bits[0].isdigit() and bits[1].isdigit():
            s, e = int(bits[0]), int(bits[1])
            if s < e:
                out.append((s, e))
    return out


def parse_ann(ann: str, text: str) -> list[Attribution]:
    """Attributions of one brat file: E lines joining T lines (Content, Content2, Source)."""
    spans: dict[str, tuple[str, list[Frag]]] = {}
    events: list[list[tuple[str, str]]] = []
    for line in ann.split("\n"):
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 2 or not parts[0][1:].isdigit():
            continue  # continuation of a multi-line T text, comments, notes
        if parts[0][0] == "T":
            label, _, rest = parts[1].partition(" ")
            spans[parts[0]] = (label, _frags(rest))
        elif parts[0][0] == "E":
            roles = []
            for arg in parts[1].split():
                role, _, ref = arg.partition(":")
                roles.append((role, ref))
            events.append(roles)
    n = len(text)
    out = []
    for roles in events:
        content: list[Frag] = []
        src: list[Frag] = []
        for role, ref in roles:
            if ref not in spans:
                continue
            frags = [(s, min(e, n)) for s, e in spans[ref][1] if s < n]
            if role.startswith("Content"):
                content.extend(frags)
            elif role.startswith("Source"):
                src.extend(frags)
        if not content:
            continue
        source = " ".join(" ".join(text[s:e].split()) for s, e in src) if src else None
        out.append(Attribution(source or None, src, sorted(content)))
    return out


_GOLD_MARK_RE = re.compile(r"''|[\"“”]")


def _trim(text: str, s: int, e: int) -> Frag | None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if not any(ch.isalnum() for ch in text[s:e]):
        return None
    return s, e


def quote_stretches(text: str, s: int, e: int) -> list[Frag]:
    """Stretches between double quotation marks inside text[s:e] (trimmed)."""
    out: list[Frag] = []
    open_at = -1
    for m in _GOLD_MARK_RE.finditer(text, s, e):
        tok = m.group()
        if open_at < 0:
            if tok != "”":  # a stray closing mark opens nothing
                open_at = m.end()
            continue
        if tok == "“":  # new opening mark: the open quote ran unclosed (multi-paragraph style)
            t = _trim(text, open_at, m.start())
            if t:
                out.append(t)
            open_at = m.end()
            continue
        t = _trim(text, open_at, m.start())
        if t:
            out.append(t)
        open_at = -1
    if open_at >= 0:
        t = _trim(text, open_at, e)
        if t:
            out.append(t)
    return out


def gold_quotes(text: str, attributions: Sequence[Attribution]) -> list[GoldQuote]:
    best: dict[Frag, GoldQuote] = {}
    for a in attributions:
        clen = sum(e - s for s, e in a.content)
        for s, e in a.content:
            for qs, qe in quote_stretches(text, s, e):
                cur = best.get((qs, qe))
                if cur is None or clen < cur.content_len:
                    best[(qs, qe)] = GoldQuote(qs, qe, a.source, clen)
    return sorted(best.values(), key=lambda g: (g.start, g.end))


def read_folder(polnear_dir: str) -> list[Article]:
    """Articles of the folder; for several annotators of one article, the first file by name."""
    root = Path(polnear_dir)
    text_dir, ann_dir = root / "text", root / "attributions"
    if not text_dir.is_dir() or not ann_dir.is_dir():
        raise FileNotFoundError(f"{polnear_dir}: expected text/ and attributions/ folders")
    anns: dict[str, list[Path]] = {}
    for p in ann_dir.glob("*.ann"):
        stem = p.stem.rsplit("_", 1)[0]
        anns.setdefault(stem, []).append(p)
    out = []
    for tp in sorted(text_dir.glob("*.txt")):
        files = sorted(anns.get(tp.stem, []), key=lambda p: p.name)
        if not files:
            continue  # not annotated: nothing to score against
        with open(tp, encoding="utf-8", newline="") as f:
            text = f.read()
        with open(files[0], encoding="utf-8", newline="") as f:
            attrs = parse_ann(f.read(), text)
        out.append(Article(tp.stem, text, attrs, gold_quotes(text, attrs)))
    return out


# --------------------------------------------------------------------------- scoring

_WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*")
_POSS_RE = re.compile(r"['’]s$", re.IGNORECASE)
_PRONOUNS = frozenset(
    """i me my mine we us our ours you your yours he him his she her hers it its they them their
    theirs one this that these those who which someone somebody anyone everyone himself herself
    itself themselves myself ourselves yourself""".split()
)
_FUNCTION = _PRONOUNS | frozenset(
    """the a an and or but of in on at for to by with from as some many most several both all
    any each every another other such no not another""".split()
)


def _words(s: str) -> list[str]:
    return [_POSS_RE.sub("", w) for w in _WORD_RE.findall(s or "")]


def source_kind(source: str | None) -> str:
    """'named', 'pronoun' (he, they, his campaign's ... only pronouns) or 'nominal' (no capitalised word)."""
    if not source:
        return "none"
    ws = _words(source)
    if ws and all(w.lower() in _PRONOUNS for w in ws):
        return "pronoun"
    if any(w[:1].isupper() and w.lower() not in _FUNCTION for w in ws):
        return "named"
    return "nominal"


def speaker_right(predicted: str | None, source: str | None) -> bool:
    if not predicted or not source:
        return False
    gold = {w.lower() for w in _words(source)}
    return any(w[:1].isupper() and w.lower() in gold for w in _words(predicted))


def _overlap(a: Sequence[Frag], b: Sequence[Frag]) -> int:
    return sum(max(0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def match(pred: Sequence[Sequence[Frag]], gold: Sequence[Sequence[Frag]]) -> dict[int, int]:
    """pred index -> gold index: overlap >= 50% of the longer, one-to-one, greedy by overlap."""
    cands = []
    for i, p in enumerate(pred):
        plen = sum(e - s for s, e in p)
        lo, hi = min(s for s, _ in p), max(e for _, e in p)
        for j, g in enumerate(gold):
            if g[0][0] >= hi or g[-1][1] <= lo:
                continue
            ov = _overlap(p, g)
            if ov > 0 and 2 * ov >= max(plen, sum(e - s for s, e in g)):
                cands.append((-ov, i, j))
    cands.sort()
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in cands:
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@dataclass
class Counts:
    articles: int = 0
    gold: int = 0
    pred: int = 0  # direct predictions counted (matched + false positives)
    ignored: int = 0  # unmatched predictions inside a gold Content span
    tp: int = 0
    named_gold: int = 0
    named_matched_returned: int = 0  # matched, named gold source, we gave a speaker
    speaker_right: int = 0
    unknown: int = 0  # counted predictions with speaker None
    unnamed_gold: int = 0  # pronoun / nominal gold sources
    unnamed_matched: int = 0
    unnamed_pred_person: int = 0
    no_source_gold: int = 0
    ind_gold: int = 0
    ind_gold_unquoted: int = 0
    ind_pred: int = 0
    ind_tp: int = 0
    ind_tp_unquoted: int = 0
    ind_speaker_named: int = 0
    ind_speaker_right: int = 0
    errors: list = field(default_factory=list)  # (kind, stem, detail) for error analysis


def score_article(c: Counts, art: Article, quotes: Sequence[Quote], keep_errors: bool = False) -> None:
    text = art.text
    direct = [q for q in quotes if q.kind == "direct" and q.end > q.start]
    gold = art.quotes
    c.articles += 1
    c.gold += len(gold)
    m = match([[(q.start, q.end)] for q in direct], [[(g.start, g.end)] for g in gold])
    contents = sorted(f for a in art.attributions for f in a.content)
    by_gold = {j: i for i, j in m.items()}
    for i, q in enumerate(direct):
        if i not in m and any(s <= q.start and q.end <= e for s, e in contents):
            c.ignored += 1
            continue
        c.pred += 1
        c.unknown += q.speaker is None
        if i not in m:
            if keep_errors:
                c.errors.append(("fp", art.stem, q.start, text[q.start:q.end][:100], q.speaker))
    c.tp += len(m)
    for j, g in enumerate(gold):
        kind = source_kind(g.source)
        q = direct[by_gold[j]] if j in by_gold else None
        if kind == "none":
            c.no_source_gold += 1
        elif kind != "named":
            c.unnamed_gold += 1
            if q is not None:
                c.unnamed_matched += 1
                c.unnamed_pred_person += q.speaker_label == "PER"
        else:
            c.named_gold += 1
            if q is not None and q.speaker is not None:
                c.named_matched_returned += 1
                ok = speaker_right(q.speaker, g.source)
                c.speaker_right += ok
                if keep_errors and not ok:
                    c.errors.append(("speaker", art.stem, g.start, text[g.start:g.end][:80], q.speaker, g.source))
            elif keep_errors:
                c.errors.append(("miss" if q is None else "nospeaker", art.stem, g.start, text[g.start:g.end][:100], g.source))

    # Indirect speech: every attribution with a Source.
    ind = [q for q in quotes if q.kind == "indirect" and q.end > q.start]
    sourced = [a for a in art.attributions if a.source]
    unquoted = [not _GOLD_MARK_RE.search("".join(text[s:e] for s, e in a.content)) for a in sourced]
    c.ind_gold += len(sourced)
    c.ind_gold_unquoted += sum(unquoted)
    c.ind_pred += len(ind)
    mi = match([[(q.start, q.end)] for q in ind], [a.content for a in sourced])
    c.ind_tp += len(mi)
    for i, j in mi.items():
        c.ind_tp_unquoted += unquoted[j]
        if source_kind(sourced[j].source) == "named":
            c.ind_speaker_named += 1
            c.ind_speaker_right += speaker_right(ind[i].speaker, sourced[j].source)
    if keep_errors:
        for i, q in enumerate(ind):
            if i not in mi:
                c.errors.append(("ind_fp", art.stem, q.start, text[q.start:q.end][:100], q.speaker))


def report(c: Counts) -> str:
    p, r, f = _prf(c.tp, c.pred, c.gold)
    sp_all = c.speaker_right / c.named_gold if c.named_gold else 0.0
    sp_ret = c.speaker_right / c.named_matched_returned if c.named_matched_returned else 0.0
    unk = c.unknown / c.pred if c.pred else 0.0
    ip, ir, if1 = _prf(c.ind_tp, c.ind_pred, c.ind_gold)
    ir_unq = c.ind_tp_unquoted / c.ind_gold_unquoted if c.ind_gold_unquoted else 0.0
    ind_sp = c.ind_speaker_right / c.ind_speaker_named if c.ind_speaker_named else 0.0
    pron = c.unnamed_pred_person / c.unnamed_matched if c.unnamed_matched else 0.0
    lines = [
        f"articles: {c.articles}",
        f"direct quotes: gold {c.gold}, predicted {c.pred} (+{c.ignored} inside a gold Content, not counted), matched {c.tp}",
        f"  precision {p:.4f}  recall {r:.4f}  F1 {f:.4f}",
        f"speakers (gold quotes with a named source: {c.named_gold}; matched with a speaker returned: {c.named_matched_returned}; right: {c.speaker_right})",
        f"  speaker_all {sp_all:.4f}  speaker_returned {sp_ret:.4f}  unknown_rate {unk:.4f}",
        f"  gold sources that are pronouns or unnamed: {c.unnamed_gold} (matched {c.unnamed_matched}, "
        f"we named a person for {c.unnamed_pred_person} = {pron:.4f}); gold quotes without a source: {c.no_source_gold}",
        f"indirect (all {c.ind_gold} attributions with a Source; {c.ind_gold_unquoted} of them without quotation marks): "
        f"predicted {c.ind_pred}, matched {c.ind_tp} ({c.ind_tp_unquoted} unquoted)",
        f"  precision {ip:.4f}  recall {ir:.4f}  F1 {if1:.4f}  recall_unquoted {ir_unq:.4f}  speaker_right {ind_sp:.4f}",
        f"quote_f1={f:.4f} speaker_all={sp_all:.4f} speaker_returned={sp_ret:.4f} unknown_rate={unk:.4f}",
    ]
    return "\n".join(lines)


def score_folder(polnear_dir: str, predict: Callable[[str], Sequence[Quote]], keep_errors: bool = False) -> Counts:
    c = Counts()
    for art in read_folder(polnear_dir):
        score_article(c, art, predict(art.text), keep_errors)
    return c


def evaluate_quotes(polnear_dir: str, ner_model: str | None = None, use_ner: bool = False,
                    ner_precision: str | None = None) -> str:
    """P/R/F1 of direct quotes, speaker accuracy and indirect-speech P/R/F1 on a PolNeAR folder."""
    from pipeline import canonical
    from pipeline.quotes import find_quotes

    if use_ner:
        from pipeline import ner
        from pipeline.models import load_model

        loaded = load_model("ner", ner_model, ner_precision)

        def predict(text: str) -> list[Quote]:
            ents: list[Entity] = ner.predict(loaded, [text])[0]
            return find_quotes(text, canonical.canonicalize(ents), indirect=True)
    else:
        def predict(text: str) -> list[Quote]:
            return find_quotes(text, (), indirect=True)

    return report(score_folder(polnear_dir, predict))
