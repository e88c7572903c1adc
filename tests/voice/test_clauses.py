from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.voice.clauses import ClauseSplitter


def _spoken(text: str, step: int = 1) -> list[str]:
    """What the TTS is asked to say (blank pieces are not sent)."""
    return [p.strip() for p in _split(text, step) if p.strip()]


def _split(text: str, step: int = 1, **kw: int) -> list[str]:
    splitter = ClauseSplitter(**kw)
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += splitter.push(text[i : i + step])
    return pieces + splitter.flush()


def test_the_first_clause_goes_before_the_sentence_ends() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Sure, ") == []  # too short to be worth a TTS request
    assert splitter.push("I can book that for you, ") == ["Sure, I can book that for you,"]
    # later pieces wait for the sentence
    assert splitter.push("for two people, at seven") == []
    assert splitter.push(". What") == [" for two people, at seven."]
    assert splitter.flush() == [" What"]


def test_sentences_end_at_their_punctuation_once_the_next_character_is_seen() -> None:
    splitter = ClauseSplitter()
    assert splitter.push("Hello there!") == []
    assert splitter.push(" How are you?") == ["Hello there!"]
    assert splitter.push("\n") == [" How are you?"]


def test_abbreviations_initials_and_numbers_do_not_end_a_sentence() -> None:
    text = (
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1937. "
        "It costs $3.50, e.g. cheaper than before. Visit example.com today. "
    )
    assert _spoken(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1937.",
        "It costs $3.50, e.g. cheaper than before.",
        "Visit example.com today.",
    ]


def test_list_items_are_whole_lines() -> None:
    text = "Here are two options:\n1. The patio.\n2. The bar. Which one?"
    assert _spoken(text, step=3) == [
        "Here are two options:",
        "1. The patio.",
        "2. The bar.",
        "Which one?",
    ]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert _spoken('He said "stop." Then he left.') == [
        'He said "stop."',
        "Then he left.",
    ]


def test_a_long_run_without_punctuation_is_cut_at_a_space() -> None:
    text = "word " * 100
    pieces = _split(text, hard_max_chars=60)
    assert all(len(p) <= 60 for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-1])


def test_a_long_sentence_is_cut_at_a_clause_boundary() -> None:
    first = "Okay. "
    long_clause = "This is a fairly long clause that keeps going and going, "
    pieces = _split(first + long_clause * 3, max_chars=80)
    assert pieces[0] == "Okay."
    assert max(len(p) for p in pieces) <= 80 + len(long_clause)


@given(st.text(alphabet=st.sampled_from("ab .,!?\n\"'1"), max_size=200), st.integers(1, 7))
def test_pieces_partition_the_text(text: str, step: int) -> None:
    assert "".join(_split(text, step)) == text
