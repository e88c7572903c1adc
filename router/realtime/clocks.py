"""Time to first audio and first text of each response, on one injected clock.

A response's clock starts when the client asks for it (`response.create`) or,
under server VAD, when the server commits the user's audio
(`input_audio_buffer.committed`), whichever comes first since the last response
began answering. The first `response.output_audio.delta` after the start is the
time to first audio (TTFA); the first text delta (`output_text` or the audio
transcript) beside it is the time to first text. A response that ends or is
cancelled before its first audio yields no TTFA sample; `waiting_s` says for how
long it had waited, a censored sample for the caller to keep if it wants.

The relay calls `audio()` and `text()` on every delta, so both return at once
when nothing is pending.
"""

from __future__ import annotations

from router.clock import Clock


class ResponseClock:
    __slots__ = ("_audio_from", "_clock", "_started", "_text_from")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started: float | None = None
        self._audio_from: float | None = None
        self._text_from: float | None = None

    @property
    def pending(self) -> bool:
        """A response was asked for and has not produced audio yet."""
        return self._audio_from is not None

    def start(self) -> None:
        """`response.create` sent, or `input_audio_buffer.committed` received."""
        if self._started is None:
            now = self._clock()
            self._started = self._audio_from = self._text_from = now

    def audio(self) -> float | None:
        """An audio delta: the TTFA in seconds if it is the response's first."""
        started = self._audio_from
        if started is None:
            return None
        self._audio_from = None
        self._started = None
        return self._clock() - started

    def text(self) -> float | None:
        """A text delta: the time to first text in seconds if it is the first."""
        started = self._text_from
        if started is None:
            return None
        self._text_from = None
        if self._audio_from is None:
            self._started = None
        return self._clock() - started

    def done(self) -> float | None:
        """The response ended. Returns how long a response that produced neither audio
        nor text had waited (a censored TTFA), and forgets it."""
        started = self._audio_from
        silent = self._text_from is not None  # no text either: not a text-only answer
        self._started = self._audio_from = self._text_from = None
        return None if started is None or not silent else self._clock() - started
