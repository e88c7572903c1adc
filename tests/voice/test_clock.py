from __future__ import annotations

import pytest

from router.voice.clock import STAGES, VoiceClock


class Ticker:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def _walk(clock: VoiceClock, ticker: Ticker, steps: list[tuple[float, str]]) -> None:
    for delay, mark in steps:
        ticker.now += delay
        clock.mark(mark)  # type: ignore[arg-type]


def test_stages_of_a_spoken_answer_add_up_to_voice_to_voice() -> None:
    ticker = Ticker()
    clock = VoiceClock(ticker, speech_end_at=9.5)
    _walk(
        clock,
        ticker,
        [
            (0.0, "committed"),  # 0.5 s after the last voiced frame
            (0.002, "stt_sent"),
            (0.120, "stt_done"),
            (0.003, "llm_sent"),
            (0.200, "llm_first_token"),
            (0.050, "llm_first_clause"),
            (0.001, "tts_sent"),
            (0.150, "tts_first_audio"),
            (0.004, "first_audio_sent"),
        ],
    )
    stages = clock.stages()
    assert stages is not None
    assert list(stages) == list(STAGES)
    assert stages["vad_hangover"] == pytest.approx(0.5)
    assert stages["stt"] == pytest.approx(0.120)
    assert stages["llm_ttft"] == pytest.approx(0.250)  # to the first clause the TTS can speak
    assert stages["tts_first_audio"] == pytest.approx(0.150)
    assert stages["overhead"] == pytest.approx(0.010)  # 2 + 3 + 1 + 4 ms between the stages
    v2v = clock.voice_to_voice()
    assert v2v == pytest.approx(1.030)
    assert sum(stages.values()) == pytest.approx(v2v)


def test_the_first_attempt_counts_for_fallbacks_and_hedges() -> None:
    ticker = Ticker()
    clock = VoiceClock(ticker)
    _walk(clock, ticker, [(0.0, "stt_sent"), (0.3, "stt_sent"), (0.1, "stt_done")])
    assert clock.span("stt_sent", "stt_done") == pytest.approx(0.4)


def test_a_text_answer_ends_at_its_first_text_and_skips_tts() -> None:
    ticker = Ticker()
    clock = VoiceClock(ticker)
    _walk(clock, ticker, [(0.0, "committed"), (0.001, "llm_sent"), (0.2, "llm_first_token")])
    assert clock.stages() is None
    _walk(clock, ticker, [(0.002, "first_text_sent")])
    stages = clock.stages()
    assert stages is not None
    assert stages["llm_ttft"] == pytest.approx(0.2)
    assert stages["tts_first_audio"] == 0.0 and stages["stt"] == 0.0
    assert stages["overhead"] == pytest.approx(0.003)
    assert clock.voice_to_voice() is None
