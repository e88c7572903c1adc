from __future__ import annotations

import pytest

from router.signals.ratelimit import (
    LocalLimits,
    ProviderLimits,
    parse_duration,
    parse_rfc3339,
)
from tests.signals.conftest import FakeClock

#: 2024-05-01T12:00:00Z
WALL = 1714564800.0


def wall() -> float:
    return WALL


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1m30.5s", 90.5),
        ("7.66s", 7.66),
        ("2m59.56s", 179.56),
        ("1h2m3s", 3723.0),
        ("250us", 0.00025),
        ("0s", 0.0),
        ("20", 20.0),
        (" 1.5 ", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["", "soon", "1x", "1s2", "s", "-3", "nan", "1s 2s"])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


def test_parse_rfc3339() -> None:
    assert parse_rfc3339("2024-05-01T12:00:30Z") == WALL + 30
    assert parse_rfc3339("2024-05-01T14:00:30.5+02:00") == WALL + 30.5
    assert parse_rfc3339("tomorrow") is None


def test_headroom_is_one_when_nothing_is_known(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update({"content-type": "text/event-stream"})
    assert limits.headroom() == 1.0
    assert limits.exhausted_for_s() is None


def test_openai_headers_give_the_least_headroom_recovering_to_the_reset(
    clock: FakeClock,
) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update(
        {
            "X-RateLimit-Limit-Requests": "100",
            "X-RateLimit-Remaining-Requests": "25",
            "X-RateLimit-Reset-Requests": "10s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "500",
            "x-ratelimit-reset-tokens": "1s",
        }
    )
    assert limits.headroom() == 0.25
    clock.advance(5.0)
    assert limits.headroom() == pytest.approx(0.625, rel=1e-12)  # tokens window has reset
    clock.advance(5.0)
    assert limits.headroom() == 1.0


def test_a_newer_response_replaces_a_window(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    base = {"x-ratelimit-limit-requests": "10", "x-ratelimit-reset-requests": "6m0s"}
    limits.update({**base, "x-ratelimit-remaining-requests": "1"})
    limits.update({**base, "x-ratelimit-remaining-requests": "8"})
    assert limits.headroom() == 0.8


def test_anthropic_headers_with_rfc3339_resets(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2024-05-01T12:00:30Z",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "6000",
            "anthropic-ratelimit-output-tokens-reset": "2024-05-01T12:00:01Z",
        }
    )
    assert limits.headroom() == 0.0
    assert limits.exhausted_for_s() == 30.0
    clock.advance(15.0)
    assert limits.headroom() == 0.5
    assert limits.exhausted_for_s() == 15.0


def test_unsuffixed_headers_with_an_epoch_reset(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update(
        {
            "x-ratelimit-limit": "60",
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(WALL + 20)),
        }
    )
    assert limits.exhausted_for_s() == 20.0


def test_retry_after_holds_headroom_at_zero(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update({"Retry-After": "7"})
    assert limits.headroom() == 0.0
    assert limits.exhausted_for_s() == 7.0
    clock.advance(7.0)
    assert limits.headroom() == 1.0


def test_malformed_headers_are_ignored(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update(
        {
            "x-ratelimit-limit-requests": "lots",
            "x-ratelimit-remaining-requests": "1",
            "x-ratelimit-limit-tokens": "0",
            "x-ratelimit-remaining-tokens": "0",
            "retry-after": "later",
        }
    )
    assert limits.headroom() == 1.0


def test_a_window_without_reset_is_trusted_for_a_minute(clock: FakeClock) -> None:
    limits = ProviderLimits(clock, wall)
    limits.update({"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0"})
    assert limits.exhausted_for_s() == 60.0


def test_local_limits_sliding_window(clock: FakeClock) -> None:
    local = LocalLimits(rpm=2, tpm=100, clock=clock)
    assert local.within
    local.record(30)
    assert local.allow(70)
    assert not local.allow(71)
    clock.advance(30.0)
    local.record(30)
    assert local.usage() == (2, 60)
    assert not local.allow(0)
    assert not local.within
    clock.advance(30.0)  # the first request leaves the window
    assert local.usage() == (1, 30)
    assert local.within
    local.record(70, requests=0)
    assert local.usage() == (1, 100)
    assert not local.within  # no tokens left
    assert local.allow(0)


def test_no_local_limits_allow_everything(clock: FakeClock) -> None:
    local = LocalLimits(rpm=None, tpm=None, clock=clock)
    for _ in range(1000):
        local.record(10_000)
    assert local.within
    assert local.allow(10**9)
    assert local.usage() == (0, 0)


def test_our_sends_since_the_answer_that_reported_a_window_count_against_it(
    clock: FakeClock,
) -> None:
    """A burst sent on one answer's `remaining` must not all go out: the provider has
    counted each send, the headers have not. Sends before the reported request are
    in its count; token windows are left alone (they would need each request's
    tokens)."""
    limits = ProviderLimits(clock, wall)
    limits.sent()  # the request whose answer reports the window
    reported_at = clock()
    clock.advance(0.1)
    limits.sent()  # sent while the first was in flight: not in its headers
    clock.advance(0.2)
    limits.update(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "1000",
            "x-ratelimit-remaining-tokens": "1000",
        },
        sent_at=reported_at,
    )
    assert limits.headroom() == pytest.approx(0.2, abs=1e-3)  # 3 left, 1 of them ours
    limits.sent()
    limits.sent()
    assert limits.headroom() == 0.0  # the bucket is empty: the policy's filter says so
    clock.advance(120.0)  # past a whole refill the sends are given back
    assert limits.headroom() == pytest.approx(0.3 + 0.7 * 120.0 / 360.0, abs=1e-9)


def test_a_requests_bucket_with_less_than_one_request_in_it_has_no_headroom(
    clock: FakeClock,
) -> None:
    # Ten a minute, none left: a second later the bucket has refilled a sixth of a
    # request, and the next one would be a 429; six seconds give one back.
    limits = ProviderLimits(clock, clock)
    limits.update(
        {
            "x-ratelimit-limit-requests": "10",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "60s",
        }
    )
    clock.advance(1.0)
    assert limits.headroom() == 0.0
    clock.advance(5.0)
    assert limits.headroom() == pytest.approx(0.1)
    limits.sent()  # ours, sent on that one request: empty again
    assert limits.headroom() == 0.0
