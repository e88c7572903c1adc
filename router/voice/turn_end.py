"""Semantic VAD's question, on the words heard: has the caller finished their turn?

OpenAI's `semantic_vad` runs a turn-detection model beside the VAD and "dynamically sets
a timeout based on [its] probability": audio trailing off with "uhhm" scores low and
waits longer; `eagerness` `low`, `medium` (`auto`) and `high` wait at most 8, 4 and 2 s.
A cascade has no such model, but at a pause it can hear the words so far (the `stt`
route, asked while the caller is silent) and read how finished they sound:

- a last word an English turn does not end on (a filler such as "um", an article,
  a conjunction, "my", "and I") -> unlikely (0.1-0.15), whatever punctuation the
  speech-to-text added;
- a trailing comma, colon, dash or ellipsis -> unlikely (0.2), as is a last
  preposition with no mark after it ("a table for"; with a full stop: even, "turn
  it on."; with a question mark: likely, "where are you from?");
- a sentence's end (`.`, `?`, `!`, and their full-width forms) -> likely (0.9);
- anything else (no punctuation after a word that could end a turn) -> even (0.5);
- no words at all (a cough, a door) -> certain: nothing to wait for.

The turn then ends after `timeout x (1 - p)^2` of silence since the last word (at least
the pause at which the words were read, at most the timeout): a finished sentence ends
it as soon as its words are read, an even guess waits a quarter of the timeout, a
dangling "for" or "um" two thirds to four fifths of it. Word lists are English; other languages get
the punctuation rules only.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Eagerness = Literal["low", "medium", "high"]

#: the longest silence a turn may wait for, by eagerness (OpenAI's documented maxima)
TIMEOUT_MS: Final[dict[Eagerness, int]] = {"low": 8000, "medium": 4000, "high": 2000}
#: the silence at which the words so far are read: the eager read sooner
PAUSE_MS: Final[dict[Eagerness, int]] = {"low": 500, "medium": 300, "high": 200}

#: spellings speech-to-text models use for hesitations
FILLERS: Final = frozenset(
    {"um", "umm", "uh", "uhh", "uhm", "uhmm", "er", "erm", "ah", "hmm", "mm"}
)
#: words an English turn does not end on: articles, conjunctions, possessive
#: determiners, subject pronouns ("a table for the", "and I")
OPEN_WORDS: Final = frozenset(
    {"a", "an", "the", "and", "but", "or", "nor", "because", "if", "than", "whether"}
    | {"although", "though", "unless", "my", "your", "our", "their", "i", "we", "they"}
    | {"he", "she"}
)
#: prepositions: a turn may end on one ("where are you from?"), rarely without a mark
PREPOSITIONS: Final = frozenset(
    {"to", "of", "for", "with", "from", "in", "on", "at", "by", "about", "into", "like"}
)
_WORDS = re.compile(r"[\w']+")
_OPEN_ENDINGS: Final = (",", ";", ":", "-", "\u2014", "\u2013", "...", "\u2026", "\u3001")
_SENTENCE_ENDINGS: Final = (".", "?", "!", "\u3002", "\uff1f", "\uff01")


def turn_end_probability(text: str) -> float:
    """How likely the caller is done, given the words heard so far."""
    words = _WORDS.findall(text.lower())
    if not words:
        return 1.0
    last = words[-1]
    if last in FILLERS:
        return 0.1
    if last in OPEN_WORDS:
        return 0.15
    tail = text.rstrip().rstrip("\"')]}\u201d\u2019")
    if tail.endswith(_OPEN_ENDINGS):
        return 0.2
    if last in PREPOSITIONS:  # "where are you from?", "turn it on.", "a table for"
        if tail.endswith(("?", "!", "\uff1f", "\uff01")):
            return 0.9
        return 0.5 if tail.endswith((".", "\u3002")) else 0.2
    if tail.endswith(_SENTENCE_ENDINGS):
        return 0.9
    return 0.5


def turn_end_wait_ms(text: str, eagerness: Eagerness) -> int:
    """The silence after the last word at which the turn ends, given these words."""
    timeout = TIMEOUT_MS[eagerness]
    wait = timeout * (1.0 - turn_end_probability(text)) ** 2
    return round(min(timeout, max(PAUSE_MS[eagerness], wait)))


def eagerness_of(value: object) -> Eagerness:
    """`semantic_vad.eagerness`: `auto` (the default) is `medium`, as OpenAI's."""
    if value == "low":
        return "low"
    if value == "high":
        return "high"
    return "medium"
