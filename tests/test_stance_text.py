"""What the stance model reads for each quote (pure text logic, no model)."""
from pipeline.records import Quote
from pipeline.stance import is_partial, sentence_around, stance_text


def quote_at(text: str, words: str) -> Quote:
    start = text.index(words)
    return Quote(start, start + len(words), words)


def test_partial_quotes_are_read_with_their_sentence():
    text = ('Earlier the ministry spoke.\nOn Thursday, Putin accused the U.S. of "pushing the world into conflict," '
            'and said Russia was "entitled" to respond. Nobody else spoke.')
    pushing = quote_at(text, "pushing the world into conflict,")
    assert is_partial(text, pushing.start)
    assert stance_text(text, pushing) == ('On Thursday, Putin accused the U.S. of "pushing the world into conflict," '
                                          'and said Russia was "entitled" to respond.')
    entitled = quote_at(text, "entitled")
    assert stance_text(text, entitled) == stance_text(text, pushing)


def test_full_quotes_are_read_alone():
    text = '"We will not attack anyone," she said.\nHe said: "Talks resume tomorrow."'
    for words in ("We will not attack anyone,", "Talks resume tomorrow."):
        q = quote_at(text, words)
        assert not is_partial(text, q.start)
        assert stance_text(text, q) == words


def test_sentence_around_stays_inside_the_text():
    assert sentence_around("x", 0, 1) == "x"
    assert sentence_around('a "b" c', 3, 4) == 'a "b" c'
