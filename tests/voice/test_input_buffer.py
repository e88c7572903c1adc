"""The input audio buffer with WebRTC's VAD on real speech, as a real-time client sends it."""

from __future__ import annotations

from router.voice.codec import AudioFormat
from router.voice.input_buffer import Committed, InputAudioBuffer, Paused, Resumed, TimedOut
from router.voice.resample import Resampler
from router.voice.turn_end import Eagerness
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


# -- semantic VAD: a stop is a pause; the words read at it say when the turn ends ------------


def _semantic(eagerness: Eagerness) -> VadSettings:
    return VadSettings(prefix_padding_ms=0, eagerness=eagerness)


def test_semantic_vad_pauses_and_ends_the_turn_at_the_eagerness_timeout() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=_semantic("high"), clock=clock)  # a 200 ms pause, 2 s at most
    events = _stream(buffer, clock, silence(500) + SPEECH + silence(5000))
    assert [type(e) for e in events] == [SpeechStarted, Paused, SpeechStopped, Committed]
    _, paused, stopped, committed = events
    # the words so far are lent out at the pause; the buffer still holds them
    assert SPEECH[: len(SPEECH) // 2] in paused.utterance.pcm16
    assert paused.utterance.audio_end_ms - paused.utterance.audio_start_ms < SPEECH_MS + 200
    # nobody said when: the turn ends 2 s after the last word, with every sample of it
    last_word_ms = paused.utterance.audio_end_ms - 200
    assert stopped.audio_end_ms == last_word_ms + 2000
    assert committed.utterance.audio_end_ms == stopped.audio_end_ms
    assert SPEECH in committed.utterance.pcm16
    assert committed.utterance.speech_end_at == paused.utterance.speech_end_at


def test_semantic_vad_speech_within_the_pause_goes_on_as_the_same_turn() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=_semantic("medium"), clock=clock)  # a 300 ms pause, 4 s at most
    pcm = silence(300) + SPEECH + silence(700) + SPEECH + silence(5000)
    events = _stream(buffer, clock, pcm)
    kinds = [type(e) for e in events]
    assert kinds[:3] == [SpeechStarted, Paused, Resumed]
    assert kinds.count(SpeechStarted) == kinds.count(SpeechStopped) == kinds.count(Committed) == 1
    [committed] = [e for e in events if isinstance(e, Committed)]
    assert committed.utterance.pcm16.count(SPEECH) == 2  # both, as one turn


def test_semantic_vad_ends_the_turn_when_told_the_words_sound_finished() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=_semantic("low"), clock=clock)  # a 500 ms pause, 8 s at most
    events = _stream(buffer, clock, silence(300) + SPEECH + silence(900))
    assert [type(e) for e in events] == [SpeechStarted, Paused]
    paused = events[1]
    last_word_ms = paused.utterance.audio_end_ms - 500
    # told after the moment: the turn ends at once, at the pause (never sooner)
    stopped, committed = buffer.end_turn_after(paused.pause, 0)
    assert isinstance(stopped, SpeechStopped) and isinstance(committed, Committed)
    assert stopped.audio_end_ms == last_word_ms + 500
    assert SPEECH in committed.utterance.pcm16
    # the silence after the turn's end stays for what follows; a stale answer does nothing
    assert buffer.end_turn_after(paused.pause, 0) == []
    assert _stream(buffer, clock, silence(10_000)) == []


def test_semantic_vad_a_later_end_waits_and_a_stale_pause_is_ignored() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=_semantic("medium"), clock=clock)
    first = _stream(buffer, clock, silence(300) + SPEECH + silence(400))
    paused = first[1]
    assert isinstance(paused, Paused)
    last_word_ms = paused.utterance.audio_end_ms - 300
    assert buffer.end_turn_after(paused.pause, 1500) == []  # not yet: 1.5 s of silence
    events = _stream(buffer, clock, silence(2000))
    assert [type(e) for e in events] == [SpeechStopped, Committed]
    assert events[0].audio_end_ms == last_word_ms + 1500
    # the next turn: an answer meant for the previous pause changes nothing
    again = _stream(buffer, clock, SPEECH + silence(400))
    assert [type(e) for e in again] == [SpeechStarted, Paused]
    assert buffer.end_turn_after(paused.pause, 0) == []


def test_semantic_vad_speech_after_the_turn_ended_within_one_append_starts_a_new_turn() -> None:
    clock = FakeClock()
    buffer = InputAudioBuffer(vad=_semantic("high"), clock=clock)
    # one large append: speech, 2.5 s of silence (past the 2 s timeout), speech again
    events = buffer.append(silence(300) + SPEECH + silence(2500) + SPEECH)
    kinds = [type(e) for e in events]
    # (the clip's own ~240 ms of quiet at its end is a pause of the new turn)
    assert kinds == [SpeechStarted, Paused, SpeechStopped, Committed, SpeechStarted, Paused]
    committed = events[3]
    assert isinstance(committed, Committed) and committed.utterance.pcm16.count(SPEECH) == 1
