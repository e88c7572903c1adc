from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.voice.truncate import SpokenPiece, heard_text, spoken_ms

PIECES = [
    SpokenPiece("Sure, I can book that for you,", 1500.0),
    SpokenPiece(" for two people at seven.", 1000.0),
    SpokenPiece(" Anything else?", 800.0),
]


def test_whole_pieces_played_are_kept() -> None:
    assert heard_text(PIECES, 2500) == "Sure, I can book that for you, for two people at seven."
    assert heard_text(PIECES, 10_000) == "".join(p.text for p in PIECES)
    assert spoken_ms(PIECES) == 3300.0


def test_the_piece_playing_is_cut_to_its_whole_words_heard() -> None:
    # 550 of 1000 ms of " for two people at seven.": 13 of 25 characters, inside "people"
    assert heard_text(PIECES, 2050) == "Sure, I can book that for you, for two"
    assert heard_text(PIECES, 2100) == "Sure, I can book that for you, for two people"


def test_nothing_heard_keeps_nothing() -> None:
    assert heard_text(PIECES, 0) == ""
    assert heard_text(PIECES, 100) == ""  # "Sure," was not finished


def test_text_never_spoken_is_dropped() -> None:
    pieces = [*PIECES[:1], SpokenPiece(" and then some text the TTS never spoke.", 0.0)]
    assert heard_text(pieces, 1500) == "Sure, I can book that for you,"


def test_a_piece_cut_short_is_measured_at_the_pace_of_the_others() -> None:
    pieces = [
        SpokenPiece("Sure, I can book that for you,", 1500.0),  # 50 ms a character
        SpokenPiece(" for two people at seven.", 400.0, complete=False),  # cut after 400 ms
    ]
    # 300 ms into the cut piece at 50 ms a character: 6 characters, " for t" -> " for"
    assert heard_text(pieces, 1800) == "Sure, I can book that for you, for"
    # the client cannot have heard more than was sent
    assert heard_text(pieces, 5000) == heard_text(pieces, 1900)
    alone = [SpokenPiece("Hello there, friend.", 300.0, complete=False)]
    # no complete piece: 65 ms a character, so 300 ms is 4 characters, no whole word
    assert heard_text(alone, 300) == ""
    assert heard_text([SpokenPiece("Hi there", 200.0, complete=False)], 200) == "Hi"


@given(
    st.lists(
        st.tuples(st.text(alphabet="ab ,.", min_size=1, max_size=30), st.floats(1, 3000)),
        min_size=1,
        max_size=6,
    ),
    st.floats(0, 20_000),
    st.floats(0, 20_000),
)
def test_more_audio_played_never_means_less_text_heard(
    raw: list[tuple[str, float]], a: float, b: float
) -> None:
    pieces = [SpokenPiece(text, ms) for text, ms in raw]
    full = "".join(p.text for p in pieces)
    shorter, longer = heard_text(pieces, min(a, b)), heard_text(pieces, max(a, b))
    assert full.startswith(shorter) and full.startswith(longer)
    assert len(shorter) <= len(longer)
