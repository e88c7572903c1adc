from __future__ import annotations

import pytest

from router.config import TranscriptionPrice
from router.realtime.usage import RealtimeUsage, transcription_cost
from tests.realtime.harness import Price


def test_cached_tokens_are_billed_once_at_the_cached_price() -> None:
    usage = RealtimeUsage.from_usage(
        {
            "input_tokens": 1500,
            "output_tokens": 300,
            "input_token_details": {
                "text_tokens": 500,
                "audio_tokens": 1000,
                "cached_tokens": 600,
                "cached_tokens_details": {"text_tokens": 200, "audio_tokens": 400},
            },
            "output_token_details": {
                "text_tokens": 100,
                "audio_tokens": 200,
                "reasoning_tokens": 50,
            },
        }
    )
    assert (usage.text_input, usage.audio_input, usage.cached_tokens) == (300, 600, 600)
    assert usage.input_tokens == 1500 and usage.output_tokens == 300
    expected = (300 * 4 + 600 * 32 + 600 * 0.4 + 100 * 24 + 200 * 64) / 1e6
    assert usage.cost(Price()) == pytest.approx(expected)


def test_cached_split_by_share_when_details_are_missing() -> None:
    usage = RealtimeUsage.from_usage(
        {"input_token_details": {"text_tokens": 100, "audio_tokens": 300, "cached_tokens": 200}}
    )
    assert (usage.cached_text_input, usage.cached_audio_input) == (50, 150)
    assert (usage.text_input, usage.audio_input) == (50, 150)


def test_without_details_everything_is_text() -> None:
    usage = RealtimeUsage.from_usage({"input_tokens": 10, "output_tokens": 5})
    assert (usage.text_input, usage.text_output, usage.audio_output) == (10, 5, 0)
    assert RealtimeUsage.from_response({"status": "failed", "usage": None}) is None


def test_usage_adds_up() -> None:
    one = RealtimeUsage(text_input=1, audio_output=2)
    assert (one + one).audio_output == 4 and (one + one).input_tokens == 2


def test_a_transcript_is_billed_at_the_transcription_models_prices() -> None:
    price = TranscriptionPrice(audio_input=6.0, text_input=2.5, text_output=10.0, per_minute=0.006)
    tokens = {
        "type": "tokens",
        "input_tokens": 1000,
        "output_tokens": 50,
        "input_token_details": {"text_tokens": 100, "audio_tokens": 900},
    }
    assert transcription_cost(tokens, price) == pytest.approx((100 * 2.5 + 900 * 6 + 50 * 10) / 1e6)
    duration = {"type": "duration", "seconds": 30}
    assert transcription_cost(duration, price) == pytest.approx(0.003)
    # no price, no usage, or a duration no transcript has: nothing
    assert transcription_cost(tokens, None) == 0.0
    assert transcription_cost("30 s", price) == 0.0
    assert transcription_cost({"type": "duration", "seconds": float("inf")}, price) == 0.0
