"""Cut an LLM's streamed text into pieces a TTS can speak while the LLM still streams.

The first piece goes early: at the first clause boundary (`,` `;` `:` or a dash,
followed by a space) once it has `first_min_chars`, so the caller hears audio
after a few words rather than a whole sentence. Later pieces end at sentence
boundaries (`.` `!` `?`, an ellipsis, CJK full stops and marks, a line break), or
at a clause boundary once they grow past `max_chars`, or at the last space before
`hard_max_chars`.
The idea follows what streaming voice stacks do (LiveKit's and Pipecat's sentence
aggregators); no segmentation library streams, so the rules are here and tested.

A boundary needs the character after it: `3.14`, `e.g.`, `U.S.` and `example.com`
are decided only when the next character arrives, and a period is not a boundary
after a known abbreviation (`Dr.`, `e.g.`, `etc.` ...), a single letter (`J. R.`),
a token with an inner period (`U.S.`) or a bare list number (`1.`). When unsure it
does not cut: a missed cut costs a little latency, a wrong one costs prosody.

Pieces partition the text: `"".join(pieces) == text`, whitespace included, so
`truncate` can map audio back to characters. What a TTS gets is `piece.strip()`.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "corp",
        "fig",
        "no",
        "nos",
        "vol",
        "pp",
        "ca",
        "cf",
        "al",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "mt",
        "ft",
        "min",
        "max",
        "avg",
    ]
)

#: . ! ? and an ellipsis; the CJK full stop, exclamation and question marks
_SENTENCE_END = frozenset(".!?\u2026\u3002\uff01\uff1f")
#: , ; : and the em and en dashes
_CLAUSE_END = frozenset(",;:\u2014\u2013")
#: what may close a sentence after its mark: quotes (straight, guillemet, curly), brackets
_CLOSERS = frozenset("\"')]}\u00bb\u201d\u2019")
_OPENERS = "\"'([{\u00ab\u201c\u2018"
_NUMBER = re.compile(r"\d{1,3}")


def _is_space(ch: str) -> bool:
    return ch.isspace()


class ClauseSplitter:
    """Feed it deltas with `push`; `flush` at the end of the answer."""

    __slots__ = ("_buf", "_emitted", "first_min_chars", "hard_max_chars", "max_chars")

    def __init__(
        self, *, first_min_chars: int = 12, max_chars: int = 150, hard_max_chars: int = 300
    ) -> None:
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self.hard_max_chars = hard_max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        """The pieces that `delta` completed (often none)."""
        self._buf += delta
        pieces = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            pieces.append(self._buf[:cut])
            self._buf = self._buf[cut:]
            self._emitted += 1
        return pieces

    def flush(self) -> list[str]:
        """The rest, as one piece (none if it is empty)."""
        rest, self._buf = self._buf, ""
        return [rest] if rest else []

    # -- boundaries -----------------------------------------------------------------------

    def _next_cut(self) -> int | None:
        buf = self._buf
        first = self._emitted == 0
        clause_from = self.first_min_chars if first else self.max_chars
        last_space = None
        for i, ch in enumerate(buf):
            if i + 1 >= len(buf):
                break  # every boundary needs the character after it
            nxt = buf[i + 1]
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                continue
            if _is_space(ch):
                last_space = i
            if i + 1 >= self.hard_max_chars and last_space:
                return last_space + 1
            if not _is_space(nxt) and nxt not in _CLOSERS:
                continue
            if ch in _CLOSERS:
                continue
            end = i + 1
            while end < len(buf) and buf[end] in _CLOSERS:
                end += 1
            if end >= len(buf) or not _is_space(buf[end]):
                continue
            if ch in _SENTENCE_END and self._sentence_ends(buf, i):
                return end
            if ch in _CLAUSE_END and end >= clause_from:
                return end
        return None

    @staticmethod
    def _sentence_ends(buf: str, i: int) -> bool:
        """Is the period at `i` the end of a sentence (rather than of an abbreviation)?"""
        if buf[i] != ".":
            return True
        start = i
        while start > 0 and not _is_space(buf[start - 1]):
            start -= 1
        token = buf[start:i].lstrip(_OPENERS)
        if not token:
            return True
        if token.lower() in ABBREVIATIONS:
            return False
        if len(token) == 1 and token.isalpha():
            return False  # an initial: J. R. R. Tolkien
        if "." in token and any(c.isalpha() for c in token):
            return False  # U.S., e.g, Ph.D
        # "1. " opening a list item is not a sentence
        return not (_NUMBER.fullmatch(token) and not buf[:start].strip())
