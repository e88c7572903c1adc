"""The caller's input audio buffer: appends, server VAD, commits.

`append()` takes the decoded bytes of one `input_audio_buffer.append` in the
session's input format and returns what they caused: `SpeechStarted`,
`SpeechStopped` and, under server VAD, the `Committed` utterance that follows a
stop (the audio from `audio_start_ms` to `audio_end_ms`, as OpenAI commits it).
With `turn_detection: null` nothing is detected and `commit()` takes the whole
buffer. `clear()` drops it.

Under semantic VAD (`vad.eagerness`) a stop is only a pause: `append()` returns
`Paused` with the speech so far (kept in the buffer) and a pause number, for the
words to be read (`router.voice.turn_end`), and waits. `end_turn_after(pause, ms)`
then says how much silence after the last word ends the turn; with no answer it ends
at the eagerness's timeout. Speech before that is `Resumed`: the same turn goes on (no
second `SpeechStarted`). The turn's end is a `SpeechStopped` and the `Committed`
utterance up to that moment, as under server VAD.

`idle_timeout_ms` (server VAD): once that much audio has passed with no speech since
the timer was armed (`idle(from_ms)`: at `response.done` plus its audio's length, as
OpenAI counts it, or when speech stopped), `append()` returns `TimedOut` for the
silent segment. It is counted in the session's audio, as every position is: a
client that stops streaming audio gets no timeout.

The buffer holds PCM16 at the format's own rate (G.711 is decoded on the way in),
which is what goes to speech-to-text, wrapped as WAV. The VAD hears 16 kHz (24 kHz
PCM is resampled, `QQ`) or G.711's 8 kHz as is. Positions are milliseconds of
session audio, counted in samples of the input, so they stay exact across clears.

Memory is bounded: under server VAD, audio older than the prefix padding is
dropped while nobody speaks; with manual commits the buffer keeps the last
`max_buffer_s` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.clock import Clock
from router.voice.codec import AudioFormat
from router.voice.resample import Resampler
from router.voice.turn_end import TIMEOUT_MS
from router.voice.vad import (
    FRAME_MS,
    START_WINDOW,
    VAD_RATES,
    FrameClassifier,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    VadSettings,
)

DEFAULT_MAX_BUFFER_S = 300.0


@dataclass(frozen=True, slots=True)
class Utterance:
    """Committed audio: PCM16 mono at `rate`."""

    pcm16: bytes
    rate: int
    audio_start_ms: int
    audio_end_ms: int
    #: the end of the user's speech (router clock): the last voiced frame under server
    #: VAD, the commit itself for a manual commit
    speech_end_at: float
    committed_at: float

    @property
    def duration_s(self) -> float:
        return len(self.pcm16) / 2 / self.rate


@dataclass(frozen=True, slots=True)
class Committed:
    utterance: Utterance


@dataclass(frozen=True, slots=True)
class TimedOut:
    """No speech in [audio_start_ms, audio_end_ms): the idle timeout's segment."""

    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class Paused:
    """Semantic VAD: the caller paused. `utterance` is the speech so far (still in the
    buffer); `pause` names this pause to `end_turn_after`."""

    utterance: Utterance
    pause: int


@dataclass(frozen=True, slots=True)
class Resumed:
    """Semantic VAD: speech again after a pause, before the turn ended: the same turn."""


@dataclass(slots=True)
class _Pause:
    number: int
    #: the last word's end, in ms of session audio, and on the router's clock
    speech_end_ms: int
    speech_end_at: float
    #: the turn ends here unless speech resumes first
    end_ms: int


BufferEvent = SpeechStarted | SpeechStopped | Committed | TimedOut | Paused | Resumed


class InputAudioBuffer:
    def __init__(
        self,
        fmt: AudioFormat | None = None,
        vad: VadSettings | None = None,
        *,
        clock: Clock,
        max_buffer_s: float = DEFAULT_MAX_BUFFER_S,
        classifier: FrameClassifier | None = None,
    ) -> None:
        self._clock = clock
        self._max_buffer_s = max_buffer_s
        self._classifier = classifier
        self._pcm = bytearray()
        #: session samples before `_pcm[0]`
        self._base = 0
        self.format = fmt or AudioFormat()
        self.vad = vad
        self._detector: TurnDetector | None = None
        self._to_vad: Resampler | None = None
        self._speech_start_ms = 0
        #: the idle timeout counts from here (ms of session audio); None: not armed
        self._idle_from: float | None = None
        #: semantic VAD: the pause the turn may end in
        self._pause: _Pause | None = None
        self._pauses = 0
        self._configure_detector()

    # -- configuration ------------------------------------------------------------------

    def configure(self, fmt: AudioFormat, vad: VadSettings | None) -> bool:
        """`session.update`: a new format drops the buffer; new VAD settings restart it
        (True: either happened, and any pause is forgotten)."""
        new_format = fmt != self.format
        if new_format:
            self._base = self._samples_at(self.position_ms, fmt.rate)
            self._pcm.clear()
            self.format = fmt
        if new_format or vad != self.vad:
            self.vad = vad
            self._configure_detector()
            return True
        return False

    def _configure_detector(self) -> None:
        self._pause = None
        if self.vad is None:
            self._detector = self._to_vad = None
            return
        rate = self.format.rate if self.format.rate in VAD_RATES else 16_000
        self._detector = TurnDetector(self.vad, rate, self._classifier)
        self._detector.reset(int(self.position_ms))
        self._idle_from = self.position_ms
        self._to_vad = Resampler(self.format.rate, rate, quality="QQ")

    # -- positions ----------------------------------------------------------------------

    @property
    def position_ms(self) -> float:
        """Milliseconds of audio appended since the session began."""
        return (self._base + len(self._pcm) // 2) * 1000.0 / self.format.rate

    @property
    def buffered_ms(self) -> float:
        return len(self._pcm) // 2 * 1000.0 / self.format.rate

    @staticmethod
    def _samples_at(ms: float, rate: int) -> int:
        return round(ms * rate / 1000.0)

    # -- client events ------------------------------------------------------------------

    def append(self, data: bytes) -> list[BufferEvent]:
        now = self._clock()
        pcm16 = self.format.decode(data)
        self._pcm += pcm16
        if self._detector is None or self._to_vad is None:
            self._bound(self._max_buffer_s * 1000.0)
            return []
        assert self.vad is not None
        events: list[BufferEvent] = []
        for event in self._detector.feed(self._to_vad.push(pcm16), now):
            if isinstance(event, SpeechStarted):
                pause = self._pause
                if pause is not None:
                    voiced_ms = event.audio_start_ms + self.vad.prefix_padding_ms
                    if voiced_ms < pause.end_ms:  # within the pause: the turn goes on
                        self._pause = None
                        events.append(Resumed())
                        continue
                    events += self._end_turn(now)  # it had ended before this speech
                events.append(event)
                self._speech_start_ms = event.audio_start_ms
                self._idle_from = None
            elif self.vad.eagerness is not None:
                events.append(self._paused(event, now))
            else:
                events.append(event)
                utterance = self._take(
                    self._speech_start_ms, event.audio_end_ms, event.speech_end_at, now
                )
                events.append(Committed(utterance))
                self._idle_from = event.audio_end_ms
        events += self._due(now)
        if not self._detector.speaking and self._pause is None:
            self._bound(self.vad.prefix_padding_ms + FRAME_MS * (START_WINDOW + 1))
            timeout, since, end = self.vad.idle_timeout_ms, self._idle_from, self.position_ms
            if timeout and since is not None and end - since >= timeout:
                events.append(TimedOut(round(since), round(end)))
                self._idle_from = None
        return events

    def end_turn_after(self, pause: int, wait_ms: int) -> list[BufferEvent]:
        """Semantic VAD: the turn paused as `pause` ends after `wait_ms` of silence from
        its last word (sooner than the timeout, never before the pause was heard). Returns
        the turn's end if that moment has passed; nothing for a pause already over."""
        current = self._pause
        if current is None or current.number != pause or self.vad is None:
            return []
        wait_ms = max(wait_ms, self.vad.stop_ms)
        current.end_ms = min(current.end_ms, current.speech_end_ms + wait_ms)
        return self._due(self._clock())

    def idle(self, from_ms: float | None) -> None:
        """Arm the idle timeout from `from_ms` of session audio, or disarm it (None)."""
        self._idle_from = from_ms

    def commit(self) -> Utterance | None:
        """A manual commit: the whole buffer, or None when it is empty."""
        if not self._pcm:
            return None
        now = self._clock()
        rate = self.format.rate
        start_ms = self._base * 1000 // rate
        end_ms = round(self.position_ms)
        utterance = self._cut(len(self._pcm) // 2, start_ms, end_ms, now, now)
        self._pause = None
        if self._detector is not None:
            self._detector.reset(end_ms)
        return utterance

    def clear(self) -> None:
        self._base += len(self._pcm) // 2
        self._pcm.clear()
        self._pause = None
        if self._detector is not None:
            self._detector.reset(int(self.position_ms))

    # -- internals ----------------------------------------------------------------------

    def _paused(self, stop: SpeechStopped, now: float) -> Paused:
        """Semantic VAD: a pause, not yet the turn's end; the speech so far is lent out
        (copied), and the turn ends at the timeout unless told sooner."""
        assert self.vad is not None and self.vad.eagerness is not None
        self._pauses += 1
        speech_end_ms = stop.audio_end_ms - self.vad.stop_ms
        timeout = TIMEOUT_MS[self.vad.eagerness]
        self._pause = _Pause(
            self._pauses, speech_end_ms, stop.speech_end_at, speech_end_ms + timeout
        )
        start, end = self._span(self._speech_start_ms, stop.audio_end_ms)
        utterance = Utterance(
            pcm16=bytes(self._pcm[start * 2 : end * 2]),
            rate=self.format.rate,
            audio_start_ms=self._speech_start_ms,
            audio_end_ms=stop.audio_end_ms,
            speech_end_at=stop.speech_end_at,
            committed_at=now,
        )
        return Paused(utterance, self._pauses)

    def _due(self, now: float) -> list[BufferEvent]:
        pause = self._pause
        if pause is None or self._detector is None:
            return []
        if self._detector.position_ms < pause.end_ms:
            return []
        return self._end_turn(now)

    def _end_turn(self, now: float) -> list[BufferEvent]:
        """Semantic VAD: the paused turn ends at its end: stopped and committed."""
        pause = self._pause
        assert pause is not None
        self._pause = None
        end = pause.end_ms
        utterance = self._take(self._speech_start_ms, end, pause.speech_end_at, now)
        self._idle_from = end
        stopped = SpeechStopped(audio_end_ms=end, speech_end_at=pause.speech_end_at, at=now)
        return [stopped, Committed(utterance)]

    def _take(self, start_ms: int, end_ms: int, speech_end_at: float, now: float) -> Utterance:
        """Cut [start_ms, end_ms) out of the buffer; what came before it is dropped."""
        start, end = self._span(start_ms, end_ms)
        del self._pcm[: start * 2]
        self._base += start
        return self._cut(end - start, start_ms, end_ms, speech_end_at, now)

    def _span(self, start_ms: int, end_ms: int) -> tuple[int, int]:
        """[start_ms, end_ms) as sample offsets into the buffer, clipped to what it holds."""
        rate = self.format.rate
        start = max(0, self._samples_at(start_ms, rate) - self._base)
        end = max(start, min(len(self._pcm) // 2, self._samples_at(end_ms, rate) - self._base))
        return start, end

    def _cut(
        self, samples: int, start_ms: int, end_ms: int, speech_end_at: float, now: float
    ) -> Utterance:
        """Take the first `samples` of the buffer."""
        pcm16 = bytes(self._pcm[: samples * 2])
        del self._pcm[: samples * 2]
        self._base += samples
        return Utterance(
            pcm16=pcm16,
            rate=self.format.rate,
            audio_start_ms=start_ms,
            audio_end_ms=end_ms,
            speech_end_at=speech_end_at,
            committed_at=now,
        )

    def _bound(self, keep_ms: float) -> None:
        excess = len(self._pcm) // 2 - self._samples_at(keep_ms, self.format.rate)
        if excess > 0:
            del self._pcm[: excess * 2]
            self._base += excess
