"""The casing classes the NER model was trained with: the fast paths must not change any word's class."""
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import CASE_CLASSES, case_class


def letter_rules(word: str) -> str:
    """The rules as the model was trained with them (before the ASCII fast paths)."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return "digit" if any(c.isdigit() for c in word) else "other"
    if all(c.islower() for c in letters):
        return "lower"
    if all(c.isupper() for c in letters):
        return "upper" if len(letters) > 1 else "title"
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return "title"
    return "mixed"


def test_words_of_the_seed_kind_get_their_classes():
    expected = {"said": "lower", "Medvedev": "title", "U.S.": "upper", "NATO": "upper", "I": "title", "A": "title",
                "McCain": "mixed", "O'Neil": "mixed", "2024": "digit", "“": "other", "F-16s": "title",
                "Zelenskyy's": "title", "ÉTATS": "upper", "étrangères": "lower", "Ministère": "title", "中国": "mixed"}
    assert {word: CASE_CLASSES[case_class(word)] for word in expected} == expected


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.from_regex(r"[A-Za-z0-9.'’-]{1,10}", fullmatch=True))
def test_fast_paths_agree_with_the_letter_rules(word):
    assert CASE_CLASSES[case_class(word)] == letter_rules(word)
