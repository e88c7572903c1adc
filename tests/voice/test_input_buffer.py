"""The input audio buffer with WebRTC's VAD on real speech, as a real-time client sends it."""

from __future__ import annotations

from router.voice.codec import AudioFormat
from router.voice.input_buffer import Committed, InputAudioBuffer, TimedOut
from router.voice.resample import Resampler
from router.voice.vad import SpeechStarted, SpeechStopped, VadSettings
from tests.voice.audio import frames, silence, speech_24k


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stream(buffer: InputAudioBuffer, clock: FakeClock, pcm: bytes, fmt_ms: int = 20) -> list:  # type: ignore[type-arg]
    events = []
    rate = buffer.format.rate
    size = rate * fmt_ms // 1000 * buffer.format.bytes_per_sample
    for i in range(0, len(pcm), size):
        clock.now += fmt_ms / 1000
        events += buffer.append(pcm[i : i + size])
    return events


SPEECH = speech_24k()
SPEECH_MS = len(SPEECH) // 48  # 24 kHz, 2 bytes a sample


def test_server_vad_commits_the_utterance_with_its_padding() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=VadSettings(), clock=clock)
    events = _stream(buffer, clock, silence(1000) + SPEECH + silence(1000))
    started, stopped, committed = events
    assert isinstance(started, SpeechStarted)
    assert isinstance(stopped, SpeechStopped)
    assert isinstance(committed, Committed)
    # speech begins at 1000 ms; the start is 300 ms of padding earlier (one frame of slack)
    assert 680 <= started.audio_start_ms <= 720
    # the last word ends about 240 ms before the clip does; then 500 ms of silence
    assert 1000 + SPEECH_MS - 300 <= stopped.audio_end_ms - 500 <= 1000 + SPEECH_MS
    utterance = committed.utterance
    assert utterance.rate == 24_000
    assert utterance.audio_start_ms == started.audio_start_ms
    assert utterance.audio_end_ms == stopped.audio_end_ms
    expected_ms = stopped.audio_end_ms - started.audio_start_ms
    assert abs(utterance.duration_s * 1000 - expected_ms) <= 1
    assert SPEECH in utterance.pcm16  # every sample of the speech, unchanged
    # the end of speech is the last voiced frame, the silence window before the commit
    hangover = utterance.committed_at - utterance.speech_end_at
    assert 0.48 <= hangover <= 0.54


def test_pauses_shorter_than_the_window_stay_one_turn() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=VadSettings(), clock=clock)
    # the clip ends with ~240 ms of quiet: 100 ms more keeps the pause under 500 ms
    pcm = silence(500) + SPEECH + silence(100) + SPEECH + silence(800)
    kinds = [type(e) for e in _stream(buffer, clock, pcm)]
    assert kinds == [SpeechStarted, SpeechStopped, Committed]


def test_turns_separated_by_long_pauses_commit_separately_with_session_positions() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=VadSettings(prefix_padding_ms=0), clock=clock)
    pcm = silence(400) + SPEECH + silence(1500) + SPEECH + silence(800)
    commits = [e.utterance for e in _stream(buffer, clock, pcm) if isinstance(e, Committed)]
    assert len(commits) == 2
    second_start = 400 + SPEECH_MS + 1500
    assert abs(commits[1].audio_start_ms - second_start) <= 40
    assert abs(len(commits[0].pcm16) - len(commits[1].pcm16)) <= 2 * 24 * 40


def test_without_turn_detection_only_a_manual_commit_takes_the_audio() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=None, clock=clock)
    assert buffer.commit() is None  # empty: the session answers with an error
    assert _stream(buffer, clock, silence(200) + SPEECH + silence(800)) == []
    utterance = buffer.commit()
    assert utterance is not None
    assert utterance.pcm16 == silence(200) + SPEECH + silence(800)
    assert utterance.audio_start_ms == 0
    assert utterance.speech_end_at == utterance.committed_at == clock.now
    assert buffer.commit() is None
    buffer.append(silence(100))
    buffer.clear()
    assert buffer.commit() is None
    assert abs(buffer.position_ms - (200 + len(SPEECH) / 48 + 800 + 100)) < 0.01


def test_g711_input_is_heard_at_8khz() -> None:
    clock = FakeClock()
    fmt = AudioFormat("audio/pcmu")
    down = Resampler(24_000, 8_000)
    pcm8 = down.push(silence(600) + SPEECH + silence(900)) + down.flush()
    buffer = InputAudioBuffer(fmt, VadSettings(), clock=clock)
    events = _stream(buffer, clock, fmt.encode(pcm8))
    (committed,) = [e for e in events if isinstance(e, Committed)]
    assert committed.utterance.rate == 8_000
    assert 280 <= committed.utterance.audio_start_ms <= 320


def test_memory_stays_bounded() -> None:
    clock = FakeClock()
    vad = InputAudioBuffer(vad=VadSettings(prefix_padding_ms=300), clock=clock)
    for chunk in frames(silence(60_000)):
        vad.append(chunk)
    assert vad.buffered_ms <= 400
    assert round(vad.position_ms) == 60_000
    manual = InputAudioBuffer(vad=None, clock=clock, max_buffer_s=2.0)
    for chunk in frames(silence(10_000)):
        manual.append(chunk)
    assert manual.buffered_ms == 2000


def test_a_new_format_or_vad_setting_applies_to_what_follows() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=None, clock=clock)
    buffer.append(silence(500))
    buffer.configure(AudioFormat(), VadSettings(prefix_padding_ms=0))
    events = _stream(buffer, clock, SPEECH + silence(800))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped, Committed]
    assert abs(events[0].audio_start_ms - 500) <= 20


def test_the_idle_timeout_marks_silence_after_the_last_turn_and_not_during_speech() -> None:
    clock = FakeClock()
    vad = VadSettings(silence_duration_ms=500, idle_timeout_ms=2000)
    buffer = InputAudioBuffer(vad=vad, clock=clock)
    # armed from the start: 1 s of silence, speech, then silence until the timeout
    events = _stream(buffer, clock, silence(1000) + SPEECH + silence(3000))
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, SpeechStopped, Committed, TimedOut]
    stopped, timed_out = events[1], events[3]
    assert timed_out.audio_start_ms == stopped.audio_end_ms  # counted from the stop
    assert 2000 <= timed_out.audio_end_ms - timed_out.audio_start_ms <= 2020
    # once: disarmed until the next response or speech
    assert _stream(buffer, clock, silence(3000)) == []
    buffer.idle(buffer.position_ms + 1000)  # a response whose audio plays 1 s more
    later = _stream(buffer, clock, silence(2900))
    assert later == []
    [again] = _stream(buffer, clock, silence(200))
    assert isinstance(again, TimedOut) and again.audio_end_ms - again.audio_start_ms == 2000
    buffer.idle(None)  # a response in progress: the caller listens
    assert _stream(buffer, clock, silence(5000)) == []


def test_without_an_idle_timeout_silence_is_only_silence() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=VadSettings(), clock=clock)
    assert _stream(buffer, clock, silence(10_000)) == []
