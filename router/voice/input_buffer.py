"""The caller's input audio buffer: appends, server VAD, commits.

`append()` takes the decoded bytes of one `input_audio_buffer.append` in the
session's input format and returns what they caused: `SpeechStarted`,
`SpeechStopped` and, under server VAD, the `Committed` utterance that follows a
stop (the audio from `audio_start_ms` to `audio_end_ms`, as OpenAI commits it).
With `turn_detection: null` nothing is detected and `commit()` takes the whole
buffer. `clear()` drops it.

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


BufferEvent = SpeechStarted | SpeechStopped | Committed | TimedOut


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
        self._configure_detector()

    # -- configuration ------------------------------------------------------------------

    def configure(self, fmt: AudioFormat, vad: VadSettings | None) -> None:
        """`session.update`: a new format drops the buffer; new VAD settings restart it."""
        new_format = fmt != self.format
        if new_format:
            self._base = self._samples_at(self.position_ms, fmt.rate)
            self._pcm.clear()
            self.format = fmt
        if new_format or vad != self.vad:
            self.vad = vad
            self._configure_detector()

    def _configure_detector(self) -> None:
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
        events: list[BufferEvent] = []
        for event in self._detector.feed(self._to_vad.push(pcm16), now):
            events.append(event)
            if isinstance(event, SpeechStarted):
                self._speech_start_ms = event.audio_start_ms
                self._idle_from = None
            else:
                utterance = self._take(
                    self._speech_start_ms, event.audio_end_ms, event.speech_end_at, now
                )
                events.append(Committed(utterance))
                self._idle_from = event.audio_end_ms
        if not self._detector.speaking:
            assert self.vad is not None
            self._bound(self.vad.prefix_padding_ms + FRAME_MS * (START_WINDOW + 1))
            timeout, since, end = self.vad.idle_timeout_ms, self._idle_from, self.position_ms
            if timeout and since is not None and end - since >= timeout:
                events.append(TimedOut(round(since), round(end)))
                self._idle_from = None
        return events

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
        if self._detector is not None:
            self._detector.reset(end_ms)
        return utterance

    def clear(self) -> None:
        self._base += len(self._pcm) // 2
        self._pcm.clear()
        if self._detector is not None:
            self._detector.reset(int(self.position_ms))

    # -- internals ----------------------------------------------------------------------

    def _take(self, start_ms: int, end_ms: int, speech_end_at: float, now: float) -> Utterance:
        """Cut [start_ms, end_ms) out of the buffer; what came before it is dropped."""
        rate = self.format.rate
        start = max(0, self._samples_at(start_ms, rate) - self._base)
        end = max(start, min(len(self._pcm) // 2, self._samples_at(end_ms, rate) - self._base))
        del self._pcm[: start * 2]
        self._base += start
        return self._cut(end - start, start_ms, end_ms, speech_end_at, now)

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
