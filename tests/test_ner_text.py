"""NER text logic without the model: words, sentences, windows and BIO decoding never crash on
arbitrary unicode, and every span they return indexes the input."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import ner
from pipeline.models import LoadedModel, base_encoder_path

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | st.text(
    st.sampled_from(list("Aa Zé.!?\n\"“”'’-\u200b\u202e\x00\t0")), max_size=300)


@pytest.fixture(scope="module")
def tokenizer_only():
    """The real tokenizer with no model: enough for preprocess."""
    from transformers import AutoTokenizer

    return LoadedModel("ner", "tokenizer-only", AutoTokenizer.from_pretrained(base_encoder_path()), model=None,
                       labels=["O", "B-PER", "I-PER"], max_length=512)


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_words_and_sentences_index_the_text(text):
    spans = ner.split_words(text)
    assert all(0 <= s < e <= len(text) and text[s:e].strip() for s, e in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    ranges = ner.sentence_ranges(text, spans) if spans else []
    assert [i for first, stop in ranges for i in range(first, stop)] == list(range(len(spans)))


@settings(max_examples=100, deadline=None)
@given(TEXT, st.integers(8, 64), st.integers(0, 32), st.booleans())
def test_windows_cover_every_word_within_budget(tokenizer_only, text, window_tokens, stride_tokens, skip_nameless):
    doc = ner.preprocess(tokenizer_only, text, window_tokens=window_tokens, stride_tokens=stride_tokens,
                         skip_nameless=skip_nameless)
    covered = set()
    for window in doc.windows:
        assert len(window.input_ids) == len(window.case_ids)
        assert len(window.input_ids) <= max(window_tokens, 10) or len(window.word_positions) == 1
        covered.update(range(window.first_word, window.first_word + len(window.word_positions)))
    if not skip_nameless:
        assert covered == set(range(len(doc.word_spans)))
    for first, stop in ner.sentence_ranges(text, doc.word_spans) if doc.word_spans else []:
        sentence = set(range(first, stop))
        assert sentence <= covered or not sentence & covered  # whole sentences are skipped, or none


SENTENCES = ["Putin spoke in Moscow.", "He said the talks were over.", "The envoy left for Kyiv.", "It rained.",
             "But Sanders disagreed.", "Mr. Trump said so.", '"We will not back down," he said.']


def test_sentences_that_cannot_hold_a_name_get_no_window(tokenizer_only):
    text = " ".join(SENTENCES)
    doc = ner.preprocess(tokenizer_only, text)
    words = [text[s:e] for s, e in doc.word_spans]
    assert [words[w.first_word] for w in doc.windows] == ["Putin", "The", "But", "Mr."]
    assert len(ner.preprocess(tokenizer_only, text, skip_nameless=False).windows) == 7


def test_titles_and_initials_keep_their_stop_and_end_no_sentence():
    text = "George W. Bush met Mrs. May and Sen. Ted Cruz in St. Louis. Then Mr Smith left, with Martin Luther King Jr. The U.S. Army said no."
    spans = ner.split_words(text)
    words = [text[s:e] for s, e in spans]
    assert words[:12] == ["George", "W.", "Bush", "met", "Mrs.", "May", "and", "Sen.", "Ted", "Cruz", "in", "St."]
    assert "Mr" in words and "Jr" in words and "U.S." in words
    sentences = [" ".join(words[first:stop]) for first, stop in ner.sentence_ranges(text, spans)]
    assert sentences == ["George W. Bush met Mrs. May and Sen. Ted Cruz in St. Louis .",
                         "Then Mr Smith left , with Martin Luther King Jr .",  # "Jr." ends sentences too often to join
                         "The U.S. Army said no ."]
    odd = "mr. smith and Dr.Who, vitamin b. Mrs."  # a lower-case letter is no initial
    assert [odd[s:e] for s, e in ner.split_words(odd)] == ["mr.", "smith", "and", "Dr.Who", ",", "vitamin", "b", ".", "Mrs."]


def test_a_title_is_no_part_of_the_name_after_it():
    text = "Ms. Brainard and Sen. Cruz met Mr Smith in St. Louis ."
    spans = ner.split_words(text)
    tags = ["B-PER", "I-PER", "O", "B-MISC", "B-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    assert len(tags) == len(spans)
    ner.untag_titles(text, spans, tags)
    entities = ner.decode_entities(text, spans, tags, [1.0] * len(tags))
    assert [(e.text, e.label) for e in entities] == [("Brainard", "PER"), ("Cruz", "PER"), ("Smith", "PER"), ("St. Louis", "LOC")]


def test_text_without_capitalised_names_is_read_whole(tokenizer_only):
    # in lower case the model still finds some names (13 of the seed article's 62), so nothing is skipped
    lower = "\n".join(SENTENCES).lower()
    assert len(ner.preprocess(tokenizer_only, lower).windows) == 7  # "mr. trump": no sentence ends at "mr."
    assert len(ner.preprocess(tokenizer_only, "he and I left.\nwe stayed.").windows) == 2  # "I" is no name


def test_words_of_skipped_sentences_are_tagged_outside(tokenizer_only):
    probs = np.array([[0.1, 0.7, 0.2], [0.0, 0.0, 0.0]], dtype=np.float32)  # the second word had no window
    assert ner.word_tags(tokenizer_only, probs) == (["B-PER", "O"], [pytest.approx(0.7), 1.0])


@settings(max_examples=200, deadline=None)
@given(TEXT, st.data())
def test_decoded_entities_index_the_text(text, data):
    spans = ner.split_words(text)
    tags = data.draw(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "I-ORG", "B-LOC", "PERSON", "DATE"]),
                              min_size=len(spans), max_size=len(spans)))
    entities = ner.decode_entities(text, spans, tags, [0.9] * len(spans))
    for e in ner.split_trailing_persons(text, entities):
        assert 0 <= e.start < e.end <= len(text) and text[e.start:e.end] == e.text
        assert e.label in ner.LABELS


def test_word_predictions_prefer_the_most_central_window():
    doc = ner.NerDoc("a b c", [(0, 1), (2, 3), (4, 5)], [
        ner.Window([0] * 5, [0] * 5, 0, [1, 2, 3]),  # word 1 central here (margin 1)
        ner.Window([0] * 4, [0] * 4, 1, [1, 2]),  # word 1 on the edge (margin 0)
    ])
    first = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    second = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert ner.word_predictions(doc, [first, second]).argmax(axis=1).tolist() == [0, 0, 0]


# The definitions the fast forms in pipeline/ner.py must keep to, written word by word.
_UNGUARDED_WORD_RE = __import__("re").compile(
    r"(?:[^\W\d_]\.){2,}|(?-i:[A-Z])\.(?!\w)|(?:" + ner._ABBREVIATED + r")\.(?!\w)"
    r"|['’](?:s|re|ve|ll|d|m|t)\b|\w+(?:[-.&]\w+)*|[^\w\s]", __import__("re").IGNORECASE)


def _sentence_ranges_word_by_word(text, spans):
    ranges, first = [], 0
    for i in range(1, len(spans)):
        gap = text[spans[i - 1][1]:spans[i][0]]
        start = spans[i][0]
        ends_sentence = text[spans[i - 1][0]:spans[i - 1][1]] in ner.SENTENCE_END and (
            text[start].isupper() or not text[start].isalnum())
        if "\n" in gap or ends_sentence:
            ranges.append((first, i))
            first = i
    ranges.append((first, len(spans)))
    return ranges


def _windows_word_by_word(per_word, budget, stride, first, stop):
    """(first word, subword ids) of each window: as many whole words as fit, then a step back of
    at most `stride` subwords."""
    windows, start = [], first
    while True:
        ids, end = [], start
        while end < stop and (len(ids) + len(per_word[end]) <= budget or end == start):
            ids.extend(per_word[end][:budget])
            end += 1
        windows.append((start, ids))
        if end >= stop:
            return windows
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + len(per_word[next_start - 1]) <= stride:
            next_start -= 1
            overlap += len(per_word[next_start])
        start = next_start


WORDY = ["Mr. Putin met Gen. Milley in St. Louis, U.S.A., at 9 a.m. on Jan. 5.", "Sen. McCain's (R-Ariz.) aide",
         "A. B. Smith said: 'No.' J.R.R. Tolkien. mr. x ms.y prof.", "Wait!\nThe U.S.\nsaid. then. So?"]


@settings(max_examples=300, deadline=None)
@given(TEXT | st.sampled_from(WORDY))
def test_words_and_sentences_match_their_definitions(text):
    spans = ner.split_words(text)
    assert spans == [m.span() for m in _UNGUARDED_WORD_RE.finditer(text)]
    if spans:
        assert ner.sentence_ranges(text, spans) == _sentence_ranges_word_by_word(text, spans)


def test_abbreviations_and_initials_keep_their_stop():
    text = WORDY[0]
    assert [text[s:e] for s, e in ner.split_words(text)][:8] == ["Mr.", "Putin", "met", "Gen.", "Milley", "in", "St.", "Louis"]
    text = "Wait!\nThe U.S.\nsaid. then. So?"  # a break after "!", a line break, not before "then"
    assert ner.sentence_ranges(text, ner.split_words(text)) == [(0, 2), (2, 4), (4, 8), (8, 10)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(1, 99), min_size=1, max_size=20), min_size=1, max_size=60),
       st.integers(1, 40), st.integers(0, 30), st.data())
def test_windows_match_their_definition(per_word, budget, stride, data):
    first = data.draw(st.integers(0, len(per_word) - 1))
    stop = data.draw(st.integers(first + 1, len(per_word)))
    cases = [len(p) % 6 for p in per_word]
    windows = ner._windows((101, 102), per_word, cases, budget, stride, first, stop)
    expected = _windows_word_by_word(per_word, budget, stride, first, stop)
    assert [(w.first_word, w.input_ids[1:-1]) for w in windows] == expected
    for window in windows:
        assert window.input_ids[0] == 101 and window.input_ids[-1] == 102
        words = range(window.first_word, window.first_word + len(window.word_positions))
        assert [window.input_ids[p:p + len(per_word[w][:budget])] for p, w in zip(window.word_positions, words)] == [
            per_word[w][:budget] for w in words]
        assert window.case_ids[1:-1] == [cases[w] for w in words for _ in per_word[w][:budget]]


def test_the_handlers_count_a_batch_in_utf8_bytes_without_pickling_it():
    from pipeline.ner import NerModelHandler
    from pipeline.records import AnalysedArticle, Article, Entity
    from pipeline.stance import StanceModelHandler

    articles = [Article("a", "a.txt", "Kyiv é €"), Article("b", "b.txt", "x\ud800y")]  # a lone surrogate from bad JSON
    assert NerModelHandler().get_num_bytes(articles) == 11 + 5
    analysed = [AnalysedArticle(a, [Entity(0, 4, "Kyiv", "LOC", 0.9)] * 50) for a in articles]
    assert StanceModelHandler().get_num_bytes(analysed) == 11 + 5  # the text, not the entities it carries
