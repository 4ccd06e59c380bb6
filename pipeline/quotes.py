"""Direct quotes in news text and who said them: pure-Python rules, no models.

``find_quotes`` works in four steps:

1. paragraphs, then quotation marks paired inside each paragraph (a quote never crosses a
   paragraph; an unclosed one runs to the end of its paragraph);
2. a *masked* copy of the text with every quote's inside blanked out (same length, so
   offsets stay valid) so that words inside quotes are never taken for cues or speakers;
3. speaker mentions: the NER entities, plus capitalised-word runs where NER has nothing
   (the only source when ``entities`` is empty);
4. attribution: an attribution cue ("said", "according to", ...) next to the quote in the
   same sentence, its speaker a name / pronoun / "the spokeswoman" beside the cue; quotes
   left without one inherit from a quote of the same sentence or paragraph.

Every window a regex looks at is bounded, so the run time stays linear in the text length.

No Beam here (the stage is ``pipeline.quote_stage``): a process beside the forward passes imports
this module alone (``pipeline.beside``).
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Sequence

from pipeline.canonical import contains_tokens, canonicalize, display_form, name_tokens
from pipeline.records import Entity, Quote

# --------------------------------------------------------------------------- quote marks

# Single quotes are never top-level marks: they are apostrophes far more often than quotes
# (don't, Russia's, ’90s, rock ’n’ roll), and nested single quotes belong to the outer quote.
_MARK_RE = re.compile(r"``|''|[\"“”„«»「」]")
_OPENERS = frozenset({"“", "„", "``", "«", "「"})
_CLOSERS = frozenset({"”", "»", "」"})
_GROUP = {'"': "d", "''": "d", "“": "d", "”": "d", "„": "d", "``": "d", "«": "g", "»": "g", "「": "c", "」": "c"}
_OPEN_CONTEXT = set("([{<—–-/:")
_CLOSE_CONTEXT = set(".,;:!?)]}>—–-…/'’")
_BLANK_LINE_RE = re.compile(r"\n[ \t\r\f\v]*\n")
_MASK = "\x00"  # neither \w nor \s, so masked quotes are invisible to the word regexes


@dataclass
class _Span:
    start: int  # inside the marks, whitespace-trimmed
    end: int
    mark_start: int  # position of the opening mark
    mark_end: int  # just after the closing mark, or the paragraph end when unclosed
    para: int
    closed: bool


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Paragraph (start, end) spans.

    Texts with blank lines use them as paragraph breaks (single newlines are then soft
    wraps); texts without blank lines have one paragraph per line.
    """
    sep = _BLANK_LINE_RE if _BLANK_LINE_RE.search(text) else re.compile(r"\n")
    spans, pos = [], 0
    for m in sep.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if not any(ch.isalnum() for ch in text[start:end]):
        return None  # empty or punctuation-only: not a quote
    return start, end


def _scan_paragraph(text: str, ps: int, pe: int, para: int) -> list[_Span]:
    """Pair the quotation marks of one paragraph.

    Straight marks toggle; curly ones say their direction, but the characters around a mark
    (flanking, as in Markdown) override both when they clearly disagree, which recovers from
    unbalanced marks, inch signs (12") and Swedish-style ”...” quotes.
    """
    out: list[_Span] = []
    open_at = -1  # index just after the opening mark; -1 when no quote is open
    open_mark = -1
    group = ""

    def emit(end: int, mark_end: int, closed: bool) -> None:
        t = _trimmed(text, open_at, end)
        if t:
            out.append(_Span(t[0], t[1], open_mark, mark_end, para, closed))

    for m in _MARK_RE.finditer(text, ps, pe):
        tok, s, e = m.group(), m.start(), m.end()
        prev = text[s - 1] if s > ps else None
        nxt = text[e] if e < pe else None
        left = nxt is not None and not nxt.isspace() and (prev is None or prev.isspace() or prev in _OPEN_CONTEXT)
        right = prev is not None and not prev.isspace() and (nxt is None or nxt.isspace() or nxt in _CLOSE_CONTEXT)
        if open_at < 0:
            if tok in _CLOSERS:
                opens = left and not right
            else:
                opens = not (right and not left)
            if opens:
                open_at, open_mark, group = e, s, _GROUP[tok]
            continue
        if _GROUP[tok] != group:
            continue  # another style nested inside the open quote
        if tok in _OPENERS:
            closes = right and not left
        else:
            closes = not (left and not right)
        if closes:
            emit(s, e, True)
            open_at = -1
        else:
            # An opening mark while a quote is open: the earlier quote was never closed
            # (or continues from the paragraph before); end it where the new one starts.
            emit(s, s, False)
            open_at, open_mark, group = e, s, _GROUP[tok]
    if open_at >= 0:
        emit(pe, pe, False)
    return out


# --------------------------------------------------------------------------- sentences

_SENT_END_RE = re.compile(r"[.!?…]+[\"”’')\]»]*(?=\s)")
_LAST_WORD_RE = re.compile(r"([\w.]+)$")
_ABBREV = frozenset(
    "mr mrs ms dr prof gen sen rep gov lt col capt sgt adm maj st jr sr no vs etc inc corp co ltd "
    "jan feb mar apr jun jul aug sep sept oct nov dec rev fr ft mt hon amb est".split()
)


def _sentence_starts(text: str, masked: str, paras: list[tuple[int, int]], spans: list[_Span]) -> list[int]:
    """Sorted sentence start positions (paragraph starts included); never inside a quote."""
    starts = [s for s, _ in paras]
    n = len(masked)
    for m in _SENT_END_RE.finditer(masked):
        p = m.end()
        while p < n and masked[p].isspace():
            p += 1
        if p >= n or not (masked[p].isupper() or masked[p].isdigit() or masked[p] in "\"“„«'‘(["):
            continue
        w = _LAST_WORD_RE.search(masked, max(0, m.start() - 20), m.start())
        if w and m.group().startswith("."):
            word = w.group(1).lower()
            if word in _ABBREV or len(word) == 1 or "." in word:
                continue  # "Mr. Smith", "J. Smith", "the U.S. Army"
        starts.append(p)
    for sp in spans:
        # A quote ending in . ! ? followed by a capital starts a new sentence after its mark.
        if sp.closed and text[sp.end - 1] in ".!?…":
            p = sp.mark_end
            while p < n and masked[p].isspace() and masked[p] != "\n":
                p += 1
            if p < n and (masked[p].isupper() or masked[p] in "\"“„«"):
                starts.append(p)
    return sorted(set(starts))


# --------------------------------------------------------------------------- mentions

@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    name: str  # canonical
    label: str  # PER, ORG, LOC, MISC or UNK (capitalised run of unknown type)


_WORD_RE = re.compile(r"[^\W\d_][\w'’.\-]*")
_CONNECTORS = frozenset("of de da del der den van von bin ibn al el la le du dos das di".split())
_STOP = frozenset(
    """the a an and or but if when while after before since as at in on of for from with by to
    not no yes this that these those it its he she they we i you his her their our my your
    there here what who why how where which do does did is are was were be first last also
    meanwhile still yet so then now however although though because despite during under over
    according asked told said says more most some many all any each every both other such
    monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow
    january february march april may june july august september october november december
    mr mrs ms dr er sie es wir ich il elle ils elles él ella lui""".split()
)
_TITLES = frozenset(
    """president vice prime minister secretary deputy assistant press spokesman spokeswoman
    spokesperson senator sen rep representative gov governor mayor general gen lt col colonel maj
    major capt captain sgt adm admiral commander chief director ambassador envoy judge justice
    king queen prince princess pope sheikh chairman chairwoman chair ceo cfo founder leader
    speaker attorney foreign defense defence state interior finance health former acting senior
    top lady lord rev officer commissioner chancellor premier counsel adviser advisor aide
    official head member candidate nominee democrat democratic republican gop sir dame""".split()
)
_ORG_KW = frozenset(
    """department ministry agency council committee commission party university college institute
    company corporation corp inc ltd llc group bank fund office court army navy forces force guard
    police union association organization organisation administration house senate congress
    parliament assembly government cabinet federation foundation network news times post journal
    press bureau service services board authority command embassy campaign coalition alliance
    league club church hospital school center centre media tv radio television newspaper
    magazine reuters ap afp cnn bbc nato""".split()
)


# Title words that are also surnames ("Peter King", "John Major") when they end a name.
_SURNAME_TITLES = frozenset("king major judge lord pope bishop".split())


def _clean_token(tok: str) -> tuple[str, bool]:
    """Token without trailing possessive / sentence period; second item: the run ends here."""
    if tok.lower().endswith(("'s", "’s")):
        return tok[:-2], True
    if tok.endswith(("'", "’")):
        return tok[:-1], True
    if tok.endswith("."):
        core = tok[:-1]
        if not (len(core) == 1 or "." in core or core.lower() in _ABBREV):
            return core, True  # sentence period, not an abbreviation
    return tok.rstrip("-"), False


def _heuristic_mentions(masked: str) -> list[tuple[int, int, str]]:
    """(start, end, guessed label) for runs of capitalised words outside quotes."""
    found: list[tuple[int, int, str]] = []
    run: list[tuple[int, int, str]] = []  # (start, end, cleaned token)
    after_the = False

    def flush() -> None:
        nonlocal run
        toks = run
        run = []
        lead_the = False
        while toks and toks[0][2].lower() in _STOP:
            lead_the = toks[0][2].lower() == "the"
            toks = toks[1:]
        while toks and toks[-1][2].lower() in _CONNECTORS:
            toks = toks[:-1]
        if not toks:
            return
        words = [t[2].lower().rstrip(".") for t in toks]
        if words[0] in ("mr", "mrs", "ms", "miss", "dr") and 2 <= len(toks) <= 4 and not any(w in _ORG_KW for w in words):
            found.append((toks[0][0], toks[-1][1], "PER"))  # "Mr. King": a name, whatever its words
            return
        kw = [i for i, w in enumerate(words) if w in _TITLES or w in _ORG_KW]
        if kw and kw[-1] == len(toks) - 1 and words[-1] in _SURNAME_TITLES and (len(toks) >= 2 or not (lead_the or before_the)):
            # "Peter T. King", "Rep. Steve King": a title word that is the surname
            kw = kw[:-1]
            if not kw:
                found.append((toks[0][0], toks[-1][1], "PER" if 2 <= len(toks) <= 4 else "UNK"))
                return
            if kw[-1] == len(toks) - 2:
                return
        if kw and kw[-1] < len(toks) - 1:
            j = kw[-1]
            name = toks[j + 1:]
            while name and name[0][2].lower() in _CONNECTORS:
                name = name[1:]
            if name and len(name) <= 4:
                found.append((name[0][0], name[-1][1], "PER"))
            if any(w in _ORG_KW for w in words[: j + 1]):
                found.append((toks[0][0], toks[j][1], "ORG"))
            return
        start, end = toks[0][0], toks[-1][1]
        if kw:
            if any(w in _ORG_KW for w in words):
                found.append((start, end, "ORG"))
            return
        single = len(toks) == 1
        t0 = toks[0][2]
        if single and (lead_the or before_the or (t0.isupper() and 2 <= len(t0.replace(".", "")) <= 6)):
            found.append((start, end, "ORG"))  # "the Pentagon", "NATO"
        elif single:
            found.append((start, end, "UNK"))
        elif len(toks) <= 4:
            found.append((start, end, "PER"))
        else:
            found.append((start, end, "UNK"))

    before_the = False
    prev_end = -1
    for m in _WORD_RE.finditer(masked):
        word = m.group()
        if not run and not word[0].isupper():
            # Most words: outside a run a lower-case word only matters as a "the" before the next run
            # (the full path below would clean it and measure its gap for nothing).
            after_the = word.rstrip("-").lower() == "the"
            continue
        tok, ends_run = _clean_token(word)
        s, e = m.start(), m.start() + len(tok)
        if not tok:
            continue
        gap = masked[prev_end:s] if prev_end >= 0 else ""
        gap_ok = gap.isspace() and "\n" not in gap  # names never span punctuation or lines
        if tok[0].isupper():
            if run and (not gap_ok or len(run) >= 12):
                flush()  # long capitalised runs are headlines, not names
            if not run:
                before_the = after_the
            run.append((s, e, tok))
        elif run and gap_ok and tok in _CONNECTORS:
            run.append((s, e, tok))
        else:
            if run:
                flush()
        after_the = tok.lower() == "the" and not ends_run
        if ends_run and run:
            flush()
        prev_end = e if not ends_run else -1
    if run:
        flush()
    return found


def _build_mentions(text: str, masked: str, entities: Sequence[Entity], inside: "_Inside") -> list[_Mention]:
    """Speaker-capable mentions outside quotes, sorted by start."""
    n = len(text)
    ents = [e for e in entities if 0 <= e.start < e.end <= n]
    if ents and any(e.canonical is None for e in ents):
        ents = canonicalize(ents)
    guesses = _heuristic_mentions(masked)
    mentions: list[_Mention] = []
    if ents:
        covered = sorted((e.start, e.end) for e in ents)
        starts = [c[0] for c in covered]
        per_index: dict[str, set[tuple[tuple[str, ...], str]]] = {}
        for e in ents:
            if e.label == "PER":
                form = (name_tokens(e.canonical or e.text), e.canonical or display_form(e.text))
                for t in form[0]:
                    per_index.setdefault(t, set()).add(form)
        def one_person(tk: tuple[str, ...]) -> str | None:
            pool = per_index.get(tk[0], set()) if tk else set()
            hits = {canon for ftk, canon in pool if contains_tokens(ftk, tk)}
            return hits.pop() if len(hits) == 1 else None

        for e in ents:
            if inside.contains(e.start):
                continue
            if e.label in ("LOC", "MISC"):
                # "Grubbs" tagged MISC: a surname of exactly one NER person is that person.
                canon = one_person(name_tokens(e.text))
                if canon is not None:
                    mentions.append(_Mention(e.start, e.end, canon, "PER"))
                    continue
            if e.label in _NON_SPEAKER_LABELS:
                continue
            mentions.append(_Mention(e.start, e.end, e.canonical or display_form(e.text), e.label))
        by_span = {(e.start, e.end): e.label for e in ents}
        for s, e, label in guesses:
            i = bisect.bisect_right(starts, e) - 1
            over = [(cs, ce) for cs, ce in covered[max(0, i - 3): i + 1] if cs < e and ce > s]
            if over:
                # A person NER cut short ("Peter T" of "Peter T. King"): the longer guess too.
                if label == "PER" and len(over) == 1 and s <= over[0][0] and over[0][1] < e and \
                        by_span.get(over[0]) == "PER":
                    mentions.append(_Mention(s, e, display_form(text[s:e]), "PER"))
                continue
            # NER missed it: a surname of exactly one NER person resolves to that person.
            tk = name_tokens(text[s:e])
            pool = per_index.get(tk[0], set()) if tk else set()
            hits = {canon for ftk, canon in pool if contains_tokens(ftk, tk)}
            if len(hits) == 1:
                mentions.append(_Mention(s, e, hits.pop(), "PER"))
            else:
                mentions.append(_Mention(s, e, display_form(text[s:e]), "UNK"))
    else:
        per_words = {t for s, e, lab in guesses if lab == "PER" for t in name_tokens(text[s:e])}
        pseudo = []
        for s, e, label in guesses:
            if label == "UNK":
                tk = name_tokens(text[s:e])
                if len(tk) == 1 and tk[0] in per_words:
                    label = "PER"  # surname of a person named in full elsewhere
            pseudo.append(Entity(s, e, text[s:e], label, 0.5))
        for ent in canonicalize(pseudo):
            mentions.append(_Mention(ent.start, ent.end, ent.canonical or display_form(ent.text), ent.label))
    mentions.sort(key=lambda m: (m.start, -m.end))
    return mentions


# NER labels never taken for speakers: nationalities, parties, events ("Americans", "Republican")
# sit next to speech verbs far more often than they speak (places do speak: "Russia said").
_NON_SPEAKER_LABELS = frozenset({"MISC"})


class _Inside:
    """Fast 'is this position inside a quote' lookup."""

    def __init__(self, spans: list[_Span]) -> None:
        self.starts = [s.start for s in spans]
        self.ends = [s.end for s in spans]

    def contains(self, pos: int) -> bool:
        i = bisect.bisect_right(self.starts, pos) - 1
        return i >= 0 and pos < self.ends[i]


# --------------------------------------------------------------------------- cues

_VERB_CUES = """said says say saying told tells telling added adds adding warned warns warning stated
states noted notes noting explained explains explaining wrote writes writing tweeted tweets
tweeting posted asked asks asking replied replies replying responded responds insisted insists
insisting argued argues arguing claimed claims claiming declared declares declaring announced
announces announcing accused accuses accusing urged urges urging called calls calling described
describes describing believes believe believed criticized criticised criticizes criticises
criticizing criticising threatened threatens threatening vowed vows vowing pledged pledges
pledging stressed stresses stressing emphasized emphasised emphasizes emphasises emphasizing
acknowledged acknowledges acknowledging admitted admits admitting continued continues concluded
concludes recalled recalls recalling suggested suggests suggesting predicted predicts promised
promises promising confirmed confirms denied denies denying countered counters conceded concedes
boasted boasts complained complains complaining cautioned cautions observed observes remarked
remarks quipped joked mused exclaimed shouted yelled reported reports testified testifies
demanded demands demanding condemned condemns condemning slammed slams blasted blasts dismissed
dismisses labeled labelled labels branded brands dubbed dubs termed lamented laments estimated
agreed charged alleged alleges maintained maintains contended contends asserted asserts affirmed
assured reiterated reiterates repeated clarified indicated hinted signaled signalled mentioned
commented thinks thought feels felt wondered announced decried decries denounced denounces
praised praises hailed hails welcomed welcomes rejected rejects questioned questions
stating reacted retorted groused mocked retaliated touted bragged recounted fumed scoffed
sniped griped marveled marvelled proclaimed remembered surmised interjected tell insist insisted argue claim warn note explain
predict suggest admit acknowledge recall contend maintain assert allege complain write wrote
quipping joking adds stressing responding replying countering conceding asserting contending
sagte erklärte dijo afirmó declaró a\\s+déclaré a\\s+dit ha\\s+detto disse""".split()
_PHRASE_CUES = [
    r"pointed\s+out", r"went\s+on", r"(?:shot|fired|hit)\s+back", r"quoted\s+as\s+saying",
    r"in\s+an?\s+(?:statement|interview|speech|post|tweet|email|e-mail|letter|video|briefing)",
]
_AGENT_NOUNS = r"(?:statements?|remarks|comments?|words|testimony|posts?|tweets?|messages?|speech|letter)\s+(?:by|from)"


def _alternation(cues: Sequence[str]) -> str:
    """A regex matching any of ``cues``: the plain words as a trie ("sa(?:id|ys|y(?:ing)?)|..."),
    the ones with regex syntax ("a\\s+dit") as they are. ``re`` tries an alternation's branches one
    by one at every position of the text; in a trie each letter is tried once. Over the 840 PolNeAR
    train texts the cue search took 0.56 instead of 1.52 ms an article, with the same matches
    (one-off). Every cue ends at a word boundary in _CUE_RE, so branch order does not matter."""
    words = [c for c in cues if re.escape(c) == c]
    patterns = [c for c in cues if re.escape(c) != c]
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here

    def pattern(node: dict) -> str:
        branches = [re.escape(ch) + pattern(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        return "(?:" + "|".join(branches) + ")" + ("?" if "" in node else "")

    return "|".join(([pattern(trie)] if words else []) + patterns)


_CUE_RE = re.compile(
    r"(?<![\w'’-])(?:"
    r"(?P<agent>[Aa]ccording\s+to|" + _AGENT_NOUNS + r")"
    r"|(?P<phrase>" + "|".join(_PHRASE_CUES) + r")"
    r"|(?P<verb>" + _alternation(_VERB_CUES) + r")"
    r")(?![\w'’-])"
)
# A past participle followed by "by": the speaker is the agent ("criticized by the Kremlin").
_BY_AFTER_RE = re.compile(r"\s+by\s+")
# Verbs whose subject may follow them ("..., said Singh.").
_INVERTIBLE = frozenset(
    "said says added asked wrote continued explained replied noted warned insisted recalled "
    "concluded declared stated argued responded tweeted posted observed remarked quipped joked "
    "countered told writes notes scoffed remembered recounted retorted exclaimed shouted yelled "
    "mused lamented marveled marvelled complained boasted bragged cautioned predicted suggested "
    "conceded admitted acknowledged fumed sniped griped proclaimed interjected surmised "
    "explains adds asks recalls declares argues insists replies continues warns tells says "
    "concludes laments boasts complains cautions predicts suggests admits acknowledges observes "
    "counters concedes reacted".split()
)

_ROLES = (
    r"spokes(?:wo)?man|spokesperson|minister|president|secretary|official|ambassador|envoy|"
    r"senator|governor|mayor|general|commander|chief|director|chairman|chairwoman|leader|"
    r"prosecutor|lawyer|attorney|diplomat|premier|chancellor|king|queen|prince|pope|candidate|"
    r"nominee|lawmaker|congressman|congresswoman|representative|analyst|expert|professor|doctor|"
    r"officer|aide|adviser|advisor|woman|man|source"
)
_PRE_JUNK_RE = re.compile(
    r"(?:\s+(?:also|later|then|once|again|further|previously|recently|earlier|simply|has|have|had|"
    r"would|will|did|does|do|had|was|were|is|are|not|never|just|even|[a-z]+ly|today|yesterday|tonight|"
    r"on\s+[A-Z][a-z]+day|(?:last|this|on|earlier|later)\s+(?:week|month|year|night|morning|evening|[A-Z][a-z]+day)))*\s*$"
)
_PRONOUN_BEFORE_RE = re.compile(r"(?<![\w'’])(he|she|they|it|He|She|They|It)\s*$")
_ROLE_BEFORE_RE = re.compile(r"(?<![\w'’])[Tt]he\s+(?:[\w-]+\s+){0,3}?(?:" + _ROLES + r")s?\s*$")
# An unnamed speaker described with a capitalised affiliation: "a State Department official",
# "one New Hampshire Democrat", "a spokeswoman for the House Armed Services Committee", "the
# Clinton campaign", "Trump's campaign". The speaker is the capitalised part.
_NOM_DET = r"(?:[Aa]n?|[Oo]ne|[Aa]nother|[Tt]wo|[Tt]hree|[Ss]everal|[Ss]ome|[Tt]he)"
_NOM_WORD = r"[\w&'’.\-]+"
_NOM_POST = r"(?:\s+(?:for|of|at|with|from|in|on)\s+(?:the\s+)?[A-Z][\w&'’.\-]*(?:\s+(?:of\s+|and\s+)?[A-Z][\w&'’.\-]*){0,5})?"
_NOMINAL_BEFORE_RE = re.compile(
    r"(?<![\w'’.])(?P<det>" + _NOM_DET + r"|[A-Z][\w.\-]*(?:\s+[A-Z][\w.\-]*){0,3}['’]s?)\s+"
    r"(?P<np>(?:" + _NOM_WORD + r"\s+){0,5}?" + _NOM_WORD + _NOM_POST + r")"
    r"(?:\s*,?\s+(?:familiar|close|who|with|involved|speaking|granted|briefed)\b[^,;:\x00\"“”\n]{0,60},?)?\s*$"
)
_NOMINAL_AFTER_RE = re.compile(
    r"\s*(?P<det>(?:an?|one|another|two|three|several|some|the))\s+"
    r"(?P<np>(?:" + _NOM_WORD + r"\s+){0,5}?" + _NOM_WORD + _NOM_POST + r")"
    r"(?=\s*(?:[,.;:!?)\x00\"”—–]|$|\s(?:familiar|close|who|with|involved|speaking|granted|briefed|in|on|at|during|after|when|while|last|this|to|told)\b))"
)
_NOM_HEADS_ORG = frozenset(
    "campaign campaigns office team staff committee spokesman spokeswoman spokesperson statement "
    "administration department agency government ministry embassy".split()
)
_NOM_SKIP = frozenset(
    "a an one another two three several some the of for at with from in on and former top "
    "senior".split()
)


def _nominal_name(det: str, np: str) -> tuple[str, str | None] | None:
    """Capitalised words of a nominal speaker phrase, or None when it names nothing."""
    words = re.findall(r"[\w&'’.\-]+", np)
    if not words or len(words) > 12:
        return None
    if any(w.lower() in _STOP and w.lower() not in _NOM_SKIP and w.lower() not in ("first", "last") for w in words):
        return None  # a clause, not a noun phrase
    caps = []
    if det[:1].isupper() and det.lower().rstrip("'’s") not in _NOM_SKIP and det.lower() not in _NOM_SKIP:
        caps.append(re.sub(r"['’]s?$", "", det))  # "Trump's campaign"
    for w in words:
        w2 = re.sub(r"['’]s?$", "", w)
        if w2.endswith(".") and "." not in w2[:-1] and w2[:-1].lower() not in _ABBREV:
            w2 = w2[:-1]  # sentence period, not "U.S."
        if w2[:1].isupper() and w2.lower() not in _NOM_SKIP and w2.lower() not in _STOP:
            caps.append(w2)
    if not caps or len(caps) > 6:
        return None
    name = " ".join(caps)
    label = "ORG" if any(w.lower() in _ORG_KW or w.lower() in _NOM_HEADS_ORG for w in words) or caps[0] == re.sub(r"['’]s?$", "", det) else None
    return name, label
# ", a doctor at Mercy Hospital," / " (D-Mass.)" between a name and its verb.
_APPOSITION_RE = re.compile(r"(?:,[^,;:\x00\"“”«»\n]{1,120},|\s*\([^()\x00\n]{1,60}\),?)\s*$")
_AFTER_GAP_RE = re.compile(
    r"^[\s,]*(?:(?:the|a|an|former|ex|then|acting|deputy|senior|top|chief|by|of|for|at|to|in|and|"
    r"statements?|remarks|comments|from|sources?|officials?|" + _ROLES + r"|[A-Z][\w.'’\-]*|"
    r"(?!(?:that|which|who|whom|whose|he|she|they|it|we|i|you|his|its|their|would|will|was|is|are|were|has|have|"
    r"had|not|if|when|because|but|on|with|after|before|during|since|about)\b)[a-z][\w'’\-]*)\s+){0,8}$"
)
_AFTER_END_RE = re.compile(
    r"^\s*(?:[,.;:!?()\x00\"”—–]|\s-\s|$|(?:in|on|at|during|to|from|who|of|after|before|when|while|as|and|"
    r"about|with|for|that|last|this|earlier|later|recently|yesterday|today|[A-Z][a-z]+day)\b)"
)
_OBJ_PRONOUN_RE = re.compile(r"^\s*(him|her|them|it)\b")
_SUBJ_PRONOUN_AFTER_RE = re.compile(r"^\s*(he|she|they)\b(?=\s*[,.;:]|\s*$)")
_COLON_END_RE = re.compile(r":\s*$")
_SUBJ_PRONOUN_START_RE = re.compile(r"(?:[^,;:\x00\"“”\n]{0,50},\s*)?(He|She)\s+(?:[a-z]+ly\s+)?[a-z]")
_VERB_AFTER_RE = re.compile(r"(?:\s*\([^()\x00\n]{1,30}\))?\s+(?:[a-z]+ly\s+)?(?:(?:has|had|have|was|is|also|then|later|again|once|even)\s+)?[a-z]+(?:ed|s)\b")
_COMMA_END_RE = re.compile(r",\s*$")
_PARTICIPLE_LEAD_RE = re.compile(r"(?:,|\b(?:upon|after|before|while|by))\s*$")
_ANY_VERB_AFTER_RE = re.compile(r"(?:\s*\([^()\x00\n]{1,30}\)|,\s+who\s[^,;:\x00\n]{1,80},)?\s+(?:[a-z]+ly\s+)?(?:(?:has|had|have|was|is|also|then|later|again|once|even|quickly)\s+)?[a-z]{3,}\b")
_CLAUSE_START_RE = re.compile(r"[,;:(—–]|\s-\s")
_SUBJECT_LEAD = frozenset(
    """the former then and but while when as after so because although though if meanwhile also
    however a an his her its their top senior chief deputy acting""".split()
)


_OF_PLACE_RE = re.compile(r"\s+(?:of|from)\s+(?:the\s+)?[A-Z][\w.'’\-]*(?:\s+[A-Z][\w.'’\-]*){0,3}\s*$")


@dataclass
class _Cue:
    start: int
    end: int
    kind: str  # verb | agent | phrase


@dataclass
class _Who:
    name: str
    label: str | None
    conf: float
    cue: _Cue


class _Doc:
    """Everything attribution needs about one text."""

    def __init__(self, text: str, masked: str, mentions: list[_Mention], sent_starts: list[int],
                 paras: list[tuple[int, int]]) -> None:
        self.text, self.masked, self.mentions = text, masked, mentions
        self.sent_starts, self.paras = sent_starts, paras
        self.para_starts = [p[0] for p in paras]
        self.cues = [
            _Cue(m.start(), m.end(), m.lastgroup or "verb")
            for m in _CUE_RE.finditer(masked)
        ]
        self.cue_starts = [c.start for c in self.cues]
        prio = {"PER": 0, "ORG": 1, "LOC": 2, "MISC": 3, "UNK": 4}
        self.by_end: dict[int, _Mention] = {}
        for mt in mentions:
            cur = self.by_end.get(mt.end)
            if cur is None or (prio.get(mt.label, 5), -(mt.end - mt.start)) < (prio.get(cur.label, 5), -(cur.end - cur.start)):
                self.by_end[mt.end] = mt
        self.m_starts = [m.start for m in mentions]
        self.per = [m for m in mentions if m.label == "PER"]
        self.per_starts = [m.start for m in self.per]
        self.subj = [m for m in mentions if m.label in _SUBJ_LABELS and self._subject_like(m)]
        self.subj_starts = [m.start for m in self.subj]
        self.events: list[tuple[int, str, str | None]] = []  # (position, speaker, label) so far

    # -- helpers

    def _subject_like(self, m: _Mention) -> bool:
        """Mention at the start of its sentence or clause: only capitalised or lead words before."""
        lo = max(self.sent_floor(m.start), m.start - 120)
        seg = self.masked[lo:m.start]
        cut = 0
        for c in _CLAUSE_START_RE.finditer(seg):
            cut = c.end()
        return all(w[0].isupper() or w.lower() in _SUBJECT_LEAD for w in _WORD_RE.findall(seg[cut:]))

    def sent_floor(self, pos: int) -> int:
        i = bisect.bisect_right(self.sent_starts, pos) - 1
        return self.sent_starts[i] if i >= 0 else 0

    def sent_after(self, pos: int) -> int:
        i = bisect.bisect_right(self.sent_starts, pos)
        return self.sent_starts[i] if i < len(self.sent_starts) else len(self.text)

    def para_of(self, pos: int) -> int:
        return max(0, bisect.bisect_right(self.para_starts, pos) - 1)

    def mention_ending(self, pos: int, lo: int) -> _Mention | None:
        """The mention whose end is ``pos`` (trailing whitespace ignored), inside [lo, pos]."""
        while pos > lo and self.masked[pos - 1].isspace():
            pos -= 1
        m = self.by_end.get(pos)
        return m if m is not None and m.start >= lo else None

    def cues_in(self, lo: int, hi: int) -> list[_Cue]:
        i = bisect.bisect_left(self.cue_starts, lo)
        j = bisect.bisect_left(self.cue_starts, hi)
        return [c for c in self.cues[i:j] if c.end <= hi]

    # -- pronouns and nominals

    def _recent(self, pos: int, label: str | None, subjects: bool, any_mention: bool) -> tuple[str, str | None] | None:
        best: tuple[int, str, str | None] | None = None
        for p, name, lab in reversed(self.events):
            if p < pos and (label is None or lab == label):
                best = (p, name, lab)
                break
        pool, starts = (self.per, self.per_starts) if any_mention else (self.subj, self.subj_starts)
        if subjects or any_mention:
            i = bisect.bisect_left(starts, pos) - 1
            while i >= 0:
                m = pool[i]
                if m.end <= pos and (label is None or m.label == label):
                    if best is None or m.start > best[0]:
                        best = (m.start, m.name, m.label)
                    break
                i -= 1
        return (best[1], best[2]) if best else None

    def pronoun(self, word: str, pos: int) -> tuple[str, str | None] | None:
        w = word.lower()
        if w in ("he", "she"):
            return self._recent(pos, "PER", subjects=True, any_mention=False)
        if w in ("him", "her"):
            return self._recent(pos, "PER", subjects=False, any_mention=True)
        if w == "it":
            return self._recent(pos, "ORG", subjects=True, any_mention=False)
        return self._recent(pos, None, subjects=False, any_mention=False)  # they / them

    def sentence_subject(self, lo: int, hi: int) -> tuple[str, str | None, float] | None:
        """The subject of the sentence [lo, hi) when it is a name or he/she before a verb.

        "Cruz blamed the law on "knuckleheaded politicians."": no speech verb, but the
        sentence's subject is who is quoted. Only the first clause subject counts.
        """
        hi = min(hi, lo + 300)
        i = bisect.bisect_left(self.subj_starts, lo)
        m = self.subj[i] if i < len(self.subj) and self.subj[i].start < hi else None
        seg_end = m.start if m is not None else hi
        p = _SUBJ_PRONOUN_START_RE.match(self.masked, lo, seg_end)
        if p:
            r = self.pronoun(p.group(1), lo + p.start(1))
            return (r[0], r[1], 0.5) if r else None
        if m is None or m.end > hi or self.para_of(m.start) != self.para_of(lo):
            return None
        # Only a short lead-in before it ("On Monday, Cruz ..."), and a lowercase verb after it.
        if m.start - lo > _SUBJ_LEAD or not _VERB_AFTER_RE.match(self.masked, m.end, hi):
            return None
        return m.name, _label(m.label), 0.5

    # -- who is next to a cue

    def who_before(self, cue: _Cue, lo: int) -> tuple[str, str | None, float] | None:
        lo = max(lo, cue.start - 250)
        seg = self.masked[lo:cue.start]
        j = _PRE_JUNK_RE.search(seg, max(0, len(seg) - 80))
        k = lo + (j.start() if j else len(seg))
        m = self.mention_ending(k, lo)
        if m is not None:
            return m.name, _label(m.label), 1.0
        head = self.masked[lo:k]
        o = _OF_PLACE_RE.search(head, max(0, len(head) - 60))
        if o:  # "Chancellor Angela Merkel of Germany condemned"
            m = self.mention_ending(lo + o.start(), lo)
            if m is not None and m.label == "PER":
                return m.name, "PER", 0.95
        p = _PRONOUN_BEFORE_RE.search(head, max(0, len(head) - 10))
        if p:
            r = self.pronoun(p.group(1), lo + p.start())
            return (r[0], r[1], 0.85) if r else None
        a = _APPOSITION_RE.search(head, max(0, len(head) - 125))
        if a:
            m = self.mention_ending(lo + a.start(), lo)
            if m is not None:
                return m.name, _label(m.label), 0.95
        c = _COMMA_END_RE.search(head, max(0, len(head) - 5))
        if c:
            # "A top strategist, John Weaver, tells ...": the name is the apposition itself.
            m = self.mention_ending(lo + c.start(), lo)
            if m is not None and m.label in ("PER", "UNK") and _COMMA_END_RE.search(self.masked, max(lo, m.start - 3), m.start):
                return m.name, _label(m.label), 0.85
        if a:
            head = head[:a.start()]  # "The former congressman, who led ..., thinks"
        nm = _NOMINAL_BEFORE_RE.search(head, max(0, len(head) - 120))
        nom = _nominal_name(nm.group("det"), nm.group("np")) if nm else None
        if nom and nm.group("det").lower() != "the":
            return nom[0], nom[1], 0.7  # "a State Department official", "Trump's campaign"
        r = _ROLE_BEFORE_RE.search(head, max(0, len(head) - 60))
        if r:
            who = self._recent(lo + r.start(), "PER", subjects=True, any_mention=False)
            if who:
                return who[0], who[1], 0.7
        if nom:
            return nom[0], nom[1], 0.65  # "the Clinton campaign"
        return None

    def participle_subject(self, lo: int, hi: int) -> tuple[str, str | None, float] | None:
        """"Sanders compared himself to Clinton, saying ...": the subject of the sentence."""
        i = bisect.bisect_left(self.subj_starts, lo)
        for m in self.subj[i:i + 3]:  # "In Ames, Iowa, on Sunday, Mrs. Clinton tried ..."
            if m.start >= hi or m.start - lo > _PART_LEAD:
                return None
            if _ANY_VERB_AFTER_RE.match(self.masked, m.end, hi):
                return m.name, _label(m.label), 0.75
        return None

    def nominal_after(self, pos: int, hi: int) -> tuple[str, str | None, float] | None:
        """"said a State Department official", "according to one Clinton aide"."""
        nm = _NOMINAL_AFTER_RE.match(self.masked[pos:min(hi, pos + 150)])
        nom = _nominal_name(nm.group("det"), nm.group("np")) if nm else None
        return (nom[0], nom[1], 0.7) if nom else None

    def who_after(self, pos: int, hi: int, strict: bool) -> tuple[str, str | None, float] | None:
        r = self._who_after(pos, hi, strict)
        return r if r is not None else self.nominal_after(pos, hi)

    def _who_after(self, pos: int, hi: int, strict: bool) -> tuple[str, str | None, float] | None:
        hi = min(hi, pos + 150)
        seg = self.masked[pos:hi]
        if not strict:
            o = _OBJ_PRONOUN_RE.match(seg)
            if o:
                r = self.pronoun(o.group(1), pos)
                return (r[0], r[1], 0.8) if r else None
        else:
            o = _SUBJ_PRONOUN_AFTER_RE.match(seg)
            if o:
                r = self.pronoun(o.group(1), pos)
                return (r[0], r[1], 0.8) if r else None
        i = bisect.bisect_left(self.m_starts, pos)
        while i < len(self.mentions) and self.mentions[i].start < hi:
            m = self.mentions[i]
            if m.end > hi:
                return None
            if not _AFTER_GAP_RE.match(self.masked[pos:m.start]):
                return None
            # the longest mention starting here (mentions are sorted by start, longest first)
            if strict and not _AFTER_END_RE.match(self.masked[m.end:hi] if m.end < hi else ""):
                i += 1
                continue
            return m.name, _label(m.label), 0.95
        return None

    def resolve(self, cue: _Cue, lo: int, hi: int) -> _Who | None:
        """Speaker for one cue, searching names in [lo, hi)."""
        if cue.kind == "agent":
            r = self.who_after(cue.end, hi, strict=False)
        else:
            by = _BY_AFTER_RE.match(self.masked, cue.end, min(hi, cue.end + 10))
            if cue.kind == "verb" and by:
                r = self.who_after(by.end(), hi, strict=False)  # passive: "criticized by X"
            else:
                r = None
                word = self.masked[cue.start:cue.end]
                if word.endswith("ing") and _PARTICIPLE_LEAD_RE.search(self.masked, max(lo, cue.start - 8), cue.start):
                    r = self.participle_subject(max(lo, self.sent_floor(cue.start)), cue.start)
                if r is None:
                    r = self.who_before(cue, lo)
                if r is None and self.masked[cue.start:cue.end] in _INVERTIBLE:
                    r = self.who_after(cue.end, hi, strict=True)
        if r is None:
            return None
        name, label, conf = r
        return _Who(name, label, conf, cue)


def _label(label: str) -> str | None:
    return label if label in ("PER", "ORG") else None


# --------------------------------------------------------------------------- transcripts

_TURN_RE = re.compile(r"[ \t]*((?:[A-Z][A-Z'’.\-]+)(?:[ \t]+[A-Z][A-Z'’.\-]+){0,2})[ \t]*:[ \t]+(?=\S)")
_NOT_SPEAKERS = frozenset(
    "UPDATE UPDATED NOTE EDITOR EDITOR'S CORRECTION WATCH READ MORE RELATED PHOTO PHOTOS VIDEO "
    "BREAKING EXCLUSIVE ANALYSIS OPINION SOURCE SOURCES CLICK ALSO SEE WARNING ADVERTISEMENT "
    "TRANSCRIPT DATE TIME LOCATION SUBJECT".split()
)


def _transcript_turns(text: str, paras: list[tuple[int, int]], mentions: list[_Mention]) -> list[Quote]:
    """'PENCE: I think...' paragraphs (at least two in the article) as quotes with cue ':'."""
    found = []
    for ps, pe in paras:
        m = _TURN_RE.match(text, ps, pe)
        if not m or text[m.end()] in "\"“„«":
            continue
        words = m.group(1).split()
        if any(w.strip(".") in _NOT_SPEAKERS for w in words) or len(m.group(1).replace(".", "")) < 2:
            continue
        t = _trimmed(text, m.end(), pe)
        if t:
            found.append((m.group(1), t))
    if len(found) < 2:
        return []
    pers = {}
    for mt in mentions:
        if mt.label == "PER":
            pers.setdefault(name_tokens(mt.name), mt.name)
    out = []
    for raw, (s, e) in found:
        tk = tuple(w for w in name_tokens(raw) if w.rstrip(".") not in _TITLES)
        hits = {canon for ftk, canon in pers.items() if tk and contains_tokens(ftk, tk)}
        name = hits.pop() if len(hits) == 1 else " ".join(w.capitalize() for w in tk) or raw.title()
        out.append(Quote(s, e, text[s:e], name, "PER", ":", 0.8 if len(hits) == 0 else 0.9))
    return out


# --------------------------------------------------------------------------- main entry

def _scan(text: str) -> tuple[list[tuple[int, int]], list[_Span]]:
    paras = _paragraphs(text)
    spans: list[_Span] = []
    for i, (ps, pe) in enumerate(paras):
        spans.extend(_scan_paragraph(text, ps, pe, i))
    return paras, spans


def _mask(text: str, spans: list[_Span]) -> str:
    parts, pos = [], 0
    for sp in spans:
        parts.append(text[pos:sp.start])
        parts.append(_MASK * (sp.end - sp.start))
        pos = sp.end
    parts.append(text[pos:])
    return "".join(parts)


def _attribute(doc: _Doc, sp: _Span, nxt: _Span | None) -> _Who | None:
    """Speaker from a cue in the quote's own sentence, or None."""
    text, masked = doc.text, doc.masked
    ps, pe = doc.paras[sp.para]
    # Right side: from the closing mark to the sentence end / next quote / paragraph end.
    r_lo = sp.mark_end
    p = r_lo
    while p < pe and masked[p].isspace():
        p += 1
    r_hi = min(pe, doc.sent_after(p), nxt.mark_start if nxt and nxt.para == sp.para else pe)
    # Left side: from the sentence start to the opening mark.
    l_lo = max(ps, doc.sent_floor(sp.mark_start))
    l_hi = sp.mark_start

    last = text[sp.end - 1] if sp.end > sp.start else ""
    complete = last in ",.!?;:…—-" or masked[r_lo:r_lo + 2].lstrip()[:1] in (",", "—", "–")
    ended = last in ".!?…"

    def right() -> _Who | None:
        for cue in doc.cues_in(r_lo, min(r_hi, r_lo + 221))[:4]:
            if cue.start - r_lo > 220:
                break
            who = doc.resolve(cue, r_lo, r_hi)
            if who:
                near = cue.start - r_lo <= 90
                who.conf *= (0.9 if near else 0.75) * (0.85 if ended and masked[p:p + 1].isupper() else 1.0)
                return who
        return None

    def left() -> _Who | None:
        cues = doc.cues_in(max(l_lo, l_hi - 600), l_hi)[-4:]  # nearest few: bounded work per quote
        for rank, cue in enumerate(reversed(cues)):
            who = doc.resolve(cue, l_lo, l_hi)
            if who:
                tail = masked[cue.end:l_hi].strip()
                direct = tail in ("", ":", ",") or (len(tail) < 30 and tail.endswith(":"))
                who.conf *= (0.9 if direct else 0.75) * (1.0 if rank == 0 else 0.9)
                return who
        head = masked[l_lo:l_hi]
        if _COLON_END_RE.search(head, max(0, len(head) - 5)):
            k = l_lo + head.rstrip().rfind(":")
            m = doc.mention_ending(k, l_lo)
            if m is not None:
                return _Who(m.name, _label(m.label), 0.8, _Cue(k, k + 1, "colon"))
        if not head.strip() and sp.para > 0:
            # A quote opening its paragraph, introduced by the paragraph before: "Breitbart
            # News responded:" / "Reporter Jomana Karadsheh says:"
            pps, ppe = doc.paras[sp.para - 1]
            prev = masked[max(pps, ppe - 300):ppe].rstrip()
            if prev.endswith(":"):
                k = max(pps, ppe - 300) + len(prev) - 1
                lo2 = max(pps, doc.sent_floor(k))
                for cue in reversed(doc.cues_in(max(lo2, k - 300), k)[-3:]):
                    who = doc.resolve(cue, lo2, k)
                    if who:
                        who.conf *= 0.8
                        return who
                m = doc.mention_ending(k, lo2)
                if m is not None:
                    return _Who(m.name, _label(m.label), 0.7, _Cue(k, k + 1, "colon"))
        return None

    for side in ((right, left) if complete else (left, right)):
        who = side()
        if who:
            return who
    return None


def analyse(text: str, entities: Sequence[Entity], indirect: bool) -> tuple[list[Entity], list[Quote]]:
    """The quotes stage's work on one article: its entities with their canonical names, and its
    quotes with their speakers."""
    canonical = canonicalize(entities)
    return canonical, find_quotes(text, canonical, indirect=indirect)


def find_quotes(text: str, entities: Sequence[Entity] = (), indirect: bool = False) -> list[Quote]:
    """Direct quotes in ``text`` with their speakers, sorted by start (see module docstring).

    With ``indirect=True`` reported speech ("Singh said the troops would be targets") is added
    as ``kind="indirect"`` quotes whose span is the reported clause.
    """
    if not text:
        return []
    paras, spans = _scan(text)
    masked = _mask(text, spans)
    inside = _Inside(spans)
    mentions = _build_mentions(text, masked, entities, inside)
    turns = _transcript_turns(text, paras, mentions)
    if turns:
        # Quotes inside a transcript turn belong to the turn.
        t_starts = [t.start for t in turns]
        def in_turn(sp: _Span) -> bool:
            i = bisect.bisect_right(t_starts, sp.start) - 1
            return i >= 0 and sp.start < turns[i].end
        spans = [sp for sp in spans if not in_turn(sp)]

    sent_starts = _sentence_starts(text, masked, paras, spans)
    doc = _Doc(text, masked, mentions, sent_starts, paras)

    # Pass 1: cue-based attribution, in text order so pronouns see earlier speakers.
    whos: list[_Who | None] = []
    for i, sp in enumerate(spans):
        who = _attribute(doc, sp, spans[i + 1] if i + 1 < len(spans) else None)
        whos.append(who)
        if who:
            doc.events.append((sp.start, who.name, who.label))

    # Pass 2: quotes without a cue inherit from a neighbour (split quotes, continued quotes).
    for i, sp in enumerate(spans):
        if whos[i] is not None:
            continue
        whos[i] = _signoff(doc, sp) or _inherit(doc, spans, whos, i)

    out = list(turns)
    if indirect:
        out.extend(_indirect(doc, spans))
    for sp, who in zip(spans, whos):
        if not _is_quote(text, sp, who, _cue_in_sentence(doc, sp)):
            continue
        q = Quote(sp.start, sp.end, text[sp.start:sp.end])
        if who is not None:
            cue_text = text[who.cue.start:who.cue.end] if who.cue.kind != "inherit" else None
            q = Quote(sp.start, sp.end, text[sp.start:sp.end], who.name, who.label, cue_text,
                      round(max(0.0, min(1.0, who.conf)), 3))
        out.append(q)
    out.sort(key=lambda q: (q.start, q.end))
    return out


# --------------------------------------------------------------------------- indirect speech

# Verbs that introduce reported speech ("Singh said the troops would be targets").
_REPORT_VERBS = frozenset(
    """said says say told tells added adds argued argues claimed claims warned warns insisted insists
    noted notes explained explains stated states wrote writes tweeted suggested suggests predicted
    predicts acknowledged acknowledges admitted admits announced announces believes believed thinks
    thought contended contends maintained maintains asserted asserts conceded concedes alleged
    alleges confirmed confirms denied denies stressed stresses emphasized emphasizes reiterated
    promised promises vowed vows pledged pledges indicated hinted signaled recalled countered""".split()
)
# After "told": the hearer, then the clause ("told reporters (that) ...", "told CNN ...").
_TOLD_OBJ_RE = re.compile(r"\s+(?:(?:him|her|them|us|me|reporters|journalists|lawmakers|supporters|the\s+\w+|[A-Z][\w.'’\-]*(?:\s+[A-Z][\w.'’\-]*){0,3})\s+)")
# The clause: "that ..." or a subject-like opening word, at least a few words long, no quote first.
_CLAUSE_RE = re.compile(
    r"\s*,?\s*(?=(?:that\s+)?(?:the|a|an|he|she|they|it|we|i|you|his|her|their|its|this|these|those|there|"
    r"some|many|most|no|[A-Z][\w'’\-]*)\s"
    r"|(?!(?:on|in|at|during|after|before|to|with|from|for|about|last|this|earlier|later|yesterday|today|"
    r"repeatedly|again|also|once|in|by|as|when|while)\b)[\w'’\-]+(?:\s+[\w'’\-]+){0,4}\s+(?:would|will|was|were|is|are|had|has|have|could|should|might|can|must|did|"
    r"does|do|may)\s)"
)
_LATER_THAT_RE = re.compile(r"[^,;:\x00\"“”.]{1,50}?\sthat\s")
_CLAUSE_WORDS_RE = re.compile(r"[^\W_]+")
_SENT_END_TRAIL = " \t\n.,;!?\"”’)"


def _indirect(doc: _Doc, spans: list[_Span]) -> list[Quote]:
    """Reported speech: "NAME said (that) CLAUSE", "according to NAME, CLAUSE" and
    "CLAUSE, according to NAME" / "CLAUSE, NAME said.", each with a named (or resolved) speaker."""
    text, masked = doc.text, doc.masked
    out: list[Quote] = []
    taken_until = -1
    for cue in doc.cues:
        if cue.start < taken_until:
            continue
        word = masked[cue.start:cue.end]
        s_lo, s_hi = doc.sent_floor(cue.start), doc.sent_after(cue.start)
        ps, pe = doc.paras[doc.para_of(cue.start)]
        s_hi = min(s_hi, pe)
        span: tuple[int, int] | None = None
        who: _Who | None = None
        if cue.kind == "agent" and word.lower().startswith("according"):
            who = doc.resolve(cue, s_lo, s_hi)
            before = masked[s_lo:cue.start].rstrip()
            if before.endswith(",") and len(_CLAUSE_WORDS_RE.findall(before)) >= 4:
                span = (s_lo, s_lo + len(before) - 1)  # "CLAUSE, according to X."
            else:
                c = masked.find(",", cue.end, s_hi)
                if c > 0 and c - cue.end < 80:
                    span = (c + 1, s_hi)  # "According to X, CLAUSE."
        elif cue.kind == "verb" and word in _REPORT_VERBS:
            who = doc.resolve(cue, s_lo, s_hi)
            if who is None or who.cue.kind != "verb":
                continue
            before = masked[s_lo:cue.start]
            # Nothing but the sentence's end after the cue ("..., Singh said."): not a colon or
            # a direct quote ("Singh said: "…"").
            tail = masked[cue.end:s_hi].strip(_SENT_END_TRAIL)
            if before.strip().endswith(",") is False and who.name and masked.rfind(",", s_lo, cue.start) > s_lo and \
                    not tail and len(_CLAUSE_WORDS_RE.findall(before)) >= 6:
                # "CLAUSE, Singh said." / "CLAUSE, said Singh."
                comma = masked.rfind(",", s_lo, cue.start)
                span = (s_lo, comma)
            elif not tail and before.rstrip().endswith(","):
                comma = len(before.rstrip()) - 1 + s_lo
                span = (s_lo, comma)
            else:
                pos = cue.end
                if word in ("told", "tells"):
                    o = _TOLD_OBJ_RE.match(masked, pos, s_hi)
                    if not o:
                        continue
                    pos = o.end() - 1
                c = _CLAUSE_RE.match(masked, pos, s_hi)
                if c:
                    span = (c.end(), s_hi)
                else:  # "said Monday that", "said in a statement that"
                    t = _LATER_THAT_RE.match(masked, pos, min(s_hi, pos + 60))
                    if not t:
                        continue
                    span = (t.end() - 5, s_hi)
        if span is None or who is None or who.label not in ("PER", "ORG", None):
            continue
        t = _trimmed_clause(text, masked, span[0], span[1])
        if t is None:
            continue
        a, b = t
        if masked[a] in _MASK or text[a] in "\"“„«" or len(_CLAUSE_WORDS_RE.findall(masked[a:b])) < 4:
            continue  # a direct quote, or too short to be a claim
        if masked[a:b].count(_MASK) * 2 > b - a:
            continue  # mostly a direct quote
        out.append(Quote(a, b, text[a:b], who.name, who.label, text[cue.start:cue.end],
                         round(max(0.0, min(1.0, who.conf * 0.8)), 3), kind="indirect"))
        taken_until = b
    return out


def _trimmed_clause(text: str, masked: str, a: int, b: int) -> tuple[int, int] | None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1] in " \t\n.,;:!?":
        b -= 1
    return (a, b) if b - a >= 10 else None


_SMALL_WORDS = frozenset("a an the of and or in on with for to at by from is as vs de la".split())
_TITLE_WORD_RE = re.compile(r"[^\W\d_][\w'’\-]*")
_TITLE_RULE = 1
_PART_LEAD = 100
_SUBJ_LEAD = 100
_SUBJ_LABELS = ("PER", "ORG", "UNK")  # UNK: "Trump" in an article that never names him in full
# Words before a Title Case quote that make it a name of a work: "told "Fox and Friends"",
# "starred in "Parks and Recreation"", "host of "The Nightly Show"", "CNN's "State of the Union"".
_TITLE_CONTEXT_RE = re.compile(r"(?:['’]s?|\b(?:on|in|of|at|told|show|program|programme|titled|entitled|called|book|film|movie|song|slogan|hashtag|dubbed|named|host|starred|starring|reads|play|musical|series|episode|novel|album|memoir|podcast|pseudonym|column|newsletter|magazine|documentary|wrote|version))\s*,?\s*$")
_WORK_CONTEXT_RE = re.compile(r"\b(?:show|program|programme|titled|entitled|book|film|movie|song|slogan|hashtag|album|series|memoir|podcast|pseudonym|column|newsletter|magazine|documentary|called|version of)\s*,?\s*$")
_BYLINE_AFTER_RE = re.compile(r"\s*by\s+(?:the\s+)?[A-Z]")
_SHOW_CONTEXT_RE = re.compile(r"(?:['’]s|\b(?:on|told|host of|starred in|appeared on|appearing on))\s*$")
_NO_LETTERS_RE = re.compile(r"^[@#]?[\w\-:./]*$")


def _cue_in_sentence(doc: _Doc, sp: _Span) -> bool:
    """A speech cue somewhere in the quote's sentence (a word quoted from someone's words)."""
    lo = max(doc.sent_floor(sp.mark_start), sp.mark_start - 400)
    hi = min(doc.sent_after(sp.mark_end), sp.mark_end + 400)
    return bool(doc.cues_in(lo, hi))


def _is_quote(text: str, sp: _Span, who: _Who | None, cued: bool = False) -> bool:
    """Drop what only looks like a quote: markup attributes, titles, unattributed scare words.

    * ``tweet_id="672..."``: a mark right after ``=`` is markup;
    * a handle, number or date alone (``"@SpeakerRyan"``, ``"2015-12-02"``);
    * a headline followed by its byline (``"Pop-up art show opens," by DNAinfo's Eddie Small``);
    * a title of a show, book or slogan in Title Case (``"Face the Nation"``, ``"Make
      America Great Again"``): names of works, not someone's words;
    * a single word nobody is said to have said (``the "establishment" candidate``).
    """
    if sp.mark_start > 0 and text[sp.mark_start - 1] == "=":
        return False
    if text[sp.end - 1:sp.end] in (",", ".") and _BYLINE_AFTER_RE.match(text, sp.mark_end):
        return False  # a headline with its byline: "Sam Mendes leaves 'Chocolate Factory'," by Times' Michael Paulson
    body = text[sp.start:sp.end]
    if _NO_LETTERS_RE.match(body) and (not any(ch.isalpha() for ch in body) or body[0] in "@#" or " " not in body and any(ch.isdigit() for ch in body)):
        return False
    words = _TITLE_WORD_RE.findall(body)
    if len(words) == 1 and " " not in body.strip() and who is None and not cued:
        return False
    if len(words) == 1 and words[0][0].isupper() and (
            _WORK_CONTEXT_RE.search(text, max(0, sp.mark_start - 14), sp.mark_start)
            or not words[0].isupper() and _SHOW_CONTEXT_RE.search(text, max(0, sp.mark_start - 14), sp.mark_start)):
        return False  # the film "Trainwreck", the hashtag "Bernie", told NBC's "Today"

    weak = who is None or (who.cue.kind == "inherit" and who.conf < 0.5)  # no cue of its own
    if _TITLE_RULE and 2 <= len(words) <= 7 and (weak or _TITLE_RULE == 2 or _TITLE_CONTEXT_RE.search(text, max(0, sp.mark_start - 12), sp.mark_start)):
        sig = [w for w in words if w.lower() not in _SMALL_WORDS]
        if sig and words[0][0].isupper() and all(w[0].isupper() for w in sig) and body.strip(" ,.!?;:…")[-1:].isalnum() | (body[-1:] in ",."):
            if not any(w in ("I", "We", "You", "My", "Our") for w in words[1:]):
                return False
    return True


_SIGNOFF_RE = re.compile(r"[^\S\n]*[-—–―]+[^\S\n]*(?=[A-Z])")  # [^\S\n]: spaces, tabs, no-break spaces


def _signoff(doc: _Doc, sp: _Span) -> _Who | None:
    """A quote alone on its line, signed after a dash on the same or the next line.

    ``"Quote." — John Smith`` and vox-pop lists (``“…”― Pamela Padilla`` one per line), or a
    quote paragraph followed by ``-Michelle Marks, Philadelphia.``.
    """
    masked = doc.masked
    ps, pe = doc.paras[sp.para]
    line_start = max(ps, masked.rfind("\n", ps, sp.mark_start) + 1)
    if masked[line_start:sp.mark_start].strip():
        return None
    line_end = masked.find("\n", sp.mark_end, pe)
    line_end = pe if line_end < 0 else line_end
    if _SIGNOFF_RE.match(masked, sp.mark_end, min(line_end, sp.mark_end + 10)):
        nps, npe = sp.mark_end, line_end  # "Quote." — John Smith
    elif masked[sp.mark_end:line_end].strip(" \t\n.,"):
        return None
    elif line_end < pe:
        nps = line_end + 1  # the next line of the paragraph
        npe = masked.find("\n", nps, pe)
        npe = pe if npe < 0 else npe
    elif sp.para + 1 < len(doc.paras):
        nps, npe = doc.paras[sp.para + 1]
    else:
        return None
    d = _SIGNOFF_RE.match(masked, nps, min(npe, nps + 10))
    if not d or npe - nps > 250:
        return None
    i = bisect.bisect_left(doc.m_starts, d.end())
    while i < len(doc.mentions) and doc.mentions[i].start < min(npe, d.end() + 40):
        m = doc.mentions[i]
        gap = masked[d.end():m.start]
        if m.end <= npe and all(w[:1].isupper() for w in gap.split()) and m.label in ("PER", "UNK"):
            dash = d.group().strip()
            a = masked.index(dash, d.start())
            return _Who(m.name, _label(m.label), 0.7, _Cue(a, a + len(dash), "signoff"))
        i += 1
    return None


def _inherit(doc: _Doc, spans: list[_Span], whos: list[_Who | None], i: int) -> _Who | None:
    sp = spans[i]

    def copy(j: int, conf: float) -> _Who | None:
        w = whos[j]
        if w is None:
            return None
        return _Who(w.name, w.label, min(w.conf, conf), _Cue(w.cue.start, w.cue.end, "inherit"))

    sent = doc.sent_floor(sp.mark_start)
    # A quote split by its attribution or continuing in the same sentence.
    for j in (i - 1, i + 1):
        if 0 <= j < len(spans) and spans[j].para == sp.para and doc.sent_floor(spans[j].mark_start) == sent:
            w = copy(j, 0.7)
            if w:
                return w
    # No cue: the subject of the quote's own sentence ("Cruz blamed it on "politicians."").
    lo = doc.sent_floor(sp.mark_start)
    if lo < sp.mark_start and doc.masked[lo:sp.mark_start].strip():
        r = doc.sentence_subject(lo, sp.mark_start)
        if r is not None:
            return _Who(r[0], r[1], r[2], _Cue(sp.mark_start, sp.mark_start, "inherit"))
    # Multi-paragraph quote: the previous paragraph ended inside an unclosed quote.
    if i > 0 and spans[i - 1].para == sp.para - 1 and not spans[i - 1].closed:
        ps = doc.paras[sp.para][0]
        if not doc.masked[ps:sp.mark_start].strip():
            w = copy(i - 1, 0.8)
            if w:
                return w
    # The first part of a multi-paragraph quote, attributed only further on.
    if not sp.closed and i + 1 < len(spans) and spans[i + 1].para == sp.para + 1:
        ps = doc.paras[sp.para + 1][0]
        if not doc.masked[ps:spans[i + 1].mark_start].strip():
            w = copy(i + 1, 0.75)
            if w:
                return w
    # Another quote of the same paragraph.
    for j, conf in ((i - 1, 0.6), (i + 1, 0.5)):
        if 0 <= j < len(spans) and spans[j].para == sp.para:
            w = copy(j, conf)
            if w:
                return w
    # A paragraph that opens with an unattributed quote usually continues the last speaker.
    if i > 0 and spans[i - 1].para == sp.para - 1:
        ps = doc.paras[sp.para][0]
        if not doc.masked[ps:sp.mark_start].strip():
            return copy(i - 1, 0.4)
    # ... or the person the paragraph before (without quotes) was about.
    if sp.para > 0 and (i == 0 or spans[i - 1].para < sp.para - 1):
        ps = doc.paras[sp.para][0]
        pps, ppe = doc.paras[sp.para - 1]
        if not doc.masked[ps:sp.mark_start].strip():
            k = bisect.bisect_left(doc.subj_starts, ppe) - 1
            lo = max(pps, doc.sent_floor(ppe - 1))
            while k >= 0 and doc.subj[k].start >= lo and doc.subj[k].label != "PER":
                k -= 1
            if k >= 0 and doc.subj[k].start >= lo and doc.cues_in(doc.subj[k].end, ppe):
                # only when that sentence has the person speak ("Smith said he disagreed.")
                m = doc.subj[k]
                return _Who(m.name, _label(m.label), 0.35, _Cue(sp.mark_start, sp.mark_start, "inherit"))
    return None
