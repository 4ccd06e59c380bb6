"""canonicalize: every mention gets the fullest form of the same entity in the article."""
from __future__ import annotations

import re
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.canonical import canonicalize, display_form
from pipeline.records import Entity


def ents(text: str, names: list[tuple[str, str]]) -> list[Entity]:
    """Every whole-word occurrence of each (name, label), longest names first, no overlaps."""
    out: list[Entity] = []
    taken: list[tuple[int, int]] = []
    for name, label in sorted(names, key=lambda nl: -len(nl[0])):
        for m in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text):
            if not any(s < m.end() and m.start() < e for s, e in taken):
                taken.append(m.span())
                out.append(Entity(m.start(), m.end(), m.group(), label, 1.0))
    return sorted(out, key=lambda e: e.start)


def test_surname_takes_full_name() -> None:
    text = "Deputy Press Secretary Sabrina Singh spoke. Later Singh said more."
    res = canonicalize(ents(text, [("Sabrina Singh", "PER"), ("Singh", "PER")]))
    assert [e.canonical for e in res] == ["Sabrina Singh", "Sabrina Singh"]


def test_earlier_short_form_also_takes_later_full_name() -> None:
    text = "Putin spoke first. Russian President Vladimir Putin then left."
    res = canonicalize(ents(text, [("Vladimir Putin", "PER"), ("Putin", "PER")]))
    assert [e.canonical for e in res] == ["Vladimir Putin", "Vladimir Putin"]


def test_possessive_is_stripped() -> None:
    text = "Vladimir Putin spoke. Putin's threat was clear. Putin’s aides agreed."
    res = canonicalize(ents(text, [("Vladimir Putin", "PER"), ("Putin's", "PER"), ("Putin’s", "PER")]))
    assert {e.canonical for e in res} == {"Vladimir Putin"}


def test_two_bidens_are_not_merged() -> None:
    text = "Joe Biden spoke. Hunter Biden listened. Then Biden left. Joe Biden returned."
    res = canonicalize(ents(text, [("Joe Biden", "PER"), ("Hunter Biden", "PER"), ("Biden", "PER")]))
    by_text = [(e.text, e.canonical) for e in res]
    assert by_text[0] == ("Joe Biden", "Joe Biden")
    assert by_text[1] == ("Hunter Biden", "Hunter Biden")
    # ambiguous surname: the most recent full mention before it, never a mix of the two
    assert by_text[2] == ("Biden", "Hunter Biden")
    assert by_text[3] == ("Joe Biden", "Joe Biden")


def test_ambiguous_surname_without_earlier_full_mention_keeps_its_form() -> None:
    text = "Biden spoke. Joe Biden and Hunter Biden listened."
    res = canonicalize(ents(text, [("Joe Biden", "PER"), ("Hunter Biden", "PER"), ("Biden", "PER")]))
    assert res[0].canonical == "Biden"


def test_org_and_leading_the() -> None:
    text = "The Pentagon said so. The Department of Defense and the Pentagon agreed."
    res = canonicalize(ents(text, [("The Pentagon", "ORG"), ("the Pentagon", "ORG"),
                                   ("Department of Defense", "ORG")]))
    assert [e.canonical for e in res] == ["Pentagon", "Department of Defense", "Pentagon"]


def test_org_takes_longest_containing_mention_same_label_only() -> None:
    text = "The Kremlin spoke. Moscow's Kremlin Press Office agreed. Russia and Russian Federation."
    res = canonicalize([
        Entity(4, 11, "Kremlin", "ORG", 1.0),
        Entity(28, 49, "Kremlin Press Office", "ORG", 1.0),
        Entity(58, 64, "Russia", "LOC", 1.0),
        Entity(69, 87, "Russian Federation", "LOC", 1.0),
    ])
    assert res[0].canonical == "Kremlin Press Office"
    assert res[2].canonical == "Russia"  # "Russia" is not a whole word of "Russian Federation"


def test_order_preserved_and_labels_not_mixed() -> None:
    a = Entity(50, 55, "Singh", "PER", 0.9)
    b = Entity(0, 13, "Sabrina Singh", "PER", 0.9)
    c = Entity(20, 25, "Singh", "ORG", 0.9)  # NER error: a different label is never merged
    res = canonicalize([a, b, c])
    assert [e.start for e in res] == [50, 0, 20]
    assert res[0].canonical == "Sabrina Singh"
    assert res[2].canonical == "Singh"


def test_only_the_canonical_name_is_set() -> None:
    # canonical._with_canonical spells the fields out: a new Entity field must be added there
    assert [f.name for f in fields(Entity)] == ["start", "end", "text", "label", "score", "canonical"]
    entity = Entity(3, 8, "Singh", "PER", 0.25)
    assert canonicalize([entity]) == [Entity(3, 8, "Singh", "PER", 0.25, "Singh")]


def test_empty() -> None:
    assert canonicalize([]) == []


def test_display_form() -> None:
    assert display_form("the Pentagon's") == "Pentagon"
    assert display_form("  Jones'  ") == "Jones"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=30), st.sampled_from(["PER", "ORG", "LOC", "MISC", "X"]),
                          st.integers(0, 500)), max_size=20))
def test_canonicalize_never_raises(items: list[tuple[str, str, int]]) -> None:
    entities = [Entity(s, s + len(t), t, label, 0.5) for t, label, s in items]
    res = canonicalize(entities)
    assert len(res) == len(entities)
    for before, after in zip(entities, res):
        assert (before.start, before.end, before.text, before.label) == (after.start, after.end, after.text, after.label)
        assert isinstance(after.canonical, str)
