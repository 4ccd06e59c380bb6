"""find_quotes: direct quotes and their speakers, on the seed article and small fixtures."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.canonical import canonicalize
from pipeline.quotes import find_quotes
from pipeline.records import Entity, Quote

ROOT = Path(__file__).resolve().parents[1]
GOLD = json.loads((ROOT / "tests" / "seed_gold.json").read_text(encoding="utf-8"))
SEED = (ROOT / GOLD["article"]).read_text(encoding="utf-8")


def check(text: str, quotes: Sequence[Quote]) -> list[Quote]:
    """The invariants every result must keep."""
    assert list(quotes) == sorted(quotes, key=lambda q: (q.start, q.end))
    for q in quotes:
        assert 0 <= q.start <= q.end <= len(text)
        assert text[q.start:q.end] == q.text
        assert 0.0 <= q.confidence <= 1.0
        assert q.kind in ("direct", "indirect")
        assert q.speaker_label in ("PER", "ORG", None)
        if q.speaker is None:
            assert q.confidence == 0.0
    return list(quotes)


def quotes(text: str, entities: Sequence[Entity] = ()) -> list[Quote]:
    return check(text, find_quotes(text, entities))


def by_text(text: str, entities: Sequence[Entity] = ()) -> dict[str, Quote]:
    return {q.text: q for q in quotes(text, entities)}


def gold_entities(text: str, gold: dict) -> list[Entity]:
    """Mimic NER output: every occurrence of each gold name, plus bare surnames of gold people."""
    found: list[Entity] = []
    taken: list[tuple[int, int]] = []

    def add(name: str, label: str) -> None:
        for m in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text):
            if not any(s < m.end() and m.start() < e for s, e in taken):
                taken.append(m.span())
                found.append(Entity(m.start(), m.end(), m.group(), label, 1.0))

    pairs = [(n, label) for label, names in gold["entities"].items() for n in names]
    for name, label in sorted(pairs, key=lambda p: -len(p[0])):
        add(name, label)
    for name in gold["entities"]["PER"]:
        if " " in name:
            add(name.split()[-1], "PER")  # "Singh" where NER found no "Sabrina Singh"
    return canonicalize(sorted(found, key=lambda e: e.start))


def norm(name: str | None) -> str:
    s = (name or "").strip().lower()
    return s[4:] if s.startswith("the ") else s


def seed_score(entities: Sequence[Entity]) -> tuple[int, int]:
    found = {(q.start, q.end): q for q in quotes(SEED, entities)}
    spans = right = 0
    for g in GOLD["quotes"]:
        q = found.get((g["start"], g["end"]))
        if q is not None:
            spans += 1
            right += norm(q.speaker) == norm(g["speaker"])
    return spans, right


# --------------------------------------------------------------------------- seed article

def test_seed_gold_offsets_are_consistent() -> None:
    for g in GOLD["quotes"]:
        assert SEED[g["start"]:g["end"]] == g["text"]


def test_seed_with_entities() -> None:
    spans, right = seed_score(gold_entities(SEED, GOLD))
    print(f"seed with entities: {spans}/13 spans, {right}/13 speakers")
    assert spans == len(GOLD["quotes"]) == 13
    assert right >= 12


def test_seed_without_entities() -> None:
    spans, right = seed_score(())
    print(f"seed without entities: {spans}/13 spans, {right}/13 speakers")
    assert spans == 13
    assert right >= 10


def test_seed_no_extra_quotes_and_labels() -> None:
    qs = quotes(SEED, gold_entities(SEED, GOLD))
    assert len(qs) == 13
    assert qs[0].speaker == "Pentagon" and qs[0].speaker_label == "ORG" and qs[0].cue == "believes"
    assert qs[1].speaker == "Sabrina Singh" and qs[1].cue == "told"
    assert [q.speaker_label for q in qs[1:]] == ["PER"] * 12
    assert all(q.confidence > 0 for q in qs)


# --------------------------------------------------------------------------- marks

def test_straight_and_curly_quotes() -> None:
    qs = quotes('"One thing," Ann Lee said. “Another thing,” Ann Lee said.')
    assert [q.text for q in qs] == ["One thing,", "Another thing,"]


def test_partial_and_single_word_quotes() -> None:
    text = 'The Pentagon believes the troops are a "fair target" and were "entitled" to it.'
    qs = quotes(text)
    assert [q.text for q in qs] == ["fair target", "entitled"]
    assert all(q.speaker == "Pentagon" and q.speaker_label == "ORG" for q in qs)


def test_two_apostrophe_quotes() -> None:
    q = by_text("''This is old style,'' Tom Brown said.")["This is old style,"]
    assert q.speaker == "Tom Brown" and q.cue == "said"


def test_backtick_quotes() -> None:
    assert [q.text for q in quotes("``Hello there,'' Tom Brown said.")] == ["Hello there,"]


def test_apostrophes_are_not_quotes() -> None:
    text = "Officials said the ’90s weren't kind, rock ’n’ roll didn't help Russia's case, and Jones' dog's bowl."
    assert quotes(text) == []


def test_nested_single_quotes_are_part_of_outer_quote() -> None:
    qs = quotes('"He told me \'never again\' and left," Ann Lee said.')
    assert [q.text for q in qs] == ["He told me 'never again' and left,"]
    qs = quotes("“He called it ‘a disgrace’ twice,” Ann Lee said.")
    assert [q.text for q in qs] == ["He called it ‘a disgrace’ twice,"]


def test_multi_paragraph_quote() -> None:
    text = (
        'Mary Jones spoke at length.\n'
        'Jones said: "This is the first paragraph of a long quote.\n'
        '"This is the second paragraph.\n'
        '"And this is the last," she said.'
    )
    qs = quotes(text)
    assert [q.text for q in qs] == [
        "This is the first paragraph of a long quote.",
        "This is the second paragraph.",
        "And this is the last,",
    ]
    for q in qs:  # every span lies inside its paragraph, after its mark
        assert "\n" not in q.text
        assert text[q.start - 1] == '"'
    assert [q.speaker for q in qs] == ["Mary Jones"] * 3


def test_multi_paragraph_quote_with_blank_lines() -> None:
    text = 'Mary Jones spoke.\n\n“First part,\n\n“second part,” Jones said.'
    qs = quotes(text)
    assert [q.text for q in qs] == ["First part,", "second part,"]
    assert [q.speaker for q in qs] == ["Mary Jones", "Mary Jones"]


def test_soft_wrapped_lines_inside_a_paragraph() -> None:
    text = 'Intro line.\n\n"This quote is wrapped\nover two lines," Ann Lee said.'
    (q,) = quotes(text)
    assert q.text == "This quote is wrapped\nover two lines,"
    assert q.speaker == "Ann Lee"


@pytest.mark.parametrize("text", [
    '"', '""', '“', '”', '„', "''", "``", '" "', '“„”“', '"a', 'a"', 'He said "hello',
    'He said "hello and never closed it. Then "world" appeared.', '”Swedish style”',
    'a 12" screen and "quoted words" here', '«', '»x«', '「x', '\n"\n"\n', '"\n\n"',
])
def test_unbalanced_marks_never_crash(text: str) -> None:
    quotes(text)


def test_unclosed_quote_runs_to_paragraph_end() -> None:
    text = 'Ann Lee said: "We will see\nNext paragraph here.'
    (q,) = quotes(text)
    assert q.text == "We will see"
    assert q.speaker == "Ann Lee"


def test_inch_mark_is_not_an_opening_quote() -> None:
    assert [q.text for q in quotes('a 12" screen and "quoted words" here')] == ["quoted words"]


def test_guillemets_and_german_quotes() -> None:
    assert [q.text for q in quotes("Il a dit : « Nous verrons. »")] == ["Nous verrons."]
    assert [q.text for q in quotes("Sie sagte: „Wir schaffen das.“")] == ["Wir schaffen das."]


# --------------------------------------------------------------------------- speakers

def test_said_x_inverted() -> None:
    q = by_text('"We will not back down," said Sabrina Singh.')["We will not back down,"]
    assert (q.speaker, q.speaker_label, q.cue) == ("Sabrina Singh", "PER", "said")


def test_x_said_colon_before_quote() -> None:
    text = "Sabrina Singh spoke. Later, Singh said: “We are ready.”"
    q = by_text(text)["We are ready."]
    assert q.speaker == "Sabrina Singh" and q.cue == "said"


def test_split_quote_both_halves() -> None:
    text = 'John Smith arrived late. "We are ready," he said, "and we will win."'
    qs = quotes(text)
    assert [(q.text, q.speaker, q.cue) for q in qs] == [
        ("We are ready,", "John Smith", "said"),
        ("and we will win.", "John Smith", "said"),
    ]


def test_according_to() -> None:
    q = by_text('The plan is "dead on arrival," according to Senator Mary Jones.')["dead on arrival,"]
    assert (q.speaker, q.cue) == ("Mary Jones", "according to")


def test_told_reporters_with_title_and_org_in_title() -> None:
    text = ('"It is a fair target," Deputy Press Secretary for the Department of Defense '
            'Sabrina Singh told reporters Thursday.')
    for entities in ((), [Entity(text.index("Department"), text.index("Department") + 21, "Department of Defense", "ORG", 1.0),
                          Entity(text.index("Sabrina"), text.index("Sabrina") + 13, "Sabrina Singh", "PER", 1.0)]):
        q = by_text(text, canonicalize(entities))["It is a fair target,"]
        assert (q.speaker, q.speaker_label, q.cue) == ("Sabrina Singh", "PER", "told")


def test_apposition() -> None:
    q = by_text('Hugh Hill, a doctor at Mercy Hospital, said: "The wards are full."')["The wards are full."]
    assert q.speaker == "Hugh Hill"
    q = by_text('"The wards are full," Hugh Hill, a doctor, said.')["The wards are full,"]
    assert q.speaker == "Hugh Hill"


def test_warned_and_accused() -> None:
    text = 'Russian President Vladimir Putin accused the U.S. of "pushing the world into conflict."'
    assert by_text(text)["pushing the world into conflict."].speaker == "Vladimir Putin"
    text = 'Prime Minister Keir Starmer warned that Britain would "not stand by."'
    q = by_text(text)["not stand by."]
    assert (q.speaker, q.cue) == ("Keir Starmer", "warned")


def test_coordinated_verb_reuses_subject() -> None:
    text = ('Vladimir Putin accused the U.S. of "pushing the world into conflict," and said that '
            'Russia was "entitled" to respond.')
    assert [q.speaker for q in quotes(text)] == ["Vladimir Putin", "Vladimir Putin"]


def test_saying_introduces_the_nearest_person() -> None:
    text = ('The move has been criticized by the Kremlin as an escalation, with former president '
            'Dmitry Medvedev saying that Russia had the right to "strike back hard."')
    q = by_text(text)["strike back hard."]
    assert (q.speaker, q.cue) == ("Dmitry Medvedev", "saying")


def test_criticized_by_org() -> None:
    q = by_text('The strikes were criticized by the Kremlin as "reckless."')["reckless."]
    assert (q.speaker, q.speaker_label, q.cue) == ("Kremlin", "ORG", "criticized")


def test_org_subject_said() -> None:
    q = by_text("“We are ready,” the Pentagon said in a statement.")["We are ready,"]
    assert (q.speaker, q.speaker_label) == ("Pentagon", "ORG")


def test_pronoun_resolves_to_most_recent_person_speaker() -> None:
    text = ('"First," Sabrina Singh said. Officials met Tom Brown on Monday.\n'
            '"Second," she added.')
    q = by_text(text)["Second,"]
    assert (q.speaker, q.cue) == ("Sabrina Singh", "added")


def test_he_said_after_subject_mention() -> None:
    text = 'John Smith arrived late. "Sorry," he said.'
    assert by_text(text)["Sorry,"].speaker == "John Smith"


def test_role_noun_resolves_to_recent_speaker() -> None:
    text = '"Not now," Mary Jones said. The spokeswoman later said: "No comment."'
    assert by_text(text)["No comment."].speaker == "Mary Jones"


def test_statements_by_him() -> None:
    text = ('Strikes were authorized by Prime Minister Keir Starmer, who directed Newsweek to '
            'statements by him outlining that strikes fall under Ukraine\'s "clear right of self-defense."')
    q = by_text(text)["clear right of self-defense."]
    assert (q.speaker, q.cue) == ("Keir Starmer", "statements by")


def test_surname_resolves_to_full_name_with_entities() -> None:
    text = 'Assistant Secretary Brian Nichols spoke. "It works," Nichols told reporters.'
    a, b = text.index("Brian Nichols"), text.rindex("Nichols")
    ents = canonicalize([Entity(a, a + 13, "Brian Nichols", "PER", 0.9), Entity(b, b + 7, "Nichols", "PER", 0.9)])
    q = by_text(text, ents)["It works,"]
    assert (q.speaker, q.speaker_label, q.confidence > 0.5) == ("Brian Nichols", "PER", True)


def test_surname_resolves_to_full_name_without_entities() -> None:
    text = 'Assistant Secretary Brian Nichols spoke. "It works," Nichols told reporters.'
    assert by_text(text)["It works,"].speaker == "Brian Nichols"


def test_unattributed_quote_in_paragraph_inherits_speaker() -> None:
    text = '"The first point," Ann Lee said. "And the second point is this."'
    qs = quotes(text)
    assert [q.speaker for q in qs] == ["Ann Lee", "Ann Lee"]
    assert qs[1].confidence < qs[0].confidence


def test_no_speaker_means_zero_confidence() -> None:
    (q,) = quotes('The sign read "closed for good" all day.')
    assert q.speaker is None and q.speaker_label is None and q.confidence == 0.0


def test_transcript_turns() -> None:
    text = "PENCE: I think so.\nKAINE: I do not.\nPENCE: Well then."
    ents = canonicalize([])
    qs = quotes(text, ents)
    assert [(q.text, q.speaker, q.cue) for q in qs] == [
        ("I think so.", "Pence", ":"), ("I do not.", "Kaine", ":"), ("Well then.", "Pence", ":"),
    ]


def test_entities_with_bad_offsets_are_ignored() -> None:
    text = '"Yes," Ann Lee said.'
    quotes(text, [Entity(-5, 3, "x", "PER", 1.0), Entity(5, 500, "y", "PER", 1.0), Entity(4, 2, "z", "ORG", 1.0)])


# --------------------------------------------------------------------------- robustness

# Random unicode mixed with quote marks and attribution fragments, joined into one text.
QUOTEY = st.lists(
    st.one_of(
        st.sampled_from(list("\"“”„‘’'`«»「」 \n.,:;!?-—") + ["''", "``", "\n\n", " said ", " she added ", "Ann Lee "]),
        st.text(max_size=6),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(QUOTEY)
def test_never_raises_and_spans_valid(text: str) -> None:
    quotes(text)


@settings(max_examples=100, deadline=None)
@given(QUOTEY, st.lists(st.tuples(st.integers(-5, 320), st.integers(0, 40), st.sampled_from(["PER", "ORG", "LOC", "MISC"])), max_size=8))
def test_never_raises_with_random_entities(text: str, raw: list[tuple[int, int, str]]) -> None:
    ents = [Entity(s, s + n, text[max(s, 0):s + n], label, 0.9) for s, n, label in raw]
    quotes(text, canonicalize(ents))
    quotes(text, ents)


def test_large_article() -> None:
    # speed is measured in bench/, not here: this checks that 1 MB of real text goes through whole
    big = (SEED + "\n") * (1_000_000 // len(SEED))
    qs = quotes(big)
    assert len(qs) >= 13 * (1_000_000 // len(SEED))


def test_marks_without_spaces() -> None:
    unit = 'ab"cd“ef”gh\'\'ij„kl’mn``op«qr»st'
    quotes(unit * (500_000 // len(unit)))


# --------------------------------------------------------------------------- indirect speech and filters

def indirect(text: str, entities: Sequence[Entity] = ()) -> list[tuple[str, str | None]]:
    qs = check(text, find_quotes(text, entities, indirect=True))
    return [(q.text, q.speaker) for q in qs if q.kind == "indirect"]


def test_indirect_is_off_by_default_and_seed_direct_spans_unchanged() -> None:
    assert all(q.kind == "direct" for q in find_quotes(SEED))
    qs = check(SEED, find_quotes(SEED, gold_entities(SEED, GOLD), indirect=True))
    direct = {(q.start, q.end) for q in qs if q.kind == "direct"}
    assert direct == {(g["start"], g["end"]) for g in GOLD["quotes"]}
    assert any(q.kind == "indirect" and q.text.startswith("that an estimated 11,000") for q in qs)


def test_indirect_name_said_clause() -> None:
    assert indirect("Sabrina Singh said the troops would be targets.") == [("the troops would be targets", "Sabrina Singh")]
    assert indirect("Tom Brown said on Monday that taxes would rise.") == [("that taxes would rise", "Tom Brown")]


def test_indirect_according_to() -> None:
    assert indirect("According to Mary Jones, the plan is dead on arrival.") == [("the plan is dead on arrival", "Mary Jones")]


def test_indirect_not_for_direct_quotes_or_short_clauses() -> None:
    assert indirect('Ann Lee said: "We will win this race."') == []
    assert indirect("Ann Lee said so.") == []


def test_titles_markup_and_unattributed_single_words_are_not_quotes() -> None:
    text = ('Mr. Manafort said on CBS\'s "Face the Nation" that it was over. '
            'Nothing else.\n\nThe "establishment" candidate spoke. <tweet tweet_id="672138506081275904">Hello</tweet>')
    assert quotes(text) == []


def test_sentence_subject_without_speech_verb() -> None:
    text = 'Ted Cruz arrived. Cruz blamed the law on "knuckleheaded Democratic politicians."'
    assert by_text(text)["knuckleheaded Democratic politicians."].speaker == "Ted Cruz"


def test_inverted_said_with_lowercase_descriptors() -> None:
    text = '"The concern is the court," said Idaho supplement executive Frank VanderSloot, who backed Rubio.'
    assert by_text(text)["The concern is the court,"].speaker == "Frank VanderSloot"


def test_name_in_apposition_before_verb() -> None:
    text = 'A top strategist, John Weaver, tells reporters that Kasich will "drive somebody else out."'
    assert by_text(text)["drive somebody else out."].speaker == "John Weaver"


def test_unnamed_speaker_with_affiliation() -> None:
    q = by_text('"We are fine," a State Department official said.')["We are fine,"]
    assert (q.speaker, q.speaker_label) == ("State Department", "ORG")
    assert by_text('"It is over," said one New Hampshire Democrat.')["It is over,"].speaker == "New Hampshire Democrat"
    assert by_text('"No," a spokeswoman for the House Armed Services Committee said.')["No,"].speaker == \
        "House Armed Services Committee"
    assert by_text('"We disagree," Trump\'s campaign said in a statement.')["We disagree,"].speaker == "Trump"
    assert by_text('"I like it," the reporter said.')["I like it,"].speaker is None


def test_definite_role_still_resolves_to_the_person() -> None:
    text = 'Marco Rubio spoke on Monday. "We disagree," the Florida senator said.'
    assert by_text(text)["We disagree,"].speaker == "Marco Rubio"


def test_honorific_before_a_title_word() -> None:
    text = "''We will see,'' Mr. King said."
    assert by_text(text)["We will see,"].speaker == "Mr. King"  # as "Mr. Trump" is kept


def test_quote_introduced_by_the_paragraph_before() -> None:
    text = 'The story ran on Monday.\n\nJane Doe says:\n\n"Well, the situation there is a frontline."'
    assert by_text(text)["Well, the situation there is a frontline."].speaker == "Jane Doe"


def test_participle_clause_takes_the_sentence_subject() -> None:
    text = 'At the debate, Bernie Sanders compared himself to Clinton, saying, "I do not get speaking fees."'
    assert by_text(text)["I do not get speaking fees."].speaker == "Bernie Sanders"
    text = '"Silly boys," scoffed Arianna Gil, 22, who helped found the group.'
    assert by_text(text)["Silly boys,"].speaker == "Arianna Gil"


def test_sign_off_line_names_the_speaker() -> None:
    text = ('Intro.\n\n"Great speech. She is ready."\n\n-President Obama, tweeting after the speech.\n\n'
            '"It needs to stop."\n\n-Michelle Marks, Philadelphia.\n\n"Boeing pays zero taxes."\n\n- Sanders.\n\nMore.')
    got = by_text(text)
    assert got["Great speech. She is ready."].speaker == "Obama"
    assert got["It needs to stop."].speaker == "Michelle Marks"
    assert got["Boeing pays zero taxes."].speaker == "Sanders"
    text = '"We will win this." — John Smith, voter.'
    assert by_text(text)["We will win this."].speaker == "John Smith"


def test_vox_pop_list_one_signed_quote_per_line() -> None:
    # One paragraph, a quote per line, each signed after a horizontal bar or dash (no-break spaces too).
    text = ('What readers told us.\n\n“He is ignorant of our culture.”― Pamela Padilla\u00a0\n'
            '“I’m so ashamed. How did we get this low?”\u00a0― Jacklyn Ashley\u00a0\n'
            '“Maybe we can build a wall around him.” — Steve Quinlan\n')
    got = by_text(text)
    assert got["He is ignorant of our culture."].speaker == "Pamela Padilla"
    assert got["I’m so ashamed. How did we get this low?"].speaker == "Jacklyn Ashley"
    assert got["Maybe we can build a wall around him."].speaker == "Steve Quinlan"


def test_names_of_shows_and_works_are_not_quotes() -> None:
    text = ('"It was a mistake," Fiorina told "Fox and Friends," on Monday. Trump told NBC’s “Today” he won. '
            'Serafinowicz, who starred in “Parks and Recreation,” laughed. He is now host of “The Nightly Show.”')
    assert [q.text for q in quotes(text)] == ["It was a mistake,"]


def test_title_word_as_surname() -> None:
    text = "''We could only go so far,'' Representative Peter T. King, Republican of New York, said."
    assert by_text(text)["We could only go so far,"].speaker == "Peter T. King"


def test_present_tense_inverted_cue_and_time_words() -> None:
    text = '"I\'m a voter," declares Stephanie Acs, 27, a Navy veteran.'
    assert by_text(text)["I'm a voter,"].speaker == "Stephanie Acs"
    text = 'Much of the ire was directed at Bannon, who Glenn Beck on Wednesday called "a horrible human being."'
    assert by_text(text)["a horrible human being."].speaker == "Glenn Beck"


def test_single_word_quote_kept_only_near_a_cue() -> None:
    assert "establishment" not in by_text('He is the "establishment" candidate.')
    text = 'Officials said the group should "segregate" radicals, a claim critics rejected.'
    assert "segregate" in by_text(text)
