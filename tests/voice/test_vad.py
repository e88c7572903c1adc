"""Server VAD on real speech (eSpeak NG) and on an exact fake classifier."""

from __future__ import annotations

import random
from array import array

from router.voice.vad import FRAME_MS, SpeechStarted, SpeechStopped, TurnDetector, VadSettings

RATE = 16_000
FRAME = RATE * FRAME_MS // 1000 * 2


def _flagged(pattern: str) -> bytes:
    """Frames whose first byte says voiced ('1') or not ('.'), for `_by_flag`."""
    return b"".join((b"\x01" if c == "1" else b"\x00") * FRAME for c in pattern)


def _by_flag(frame: bytes) -> bool:
    return frame[0] == 1


def _run(detector: TurnDetector, pcm: bytes) -> list[SpeechStarted | SpeechStopped]:
    events = []
    for i in range(0, len(pcm), FRAME):
        events += detector.feed(pcm[i : i + FRAME], now=i / FRAME * FRAME_MS / 1000)
    return events


def test_a_single_loud_frame_does_not_start_a_turn() -> None:
    detector = TurnDetector(VadSettings(prefix_padding_ms=0), RATE, _by_flag)
    assert _run(detector, _flagged("....1....1....")) == []
    assert not detector.speaking


def test_start_includes_the_prefix_padding_and_stop_includes_the_silence() -> None:
    settings = VadSettings(prefix_padding_ms=100, silence_duration_ms=60)
    detector = TurnDetector(settings, RATE, _by_flag)
    events = _run(detector, _flagged("..........1111111...."))
    started, stopped = events
    # first voiced frame at 200 ms, minus 100 ms of padding
    assert started == SpeechStarted(audio_start_ms=100, at=0.22)
    # last voiced frame 320-340 ms, then three silent frames: stopped at 400 ms
    assert isinstance(stopped, SpeechStopped)
    assert stopped.audio_end_ms == 400
    assert stopped.speech_end_at == 0.32  # when the last voiced frame arrived
    assert stopped.at == 0.38


def test_a_pause_shorter_than_the_silence_window_keeps_one_turn() -> None:
    pattern = "..111111....111111......................"
    long_window = TurnDetector(VadSettings(silence_duration_ms=200), RATE, _by_flag)
    assert [type(e) for e in _run(long_window, _flagged(pattern))] == [
        SpeechStarted,
        SpeechStopped,
    ]
    short_window = TurnDetector(VadSettings(silence_duration_ms=60), RATE, _by_flag)
    assert [type(e) for e in _run(short_window, _flagged(pattern))] == [
        SpeechStarted,
        SpeechStopped,
        SpeechStarted,
        SpeechStopped,
    ]


def test_frames_split_across_appends_are_joined() -> None:
    detector = TurnDetector(VadSettings(prefix_padding_ms=0), RATE, _by_flag)
    pcm = _flagged("...111")
    events = []
    for i in range(0, len(pcm), 100):  # appends that cut frames anywhere
        events += detector.feed(pcm[i : i + 100], now=0.0)
    assert events == [SpeechStarted(audio_start_ms=60, at=0.0)]


def test_reset_forgets_speech_and_keeps_positions() -> None:
    detector = TurnDetector(VadSettings(prefix_padding_ms=0), RATE, _by_flag)
    _run(detector, _flagged("..111"))
    assert detector.speaking
    detector.reset(position_ms=1000)
    assert not detector.speaking
    (started,) = _run(detector, _flagged(".11"))
    assert isinstance(started, SpeechStarted) and started.audio_start_ms == 1020


def _noise(ms: int, sigma: float) -> bytes:
    rng = random.Random(0)
    n = RATE * ms // 1000
    samples = (int(max(-1, min(1, rng.gauss(0, sigma))) * 32767) for _ in range(n))
    return array("h", samples).tobytes()


def _speaking_share(detector: TurnDetector, pcm: bytes) -> float:
    speaking = 0
    for i in range(0, len(pcm), FRAME):
        detector.feed(pcm[i : i + FRAME], now=0.0)
        speaking += detector.speaking
    return speaking / (len(pcm) // FRAME)


def test_a_higher_threshold_hears_less_noise_as_speech() -> None:
    # steady background noise (about -26 dBFS): WebRTC's lower modes call it speech
    noise = _noise(3000, 0.05)
    low = VadSettings(threshold=0.3, silence_duration_ms=200)
    high = VadSettings(threshold=0.9, silence_duration_ms=200)
    assert _speaking_share(TurnDetector(low, RATE), noise) > 0.95
    assert _speaking_share(TurnDetector(high, RATE), noise) < 0.5


def test_threshold_maps_onto_webrtc_aggressiveness() -> None:
    assert [VadSettings(threshold=t).aggressiveness for t in (0.0, 0.3, 0.5, 0.8, 1.0)] == [
        0,
        1,
        2,
        3,
        3,
    ]
