"""`response.firsttoken`: the cost of each stage and, once audio went out, the turn's
latency in milliseconds, its stages adding up to voice-to-voice."""

from __future__ import annotations

import pytest

from router.voice.account import Cost, account
from router.voice.clock import STAGES, VoiceClock
from tests.voice.test_clock import Ticker, _walk


def test_latency_is_absent_until_the_first_audio_then_adds_up() -> None:
    ticker = Ticker()
    clock = VoiceClock(ticker, speech_end_at=9.5)
    cost = Cost(llm_usd=0.001, targets={"llm": "local-a"})
    assert account(cost, clock)["latency_ms"] is None
    _walk(
        clock,
        ticker,
        [
            (0.0, "committed"),
            (0.01, "stt_sent"),
            (0.2, "stt_done"),
            (0.01, "llm_sent"),
            (0.1, "llm_first_clause"),
            (0.0, "tts_sent"),
            (0.05, "tts_first_audio"),
            (0.005, "first_audio_sent"),
        ],
    )
    said = account(cost, clock)
    latency = said["latency_ms"]
    assert latency["voice_to_voice"] == pytest.approx(875.0)
    assert latency["vad_hangover"] == pytest.approx(500.0)
    assert latency["stt"] == pytest.approx(200.0)
    assert sum(latency[s] for s in STAGES) == pytest.approx(latency["voice_to_voice"], abs=0.5)
    assert said["stages"]["llm"] == {"target": "local-a", "cost_usd": 0.001}
    assert said["cost_usd"] == pytest.approx(0.001)
