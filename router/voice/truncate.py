"""What the caller heard: cut the assistant's text at `audio_end_ms`.

A cascade speaks its answer piece by piece (`clauses`), and knows how long each
piece's audio is. When the caller interrupts, the client stops playback and sends
`conversation.item.truncate` with `audio_end_ms`, the audio it actually played.
OpenAI then drops the item's transcript altogether; a cascade can do better and
keep the text that was heard, so the next turn's context matches the caller's:

- pieces whose audio ended by `audio_end_ms` are kept whole;
- the piece playing at that moment is kept in proportion to its audio played,
  cut back to the last whole word (a word half heard was not heard);
- pieces after it, or from the first one with no audio (text the TTS never spoke),
  are dropped;
- a piece cut short by the barge-in itself (`complete=False`) has only part of its
  audio: its whole length is estimated from the pace of the complete pieces
  (`DEFAULT_MS_PER_CHAR` without any).

`audio_end_ms` past the spoken audio keeps every spoken piece (the protocol
refuses it as an error; the session checks that against `spoken_ms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: a speaking pace for a piece cut short when no complete piece gives one (~15 chars/s)
DEFAULT_MS_PER_CHAR = 65.0


@dataclass(frozen=True, slots=True)
class SpokenPiece:
    """A piece of the answer's text and the milliseconds of audio it became."""

    text: str
    audio_ms: float
    #: False when its audio was cut short (a barge-in while it played)
    complete: bool = True


def _pace(pieces: Sequence[SpokenPiece]) -> float:
    done = [p for p in pieces if p.complete and p.audio_ms > 0 and p.text.strip()]
    chars = sum(len(p.text) for p in done)
    return sum(p.audio_ms for p in done) / chars if chars else DEFAULT_MS_PER_CHAR


def spoken_ms(pieces: Sequence[SpokenPiece]) -> float:
    return sum(p.audio_ms for p in pieces)


def heard_text(pieces: Sequence[SpokenPiece], audio_end_ms: float) -> str:
    """The text of `pieces` heard in the first `audio_end_ms` of their audio."""
    kept: list[str] = []
    played = 0.0
    for piece in pieces:
        if piece.audio_ms <= 0 and piece.text.strip():
            break  # never spoken
        if piece.complete and played + piece.audio_ms <= audio_end_ms:
            kept.append(piece.text)
            played += piece.audio_ms
            continue
        # the piece playing when the audio stopped (or cut short itself)
        full_ms = piece.audio_ms
        if not piece.complete:
            full_ms = max(full_ms, len(piece.text) * _pace(pieces))
        heard_ms = min(max(0.0, audio_end_ms - played), piece.audio_ms)
        kept.append(_whole_words(piece.text, int(len(piece.text) * heard_ms / full_ms)))
        break
    return "".join(kept).rstrip()


def _whole_words(text: str, chars: int) -> str:
    """`text[:chars]`, less a word cut in the middle."""
    if chars >= len(text):
        return text
    if text[chars].isspace():
        return text[:chars]
    space = max(text.rfind(" ", 0, chars), text.rfind("\n", 0, chars))
    return text[:space] if space > 0 else ""
