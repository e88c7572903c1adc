"""Semantic VAD's reading of the words heard at a pause."""

from __future__ import annotations

import pytest

from router.voice.turn_end import (
    PAUSE_MS,
    TIMEOUT_MS,
    eagerness_of,
    turn_end_probability,
    turn_end_wait_ms,
)


@pytest.mark.parametrize(
    ("text", "p"),
    [
        ("", 1.0),  # no words: a cough; nothing to wait for
        ("  ", 1.0),
        ("Book a table for two, please.", 0.9),
        ("Where are you from?", 0.9),  # a question may end on a preposition
        ("Turn it on.", 0.5),
        ("I'd like a table for", 0.2),  # a bare preposition: the phrase is open
        ("Book a table for two,", 0.2),
        ("Well...", 0.2),
        ("I was thinking \u2014", 0.2),
        ("I want the", 0.15),
        ("Me and I.", 0.15),  # punctuation does not close what a last "I" opens
        ("Book a table and", 0.15),
        ("So, um", 0.1),
        ("I was going to, uhm.", 0.1),
        ("Book a table", 0.5),  # no mark after a word a turn can end on: even
        ("\u4e24\u4e2a\u4eba\u3002", 0.9),  # full-width marks count too
    ],
)
def test_how_finished_the_words_sound(text: str, p: float) -> None:
    assert turn_end_probability(text) == p


def test_the_wait_scales_with_doubt_within_the_pause_and_the_timeout() -> None:
    # a finished sentence: no longer than the pause it was read at
    assert turn_end_wait_ms("Yes, please.", "medium") == PAUSE_MS["medium"] == 300
    # an even guess: a quarter of the timeout
    assert turn_end_wait_ms("Book a table", "medium") == 1000
    assert turn_end_wait_ms("Book a table", "low") == 2000
    # a dangling word: most of it, never more
    assert turn_end_wait_ms("a table for", "high") == round(2000 * 0.8**2)
    assert turn_end_wait_ms("so um", "low") == round(8000 * 0.9**2)
    assert all(turn_end_wait_ms("the", e) <= TIMEOUT_MS[e] for e in TIMEOUT_MS)


def test_eagerness_auto_and_anything_unknown_is_medium() -> None:
    assert [eagerness_of(v) for v in ("low", "high", "medium", "auto", None, 3)] == [
        "low",
        "high",
        "medium",
        "medium",
        "medium",
        "medium",
    ]
