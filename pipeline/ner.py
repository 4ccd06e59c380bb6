"""Named-entity recognition, shaped like a transformers pipeline.

preprocess: split the text into words (CoNLL-like tokenisation, with character spans),
            tokenise all words once, cut the subwords into overlapping windows;
forward:    run windows from many articles together, length-sorted, under inference_mode, several
            short windows a row where that pays (each attending to itself only);
postprocess: give each word the prediction of the window where it sits most centrally
            (so an entity on a window boundary is found once), decode BIO tags into
            entities whose spans index the ORIGINAL text, whatever the tokenizer does.
"""
from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.models import CASE_PAD, DIGIT, MIXED, OTHER, TITLE, UPPER, LoadedModel, case_class
from pipeline.passes import attention_mask, block_attention, filler_rows, input_rows, padded, padded_width, pass_batches, run_passes
from pipeline.progress import process_progress
from pipeline.records import Article, Entity

LABELS = ("PER", "ORG", "LOC", "MISC")
# Other models' label sets (OntoNotes and friends) map onto the four CoNLL types.
LABEL_ALIASES = {
    "PER": "PER", "PERSON": "PER", "ORG": "ORG", "ORGANIZATION": "ORG", "LOC": "LOC", "LOCATION": "LOC",
    "GPE": "LOC", "FAC": "LOC", "MISC": "MISC", "NORP": "MISC", "EVENT": "MISC", "PRODUCT": "MISC",
    "WORK_OF_ART": "MISC", "LAW": "MISC", "LANGUAGE": "MISC",
}

# Words as CoNLL-2003 tokenises them: acronyms with dots ("U.S."), words joined by hyphens
# or inner dots, clitics ("'s", "n't" keeps "n" with the word before), single punctuation.
# Abbreviations written before a name keep their full stop, as CoNLL writes them ("Mr.", "Sen.",
# "St. Louis"), and so do initials ("W."): split off, the stop ended a sentence, and "George W. Bush"
# came out as two people, "George W" and "Bush" (README "Default models"). Suffixes and company
# words ("Jr.", "Inc.") are left out: a sentence often ends with them.
PERSON_TITLES = frozenset(
    "mr mrs ms dr prof gen gens sen sens rep reps gov lt col capt sgt adm maj cmdr cpl pvt brig "
    "rev fr msgr pres amb hon atty supt det insp".split())
PLACE_PREFIXES = frozenset("st ste mt ft".split())
# sorted: a frozenset's order changes between runs, and the pattern should not (the order does
# not change what matches: each alternative must be followed by the stop)
_ABBREVIATED = "|".join(sorted(PERSON_TITLES | PLACE_PREFIXES))
# The three kinds of words with a stop all start with a few letters and a stop; the lookahead tries
# them only there, which took splitting from 2.6 to 1.0 ms an article (bench/RESULTS.md "Python around
# the forwards"); the words found are the same.
_LETTERS_AND_STOP = r"(?=[^\W\d_]{1,%d}\.)" % max(map(len, PERSON_TITLES | PLACE_PREFIXES))
WORD_RE = re.compile(_LETTERS_AND_STOP + r"(?:(?:[^\W\d_]\.){2,}|(?-i:[A-Z])\.(?!\w)|(?:" + _ABBREVIATED + r")\.(?!\w))"
                     r"|['’](?:s|re|ve|ll|d|m|t)\b|\w+(?:[-.&]\w+)*|[^\w\s]", re.IGNORECASE)
# A person's title is no part of the name (CoNLL and OntoNotes tag it O); with its stop it reads
# like a name word, and the model took "Ms. Brainard" and "Sen." alone for people.
_TITLE_WORDS = frozenset(f"{t}." for t in PERSON_TITLES) | {"mr", "mrs", "ms", "dr"}
WORD_PIECE_CACHE_WORDS = 100_000  # distinct words whose subword ids are kept (ner.word_pieces): about 24 MB
CACHED_WORD_MAX_CHARS = 64
MAX_SUBWORDS_PER_WORD = 16  # a 500 kB "word" must not fill every window; its first subword carries the label

DEFAULT_WINDOW_TOKENS = 256
DEFAULT_STRIDE_TOKENS = 64
# Articles per RunInference batch; their windows are length-sorted together, so a bigger pool pads
# less. python -m bench, N=300, 2-core AMX VM, tcmalloc: 16 -> 64 articles took NER padding from
# +15.7 % to +4.6 % in bf16 (64 windows a pass) and from +3.8 % to +1.1 % in int8 (16 a pass).
DEFAULT_ARTICLES_PER_BATCH = 64


def split_words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in WORD_RE.finditer(text)]


@dataclass
class Window:
    input_ids: list[int]
    case_ids: list[int]
    first_word: int  # index of the first word in this window
    word_positions: list[int]  # token position of each word's first subword


@dataclass
class NerDoc:
    text: str
    word_spans: list[tuple[int, int]]
    windows: list[Window]


def preprocess(loaded: LoadedModel, text: str, word_spans: Sequence[tuple[int, int]] | None = None,
               window_tokens: int = DEFAULT_WINDOW_TOKENS, stride_tokens: int = DEFAULT_STRIDE_TOKENS,
               skip_nameless: bool = True) -> NerDoc:
    """Words, their subword ids and the windows the model reads. ``skip_nameless``: no window for a
    sentence that cannot hold a name (:func:`may_name`) in a text that capitalises names; its words
    are tagged O without running the model (README "Default models")."""
    spans = list(word_spans) if word_spans is not None else split_words(text)
    if not spans:
        return NerDoc(text, [], [])
    words = [text[s:e] for s, e in spans]
    per_word = word_pieces(loaded, words)
    cases = [case_class(w) for w in words]
    budget = max(8, min(window_tokens, loaded.max_length) - 2)
    stride = min(stride_tokens, budget // 2)
    # read once: transformers looks a special token's id up on every attribute access
    special = loaded.tokenizer.cls_token_id, loaded.tokenizer.sep_token_id
    sentences = sentence_ranges(text, spans)
    if skip_nameless and "O" in loaded.labels and capitalises_names(words, cases, sentences):
        sentences = [(first, stop) for first, stop in sentences if may_name(words, cases, first, stop)]
    windows = [w for first, stop in sentences for w in _windows(special, per_word, cases, budget, stride, first, stop)]
    return NerDoc(text, spans, windows)


# Sentence-initial words that are never part of a name: articles, pronouns, conjunctions,
# prepositions, auxiliaries, wh-words and common adverbs. Words that are also names are left out
# ("May", "Will", "Bill", "Mark", "Grant", "Rather", "Today").
NAMELESS_STARTERS = frozenset('''
    a an the this that these those some any many most much more few several each every all both either neither no
    other another such what which whatever whichever one
    i he she it we they you his her hers its our their your my me him us them there here who whom whose
    someone something everyone everything nobody nothing none anyone anything
    and but or nor so yet for because although though while whereas if unless until since when whenever where
    wherever after before once as than whether
    in on at by with without from to of about above across against along among amid around behind below beneath
    beside besides between beyond despite during except inside into like near off onto out outside over past per
    through throughout toward towards under unlike up upon via within
    not now then still even also just only already again however instead meanwhile moreover otherwise perhaps thus
    therefore indeed later earlier yesterday tomorrow yes well why how too very often never always sometimes soon
    almost nearly maybe certainly actually
    is are was were be been being do does did has have had can could would should might must shall
    '''.split())
_CAPITALISED = frozenset((TITLE, UPPER, MIXED))


def _lead(cases: Sequence[int], first: int, stop: int) -> int:
    """The sentence's first word with letters: past an opening quote mark, a dash or a number."""
    while first < stop - 1 and cases[first] in (DIGIT, OTHER):
        first += 1
    return first


def may_name(words: Sequence[str], cases: Sequence[int], first: int, stop: int) -> bool:
    """Whether words[first:stop] (a sentence) can hold a name: a capitalised word other than a
    sentence-initial word from NAMELESS_STARTERS, and "I" ("He and I said it was over." and
    '"We will not back down," he said.' cannot; "Putin said" can)."""
    lead = _lead(cases, first, stop)
    if cases[lead] in _CAPITALISED and words[lead].lower() not in NAMELESS_STARTERS:
        return True
    return any(_capital_not_i(words, cases, i) for i in range(lead + 1, stop))


def capitalises_names(words: Sequence[str], cases: Sequence[int], sentences: Sequence[tuple[int, int]]) -> bool:
    """Whether the text writes names with capitals: a capitalised word that does not start a sentence
    and is not "I". Text in lower case only (chat, transcripts) keeps every sentence: the model still
    finds some names there (13 of the seed article's 62 when lower-cased)."""
    return any(_capital_not_i(words, cases, i) for first, stop in sentences for i in range(_lead(cases, first, stop) + 1, stop))


def _capital_not_i(words: Sequence[str], cases: Sequence[int], i: int) -> bool:
    """Whether word i is capitalised and is not "I", the one capital that names nobody."""
    return cases[i] in _CAPITALISED and words[i] != "I"


def word_pieces(loaded: LoadedModel, words: Sequence[str]) -> list[tuple[int, ...]]:
    """Each word's subword ids (at most MAX_SUBWORDS_PER_WORD; [UNK] for a word the tokenizer drops).

    Split into words, a word's subwords do not depend on its neighbours, so they are cached per
    word on ``loaded``: news repeats its words, and tokenizing every word of every article took
    most of the NER preprocess. Tuples, not lists: the garbage collector stops tracking a tuple of
    ints, so the cache (up to WORD_PIECE_CACHE_WORDS words) adds nothing to its full collections."""
    cache = loaded.word_pieces
    pieces = [cache.get(w) for w in words]
    missing = list(dict.fromkeys(w for w, p in zip(words, pieces) if p is None))
    if not missing:
        return pieces  # type: ignore[return-value]
    # verbose=False: a long article's words are tokenised at once and cut into windows later, so a
    # length above the model's maximum is expected, not the "indexing errors" transformers warns of
    encoding = loaded.tokenizer(missing, is_split_into_words=True, add_special_tokens=False, verbose=False)
    new: list[list[int]] = [[] for _ in missing]
    for token_id, word_index in zip(encoding["input_ids"], encoding.word_ids()):
        if word_index is not None and len(new[word_index]) < MAX_SUBWORDS_PER_WORD:
            new[word_index].append(token_id)
    unk = loaded.tokenizer.unk_token_id
    for ids in new:
        if not ids:  # e.g. a control character the tokenizer drops: keep the word addressable
            ids.append(unk)
    found = dict(zip(missing, map(tuple, new)))
    if len(cache) + len(found) > WORD_PIECE_CACHE_WORDS:
        cache.clear()  # a crude bound, but news vocabularies are small: it is rarely reached
    # other threads may read the cache meanwhile: the result below uses `found`. Long "words"
    # (URLs, base64, hostile input) are not kept: they rarely repeat and would make the bound bytes.
    cache.update((w, ids) for w, ids in found.items() if len(w) <= CACHED_WORD_MAX_CHARS)
    return [p if p is not None else found[w] for w, p in zip(words, pieces)]


SENTENCE_END = frozenset(".!?")


def sentence_ranges(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Word ranges of sentences. The model was trained on single CoNLL sentences, where a
    capitalised first word sits right after [CLS]; mid-window sentence starts looked like names.

    A sentence starts after a line break, and after ".", "!" or "?" when the next word starts with
    a capital or a sign. Only those places are looked at: a loop over every word's gap took 0.47 ms
    an article, this 0.21 (bench/RESULTS.md "Python around the forwards")."""
    starts = [start for start, _ in spans]
    words = len(spans)
    # words hold no white space, so a line break lies in the gap before the first word after it
    breaks = {bisect.bisect_right(starts, match.start()) for match in _LINE_BREAK.finditer(text)}
    breaks.update(i + 1 for i, (start, end) in enumerate(spans)
                  if end - start == 1 and text[start] in SENTENCE_END and i + 1 < words
                  and (text[starts[i + 1]].isupper() or not text[starts[i + 1]].isalnum()))
    cuts = [0, *sorted(i for i in breaks if 0 < i < words), words]
    return list(zip(cuts, cuts[1:]))


_LINE_BREAK = re.compile("\n")


def _windows(special: tuple[int, int], per_word: Sequence[tuple[int, ...]], cases: list[int], budget: int, stride: int,
             first: int, stop: int) -> list[Window]:
    """Windows over words[first:stop], each between the [CLS] and [SEP] ids of ``special``;
    consecutive windows overlap by about `stride` tokens. A window holds as many whole words as
    fit in `budget` tokens, and at least one (cut to `budget` subwords)."""
    cls_id, sep_id = special
    pieces = per_word[first:stop]
    lengths = list(map(len, pieces))
    if max(lengths) > budget:  # only when budget < MAX_SUBWORDS_PER_WORD
        pieces = [p[:budget] for p in pieces]
        lengths = list(map(len, pieces))
    # The sentence's subwords laid end to end, cut by bisecting word offsets: a loop over words
    # took a third of the NER preprocess (bench/RESULTS.md "Python around the forwards").
    offsets = [0, *itertools.accumulate(lengths)]  # offsets[i]: subwords before word first+i
    flat_ids = list(itertools.chain.from_iterable(pieces))
    flat_cases = [case for case, p in zip(cases[first:stop], pieces) for _ in p]
    words = stop - first
    windows: list[Window] = []
    start = 0
    while True:
        base = offsets[start]
        end = max(start + 1, bisect.bisect_right(offsets, base + budget, start + 1, words + 1) - 1)
        windows.append(Window([cls_id, *flat_ids[base:offsets[end]], sep_id],
                              [CASE_PAD, *flat_cases[base:offsets[end]], CASE_PAD],
                              first + start, [offset - base + 1 for offset in offsets[start:end]]))
        if end >= words:
            return windows
        # step back so that about `stride` tokens are seen again with left context: the first word
        # after `start` from which to `end` is at most `stride` subwords
        start = bisect.bisect_left(offsets, offsets[end] - stride, start + 1, end)


def forward(loaded: LoadedModel, windows: Sequence[Window], batch_size: int | None = None) -> list[np.ndarray]:
    """Word-level label probabilities for each window, batched and length-sorted; several short
    windows a row where the model allows it (:func:`pipeline.passes.packs_inputs`)."""
    results: list[np.ndarray | None] = [None] * len(windows)
    pad_id = loaded.tokenizer.pad_token_id or 0
    lengths = [len(w.input_ids) for w in windows]
    rows = input_rows(loaded, lengths)
    row_lengths = [sum(lengths[i] for i in row) for row in rows]

    def run_pass(chunk: list[int]) -> None:
        packed = [rows[r] for r in chunk]
        width = padded_width(loaded, max(row_lengths[r] for r in chunk))
        fill = filler_rows(loaded, len(chunk))
        input_ids = padded([[t for i in row for t in windows[i].input_ids] for row in packed] + [[pad_id]] * fill, width, pad_id)
        case_ids = padded([[c for i in row for c in windows[i].case_ids] for row in packed] + [[CASE_PAD]] * fill, width, CASE_PAD)
        if all(len(row) == 1 for row in packed):
            mask, positions = attention_mask([row_lengths[r] for r in chunk] + [1] * fill, width), None
        else:
            mask, positions = block_attention(packed, lengths, width, fill)
        probs = torch.softmax(loaded.forward(input_ids, mask, case_ids, positions).float(), dim=-1).numpy()
        for k, row in enumerate(packed):
            offset = 0
            for i in row:
                results[i] = probs[k, [offset + p for p in windows[i].word_positions]]
                offset += lengths[i]

    run_passes(loaded, run_pass, pass_batches(loaded, row_lengths, batch_size))
    return results  # type: ignore[return-value]


def word_predictions(doc: NerDoc, window_probs: Sequence[np.ndarray], n_labels: int | None = None) -> np.ndarray:
    """One probability row per word, taken from the window where the word is furthest from an edge
    (the first such window on a tie); all zeros for a word no window covers (a skipped sentence)."""
    if n_labels is None:
        n_labels = window_probs[0].shape[1] if window_probs else 0
    probs = np.zeros((len(doc.word_spans), n_labels), dtype=np.float32)
    if not window_probs:
        return probs
    # every window's rows at once: sort by word, then by distance from the window's edge, largest
    # first (a stable sort keeps the earlier window on a tie), and take each word's first row
    counts = [len(w.word_positions) for w in doc.windows]
    offsets = np.arange(sum(counts)) - np.repeat(np.cumsum(counts) - counts, counts)  # k within its window
    words = np.repeat([w.first_word for w in doc.windows], counts) + offsets
    margins = np.minimum(offsets, np.repeat(counts, counts) - 1 - offsets)
    order = np.lexsort((-margins, words))
    sorted_words = words[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_words[1:] != sorted_words[:-1]
    chosen = order[first]
    probs[words[chosen]] = np.concatenate(window_probs)[chosen]
    return probs


def decode_entities(text: str, word_spans: Sequence[tuple[int, int]], tags: Sequence[str], scores: Sequence[float]) -> list[Entity]:
    """BIO (or plain-type) word tags to entities; an I- tag without a matching B- starts an entity."""
    entities: list[Entity] = []
    current: tuple[int, int, str, list[float]] | None = None  # first word, last word, type, scores

    def close() -> None:
        if current is not None:
            first, last, label, entity_scores = current
            start, end = word_spans[first][0], word_spans[last][1]
            entities.append(Entity(start, end, text[start:end], label, sum(entity_scores) / len(entity_scores)))

    for i, tag in enumerate(tags):
        if tag == "O":  # most words
            if current is not None:
                close()
                current = None
            continue
        prefix, _, kind = tag.partition("-") if "-" in tag else ("I", "", tag)
        label = LABEL_ALIASES.get(kind.upper())
        if label is None:
            close()
            current = None
        elif prefix == "B" or current is None or current[2] != label:
            close()
            current = (i, i, label, [scores[i]])
        else:
            current = (current[0], i, label, current[3] + [scores[i]])
    close()
    return entities


def word_tags(loaded: LoadedModel, probs: np.ndarray) -> tuple[list[str], list[float]]:
    """Each word's most likely label and its probability; O (probability 1) for an all-zero row,
    a word of a sentence that preprocess skipped."""
    if not len(probs):
        return [], []
    best = probs.argmax(axis=1)
    scores = probs[np.arange(len(best)), best]
    skipped = scores == 0
    if skipped.any():
        best[skipped] = loaded.labels.index("O")
        scores[skipped] = 1.0
    labels = loaded.labels
    return [labels[i] for i in best.tolist()], scores.tolist()


def untag_titles(text: str, word_spans: Sequence[tuple[int, int]], tags: list[str]) -> None:
    """Tag a person's title ("Ms.", "Sen.", "Mr") O in place; the name after it starts its own
    entity (decode_entities reads an I- tag after O as a B- tag)."""
    for i, (start, end) in enumerate(word_spans):
        if tags[i] != "O" and text[start:end].lower() in _TITLE_WORDS:
            tags[i] = "O"


def postprocess(loaded: LoadedModel, doc: NerDoc, window_probs: Sequence[np.ndarray]) -> list[Entity]:
    if not doc.word_spans:
        return []
    tags, scores = word_tags(loaded, word_predictions(doc, window_probs, len(loaded.labels)))
    untag_titles(doc.text, doc.word_spans, tags)
    return split_trailing_persons(doc.text, decode_entities(doc.text, doc.word_spans, tags, scores))


def split_trailing_persons(text: str, entities: list[Entity]) -> list[Entity]:
    """Repair a title glued to a name ("Department of Defense Sabrina Singh" as one ORG): when a
    non-person mention ends with a surname the article names as a person elsewhere ("Singh"),
    the last two words become the person and the rest keeps its label. CoNLL has few such titles."""
    surnames = {e.text.split()[-1] for e in entities if e.label == "PER" and e.text.split()}
    repaired: list[Entity] = []
    for e in entities:
        words = list(re.finditer(r"\S+", e.text))
        if e.label == "PER" or len(words) < 3 or words[-1].group() not in surnames:
            repaired.append(e)
            continue
        person_start = e.start + words[-2].start()
        rest_end = e.start + words[-3].end()
        repaired.append(Entity(e.start, rest_end, text[e.start:rest_end], e.label, e.score))
        repaired.append(Entity(person_start, e.end, text[person_start:e.end], "PER", e.score))
    return repaired


def run_docs(loaded: LoadedModel, docs: Sequence[NerDoc], batch_size: int | None = None) -> list[list[np.ndarray]]:
    """Forward all windows of many documents in one length-sorted stream; split the results back per document."""
    flat = [w for doc in docs for w in doc.windows]
    probs = forward(loaded, flat, batch_size)
    out, cursor = [], 0
    for doc in docs:
        out.append(probs[cursor: cursor + len(doc.windows)])
        cursor += len(doc.windows)
    return out


def predict(loaded: LoadedModel, texts: Sequence[str], batch_size: int | None = None,
            window_tokens: int = DEFAULT_WINDOW_TOKENS, stride_tokens: int = DEFAULT_STRIDE_TOKENS) -> list[list[Entity]]:
    docs = [preprocess(loaded, t, window_tokens=window_tokens, stride_tokens=stride_tokens) for t in texts]
    return [postprocess(loaded, doc, probs) for doc, probs in zip(docs, run_docs(loaded, docs, batch_size))]


# --- Beam: RunInference over Articles -------------------------------------------------------


def is_english(article: Article) -> bool:
    """Models are English-only: other languages get no entities, quotes' speakers or stances.
    A text too short for language id to place ("und": a line or two) is read too: reading it costs
    little, and skipping it would drop the entities of every short English item."""
    return article.language in (None, "en", "und")


class NerModelHandler(ModelHandler[Article, PredictionResult, LoadedModel]):
    """Loads the NER model once per worker; a batch is several articles, their windows run together."""

    def __init__(self, model_ref: str | None = None, *, max_batch_size: int = DEFAULT_ARTICLES_PER_BATCH, inner_batch_size: int | None = None,
                 window_tokens: int = DEFAULT_WINDOW_TOKENS, large_model: bool = False, precision: str | None = None,
                 torch_threads: int | None = None, report_progress: bool = False):
        # min = max: full batches of articles (their texts are length-sorted together, so a
        # bigger pool means less padding); BatchElements' adaptive sizing started at 1 article
        # and gave 49% NER padding instead of 11% (bench, N=100). A bundle's end flushes a short batch.
        super().__init__(min_batch_size=max_batch_size, max_batch_size=max_batch_size)
        self._model_ref = model_ref
        self._precision = precision
        self._inner_batch_size = inner_batch_size
        self._window_tokens = window_tokens
        self._large_model = large_model
        self._torch_threads = torch_threads  # options.torch_threads: set in each worker process
        self._report_progress = report_progress  # count articles for pipeline.progress (local runs)

    def load_model(self) -> LoadedModel:
        from pipeline.models import freeze_loaded_objects, load_model, set_torch_threads

        set_torch_threads(self._torch_threads)
        loaded = load_model("ner", self._model_ref, self._precision)
        freeze_loaded_objects()
        return loaded

    def run_inference(self, batch: Sequence[Article], model: LoadedModel, inference_args=None) -> list[PredictionResult]:
        docs = [preprocess(model, a.text, window_tokens=self._window_tokens) if is_english(a) else NerDoc(a.text, [], [])
                for a in batch]
        results = [PredictionResult(article, postprocess(model, doc, probs), model.name)
                   for article, doc, probs in zip(batch, docs, run_docs(model, docs, self._inner_batch_size))]
        if self._report_progress:
            process_progress().through_ner(len(batch))
        return results

    def get_num_bytes(self, batch: Sequence[Article]) -> int:
        """RunInference's byte-count metric: the articles' text in UTF-8 (its default pickles the batch
        to measure it; see StanceModelHandler.get_num_bytes)."""
        return sum(len(article.text.encode("utf-8", "surrogatepass")) for article in batch)

    def share_model_across_processes(self) -> bool:
        return self._large_model

    def get_metrics_namespace(self) -> str:
        return "ner"
