from __future__ import annotations

import math
from typing import Any

import pytest

from router.config import Price, SignalsConfig, TargetConfig
from router.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.policy.base import QUANTILES, EngineView, TargetView, interpolate
from router.policy.predict import predict_ttft_s, promised_ttft_s
from router.signals.engine import EngineSample
from router.signals.target import TargetSignals
from tests.signals.conftest import FakeClock

WALL = 1714564800.0


class Cancelled(BaseException):
    """Stands in for asyncio.CancelledError / trio.Cancelled."""


def target(**over: Any) -> TargetConfig:
    data: dict[str, Any] = {
        "name": "hosted",
        "kind": "openai",
        "base_url": "https://api.example.com/v1",
        "model": "m",
        "expected_ttft_ms": 400,
        "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6},
    }
    return TargetConfig.model_validate({**data, **over})


SIGNALS = SignalsConfig.model_validate(
    {"ewma_tau_s": 10.0, "breaker_failures": 2, "breaker_base_s": 1.0, "breaker_max_s": 8.0}
)


def make(clock: FakeClock, **over: Any) -> TargetSignals:
    return TargetSignals(target(**over), SIGNALS, clock, wall_clock=lambda: WALL)


def status(code: int, retry_after_s: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError("x", upstream_status=code, retry_after_s=retry_after_s)


def test_an_unmeasured_target_shows_its_prior(clock: FakeClock) -> None:
    view = make(clock, max_context_tokens=8192).view()
    assert view == TargetView(
        name="hosted",
        kind="openai",
        price=Price.model_validate({"input_per_mtok": 0.15, "output_per_mtok": 0.6}),
        breaker="closed",
        available=True,
        in_flight=0,
        ttft_ewma_s=0.4,
        ttft_quantiles=tuple((q, 0.4) for q in QUANTILES),
        ttft_samples=0,
        ttft_evidence=0.0,
        unloaded_ttft_s=0.4,
        tpot_s=None,
        completion_rate=None,
        mean_output_tokens=None,
        ratelimit_headroom=1.0,
        within_local_limits=True,
        max_context_tokens=8192,
        engine=None,
        prior_ttft_s=0.4,
    )
    # The optimistic bounds are computed at their first use (only exploration reads them).
    assert view.ttft_optimistic == ()
    assert view.optimistic_points() == tuple((q, 0.0) for q in QUANTILES)
    assert view.ttft_optimistic == view.optimistic_points()


def test_a_view_names_every_signal(clock: FakeClock) -> None:
    # `_view` builds the snapshot by position (cheaper than by keyword): every field
    # must get its own signal. Each signal gets a value no other one has.
    signals = make(
        clock,
        kind="vllm",
        base_url="http://gpu:8000/v1",
        max_context_tokens=8192,
        rpm=1,
        max_num_seqs=6,
    )
    for ttft in (0.31, 0.32, 0.35):
        signals.ttft_sketch.observe(ttft)
    signals.ttft.observe(0.33)
    signals.unloaded_ttft.observe(0.21)
    signals.free_ttft.observe(0.055)
    signals.tpot.observe(0.011)
    signals.output_tokens.observe(17.0)
    signals._completions.extend([clock(), clock(), clock()])
    signals.provider_limits.update(
        {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "40"}
    )
    signals.local_limits.record(5)
    signals.engine_update(EngineSample(waiting=2.0, running=4.0, kv_usage=0.7))
    leases = [signals.in_flight.acquire() for _ in range(2)]
    signals.breaker.open_for(5.0)
    view = signals.view()
    sketch = signals.ttft_sketch
    assert (view.name, view.kind, view.price) == ("hosted", "vllm", signals.config.price)
    assert (view.breaker, view.available, view.in_flight) == ("open", False, 2)
    assert view.ttft_ewma_s == 0.33
    assert view.ttft_quantiles == sketch.quantiles()
    assert [v for _, v in view.ttft_quantiles] != [0.4] * len(QUANTILES)
    assert view.ttft_samples == 3
    assert view.ttft_evidence == sketch.evidence() > 0.0
    assert view.ttft_optimistic == ()
    assert view.unloaded_ttft_s == 0.21
    assert view.free_ttft_quantiles == tuple((q, 0.055) for q in QUANTILES)
    assert view.tpot_s == 0.011
    assert view.completion_rate == 0.3  # three in the 10 s window
    assert view.mean_output_tokens == 17.0
    assert view.ratelimit_headroom == 0.4
    assert view.within_local_limits is False
    assert view.max_context_tokens == 8192
    assert view.engine == signals.engine.view()
    assert view.engine is not None and view.engine.waiting == 2.0
    assert view.prior_ttft_s == 0.4
    assert view.optimistic_points() == sketch.lower_bounds(view.ttft_evidence)
    del leases


def test_a_full_turn_records_ttft_tpot_completion_and_output_length(clock: FakeClock) -> None:
    signals = make(clock)
    attempt = signals.begin(100)
    assert attempt.admitted
    assert signals.view().in_flight == 1
    clock.advance(0.25)
    attempt.first_token()
    clock.advance(0.05)
    attempt.first_token()  # only the first one counts
    assert attempt.ttft_s == 0.25
    clock.advance(0.95)
    attempt.finished(prompt_tokens=100, completion_tokens=11)
    attempt.release()
    attempt.release()
    view = signals.view()
    assert view.in_flight == 0
    assert view.ttft_ewma_s == 0.25
    assert view.ttft_quantiles == tuple((q, 0.25) for q in QUANTILES)
    assert view.ttft_samples == 1
    assert view.unloaded_ttft_s == 0.25
    assert view.tpot_s == pytest.approx(0.1, rel=1e-12)
    assert view.mean_output_tokens == 11.0
    assert view.completion_rate == 0.1  # one turn over the 10 s window
    clock.advance(10.0)
    assert signals.view().completion_rate is None


def test_optimistic_bounds_taken_at_first_use_are_those_of_the_snapshot(
    clock: FakeClock,
) -> None:
    # A view leaves its optimistic bounds to their first use; they must be the bounds
    # for the evidence the view saw (the time to first token and, with `on:
    # first_answer`, to the first answer), whatever the clock did since.
    signals = make(clock)
    for ttft in (0.2, 0.3, 0.25, 0.6):
        attempt = signals.begin(100)
        clock.advance(ttft)
        attempt.first_token()
        attempt.first_answer()
        clock.advance(0.1)
        attempt.finished(prompt_tokens=100, completion_tokens=5)
        attempt.release()
    clock.advance(5.0)
    for on, sketch in (
        ("first_token", signals.ttft_sketch),
        ("first_answer", signals.answer_sketch),
    ):
        view = signals.view(on)  # type: ignore[arg-type]
        expected = sketch.lower_bounds(view.ttft_evidence)
        assert any(value > 0.0 for _, value in expected)
        clock.advance(30.0)  # the evidence decays: bounds taken now would differ
        assert sketch.lower_bounds() != expected
        fresh = signals.view(on)  # type: ignore[arg-type]
        clock.advance(30.0)
        # a quantile asked before the points: the same value, for the snapshot's evidence
        assert fresh.ttft_optimistic_quantile(0.7) == interpolate(
            sketch.lower_bounds(fresh.ttft_evidence), 0.7, 0.0
        )
        assert view.optimistic_points() == expected
        assert view.ttft_optimistic_quantile(0.9) > 0.0


def test_token_count_stands_in_for_missing_usage(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as attempt:
        clock.advance(0.1)
        attempt.first_token()
        attempt.token_count(5)
        clock.advance(0.4)
        attempt.finished()
    assert signals.view().tpot_s == pytest.approx(0.1, rel=1e-12)
    assert signals.view().mean_output_tokens == 5.0


def test_unloaded_ttft_only_learns_from_attempts_that_ran_alone(clock: FakeClock) -> None:
    signals = make(clock)
    alone = signals.begin(10)
    crowded = signals.begin(10)
    clock.advance(0.125)
    alone.first_token()
    clock.advance(0.375)
    crowded.first_token()
    for a in (alone, crowded):
        a.finished()
        a.release()
    view = signals.view()
    assert view.unloaded_ttft_s == 0.125
    assert view.ttft_ewma_s == 0.5
    assert view.ttft_samples == 2


def test_unloaded_falls_back_to_the_median_when_never_alone(clock: FakeClock) -> None:
    signals = make(clock)
    first = signals.begin(10)
    for _ in range(2):
        with signals.begin(10) as a:
            clock.advance(0.25)
            a.first_token()
            a.finished()
    first.release()
    assert signals.view().unloaded_ttft_s == 0.25  # min(prior 0.4, median 0.25)


def test_vllm_unloaded_needs_the_engine_in_sight_until_the_answer(clock: FakeClock) -> None:
    """A TTFT across a gap in the scrapes (stale_after_s 2 s) is the stall's, not the
    unloaded engine's: the real vLLM burst saw one such 4 s sample lift a 60 ms EWMA
    to 2.3 s and price the fastest engine out. Scraped on time, the same wait counts."""
    signals = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1")
    idle = EngineSample(waiting=0.0, running=0.0, kv_usage=0.0)
    signals.engine_update(idle)
    with signals.begin(10) as a:
        clock.advance(0.0625)
        a.first_token()
        a.finished()
    assert signals.view().unloaded_ttft_s == 0.0625
    with signals.begin(10) as a:
        clock.advance(3.0)  # no scrape for 3 s: the engine (or the router) stalled
        signals.engine_update(idle)
        clock.advance(1.0)
        a.first_token()
        a.finished()
    view = signals.view()
    assert view.unloaded_ttft_s == 0.0625
    assert view.ttft_samples == 2  # still a sample of the TTFT as the client saw it
    for _ in range(4):  # scraped every second
        clock.advance(1.0)
        signals.engine_update(idle)
    with signals.begin(10) as a:
        for _ in range(4):  # the same 4 s wait, the engine in sight all along
            clock.advance(1.0)
            signals.engine_update(idle)
        a.first_token()
        a.finished()
    assert signals.view().unloaded_ttft_s > 1.0


def test_vllm_unloaded_needs_an_empty_fresh_queue(clock: FakeClock) -> None:
    signals = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1")
    assert signals.view().engine == EngineView(0.0, 0.0, 0.0, age_s=0.0, stale=True)
    signals.engine_update(EngineSample(waiting=3.0, running=4.0, kv_usage=0.5))
    with signals.begin(10) as a:
        clock.advance(0.9)
        a.first_token()
        a.finished()
    assert signals.view().unloaded_ttft_s == 0.4  # the prior: that sample was queued
    signals.engine_update(EngineSample(waiting=0.0, running=1.0, kv_usage=0.1))
    with signals.begin(10) as a:
        clock.advance(0.0625)
        a.first_token()
        a.finished()
    view = signals.view()
    assert view.unloaded_ttft_s == 0.0625
    assert view.engine is not None
    assert (view.engine.waiting, view.engine.stale) == (0.0, False)
    clock.advance(2.5)
    assert view.engine is not None
    engine = signals.view().engine
    assert engine is not None
    assert engine.stale


def test_turns_that_queued_are_not_free_slot_samples_so_a_drained_engine_meets_its_slo(
    clock: FakeClock,
) -> None:
    # An engine whose batch size the router does not know yet, scraped now and then.
    signals = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1", expected_ttft_ms=30)
    signals.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))
    for _ in range(3):
        with signals.begin(10) as a:
            clock.advance(0.03)
            a.first_token()
            a.finished()
    # Two turns sent before the next scrape: the policy counts the second as queued
    # behind the first, so it is no sample of a free slot however long it waits.
    first, second = signals.begin(10), signals.begin(10)
    clock.advance(0.03)
    first.first_token()
    clock.advance(0.3)
    second.first_token()
    for a in (first, second):
        a.finished()
        a.release()
    # Another client's turn runs; ours begins beside it with the batch looking roomy,
    # but the next scrape shows it queued: the batch was full.
    signals.engine_update(EngineSample(waiting=0.0, running=1.0, kv_usage=0.1))
    with signals.begin(10) as queued:
        clock.advance(0.05)
        signals.engine_update(EngineSample(waiting=1.0, running=1.0, kv_usage=0.1))
        clock.advance(0.3)
        queued.first_token()
        queued.finished()
    # The queue drains and the scrape sees it empty: a free engine's TTFT is the one
    # its free turns showed, and it keeps a p90 SLO of 400 ms again.
    clock.advance(1.0)
    signals.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))
    view = signals.view()
    assert [s for _, s in view.free_ttft_quantiles] == pytest.approx([0.03] * len(QUANTILES))
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.03)
    assert promised_ttft_s(view, 0.9) <= 0.4


@pytest.mark.parametrize(
    "error",
    [
        UpstreamTimeout("slow", phase="connect"),
        UpstreamConnectError("refused"),
        UpstreamProtocolError("garbled"),
        UpstreamStatusError("x", upstream_status=503),
        UpstreamStatusError("x", upstream_status=408),
    ],
)
def test_target_faults_open_the_breaker(clock: FakeClock, error: Exception) -> None:
    signals = make(clock)
    for _ in range(2):
        with signals.begin(10) as a:
            assert isinstance(
                error,
                UpstreamConnectError
                | UpstreamTimeout
                | UpstreamStatusError
                | UpstreamProtocolError,
            )
            a.failed(error)
    view = signals.view()
    assert (view.breaker, view.available, view.in_flight) == ("open", False, 0)
    assert not signals.begin(10).admitted


def test_client_faults_do_not_penalise_the_target(clock: FakeClock) -> None:
    signals = make(clock)
    for code in (400, 404, 413, 422):
        with signals.begin(10) as a:
            a.failed(status(code))
    assert signals.breaker.consecutive_failures == 0
    assert signals.view().breaker == "closed"


def test_a_rejected_router_key_is_the_targets_fault(clock: FakeClock) -> None:
    # 401/403 mean the key the router holds for this target is wrong: count it.
    signals = make(clock)
    for code in (401, 403, 401):
        with signals.begin(10) as a:
            a.failed(status(code))
    assert signals.view().breaker == "open"


def test_a_429_opens_for_its_retry_after(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.failed(status(429, retry_after_s=7.0))
    view = signals.view()
    assert (view.breaker, view.ratelimit_headroom) == ("open", 0.0)
    assert signals.breaker.open_remaining_s() == 7.0
    clock.advance(7.0)
    view = signals.view()
    assert (view.breaker, view.available, view.ratelimit_headroom) == ("half_open", True, 1.0)


def test_a_429_without_retry_after_waits_for_the_exhausted_window(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.headers(
            {
                "x-ratelimit-limit-tokens": "1000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "20s",
            }
        )
        a.failed(status(429))
    assert signals.breaker.open_remaining_s() == 20.0


def test_a_429_with_no_hint_counts_as_a_failure(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.failed(status(429))
    assert signals.breaker.consecutive_failures == 1
    assert signals.view().breaker == "closed"


def test_a_503_with_retry_after_opens_without_touching_headroom(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.failed(status(503, retry_after_s=3.0))
    assert signals.breaker.open_remaining_s() == 3.0
    assert signals.view().ratelimit_headroom == 1.0


def test_success_resets_consecutive_failures(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.failed(UpstreamConnectError("refused"))
    with signals.begin(10) as a:
        a.finished()
    with signals.begin(10) as a:
        a.failed(UpstreamConnectError("refused"))
    assert signals.view().breaker == "closed"


def test_a_failure_after_the_first_token_still_penalises(clock: FakeClock) -> None:
    signals = make(clock)
    for _ in range(2):
        with signals.begin(10) as a:
            clock.advance(0.1)
            a.first_token()
            a.failed(UpstreamProtocolError("stream ended early"))
    view = signals.view()
    assert view.breaker == "open"
    assert view.ttft_samples == 2
    assert view.completion_rate is None


def test_half_open_admits_one_probe_and_its_verdict_decides(clock: FakeClock) -> None:
    signals = make(clock)
    signals.breaker.open_for(1.0)
    clock.advance(1.0)
    probe = signals.begin(10)
    assert probe.admitted and probe.is_probe
    other = signals.begin(10)
    assert not other.admitted and not other.is_probe
    other.release()
    assert not signals.view().available
    probe.finished()
    probe.release()
    assert signals.view().breaker == "closed"


def test_a_cancelled_probe_frees_the_slot(clock: FakeClock) -> None:
    signals = make(clock)
    signals.breaker.open_for(1.0)
    clock.advance(1.0)
    with signals.begin(10) as probe:
        probe.cancelled()
    assert signals.view().available
    with signals.begin(10) as probe:
        assert probe.is_probe
        probe.failed(status(400))  # the client's fault: no verdict either
    assert signals.view().available


def test_a_failed_probe_reopens_with_the_next_backoff(clock: FakeClock) -> None:
    signals = make(clock)
    for _ in range(2):
        with signals.begin(10) as a:
            a.failed(UpstreamConnectError("refused"))
    assert signals.breaker.open_remaining_s() == 1.0
    clock.advance(1.0)
    with signals.begin(10) as probe:
        probe.failed(UpstreamTimeout("slow", phase="connect"))
    assert signals.breaker.open_remaining_s() == 2.0


def test_a_hedge_loser_is_a_censored_sample(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        clock.advance(0.25)
        a.first_token()
        a.finished()
    with signals.begin(10) as loser:
        clock.advance(0.125)
        loser.cancelled()  # TTFT > 125 ms, below the answer seen: changes no quantile
    view = signals.view()
    assert (view.ttft_ewma_s, view.ttft_samples) == (0.25, 2)
    assert view.ttft_quantiles == tuple((q, 0.25) for q in QUANTILES)
    for _ in range(2):
        with signals.begin(10) as loser:
            clock.advance(0.75)
            loser.cancelled()
            loser.finished()  # ignored: the first outcome stands
    view = signals.view()
    assert view.ttft_ewma_s == 0.75  # the peak-EWMA takes the bound as a peak
    assert view.ttft_samples == 4
    # One answer at 250 ms, two waits past 750 ms: a third of the mass at 250 ms, the
    # rest above 750 ms, reported at its bound.
    assert dict(view.ttft_quantiles) == {
        0.1: 0.25,
        0.25: 0.25,
        0.5: 0.75,
        0.75: 0.75,
        0.9: 0.75,
        0.99: 0.75,
    }
    assert signals.ttft_sketch.quantile(0.3) == 0.25
    assert view.breaker == "closed"
    assert view.completion_rate == 0.1  # the losers did not complete


def test_a_first_token_timeout_is_a_censored_sample_and_a_failure(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        clock.advance(5.0)
        a.failed(UpstreamTimeout("no first token", phase="first_token"))
    view = signals.view()
    assert view.ttft_ewma_s == 5.0
    assert signals.breaker.consecutive_failures == 1


def test_cancellation_after_the_first_token_records_nothing_more(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        clock.advance(0.375)
        a.first_token()
        clock.advance(5.0)
        a.cancelled()
    view = signals.view()
    assert (view.ttft_ewma_s, view.ttft_samples, view.tpot_s) == (0.375, 1, None)


def test_context_manager_books_escaping_errors(clock: FakeClock) -> None:
    signals = make(clock)
    with pytest.raises(UpstreamConnectError), signals.begin(10) as a:
        raise UpstreamConnectError("refused")
    assert a.outcome == "failed"
    assert signals.breaker.consecutive_failures == 1
    with pytest.raises(Cancelled), signals.begin(10) as b:
        clock.advance(2.0)
        raise Cancelled
    assert b.outcome == "cancelled"
    assert signals.view().ttft_ewma_s == 2.0
    with pytest.raises(KeyError), signals.begin(10) as c:
        raise KeyError("a bug of ours")
    assert c.outcome is None
    assert signals.view().in_flight == 0


def test_local_limits_count_begun_turns_and_their_usage(clock: FakeClock) -> None:
    signals = make(clock, rpm=2, tpm=1000)
    with signals.begin(100) as a:
        a.finished(prompt_tokens=120, completion_tokens=80)
    assert signals.local_limits.usage() == (1, 200)
    assert signals.view().within_local_limits
    signals.begin(100).release()
    assert not signals.view().within_local_limits
    clock.advance(60.0)
    assert signals.view().within_local_limits


def test_rate_limit_headers_reach_the_view(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.headers(
            {
                "x-ratelimit-limit-requests": "10",
                "x-ratelimit-remaining-requests": "4",
                "x-ratelimit-reset-requests": "6s",
            }
        )
        a.finished()
    assert signals.view().ratelimit_headroom == 0.4
    clock.advance(3.0)
    assert signals.view().ratelimit_headroom == pytest.approx(0.7, rel=1e-12)


def test_reconfigure_keeps_measurements_and_takes_new_settings(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        clock.advance(0.375)
        a.first_token()
        a.finished()
    faster = SignalsConfig.model_validate({"ewma_tau_s": 1.0, "breaker_failures": 1})
    signals.reconfigure(target(expected_ttft_ms=900, rpm=1), faster)
    view = signals.view()
    assert (view.prior_ttft_s, view.ttft_ewma_s) == (0.9, 0.375)
    with signals.begin(10) as a:
        clock.advance(1.0)
        a.first_token()
        clock.advance(1.0)
        a.failed(UpstreamConnectError("reset"))
    assert signals.view().breaker == "open"  # one failure is enough now
    assert not signals.view().within_local_limits
    assert signals.ttft.value == 1.0  # a peak


def test_a_client_fault_with_retry_after_does_not_open_the_breaker(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10) as a:
        a.failed(status(400, retry_after_s=30.0))
    assert signals.view().breaker == "closed"


def test_a_retry_after_is_clamped_to_max_cooldown_and_inf_never_reaches_the_publisher(
    clock: FakeClock,
) -> None:
    signals = make(clock)  # signals.max_cooldown_s defaults to 300
    published: list[float] = []
    signals.breaker.on_open = lambda seconds, cause: published.append(seconds)
    for wait in (57 * 365 * 86400.0, float("inf"), float("nan")):
        with signals.begin(10) as a:
            a.failed(status(429, retry_after_s=wait))
    assert published and all(0.0 <= s <= 300.0 for s in published)
    assert signals.breaker.open_remaining_s() <= 300.0
    # a peer's cooldown is clamped the same way
    signals.cooldown_from_peer(float("inf"), "retry_after")
    assert signals.breaker.open_remaining_s() <= 300.0


def test_a_rejection_leaves_the_target_untouched(clock: FakeClock) -> None:
    signals = make(clock)
    for _ in range(5):
        with signals.begin(10) as a:
            a.failed(
                UpstreamStatusError(
                    "x", target="hosted", upstream_status=404, rejection="model_not_found"
                )
            )
    assert signals.view().breaker == "closed"


def test_a_unary_attempt_never_feeds_the_ttft_estimators(clock: FakeClock) -> None:
    signals = make(clock)
    with signals.begin(10, measures_ttft=False) as a:
        clock.advance(3.0)
        a.failed(UpstreamTimeout("slow", target="hosted"))
    with pytest.raises(Cancelled), signals.begin(10, measures_ttft=False):
        clock.advance(3.0)
        raise Cancelled  # the client left: a censored sample, if it were a stream
    assert signals.ttft_sketch.count == 0 and signals.answer_sketch.count == 0


def test_a_view_on_first_answer_predicts_from_the_time_to_the_answer(clock: FakeClock) -> None:
    signals = make(clock)
    for _ in range(20):
        with signals.begin(10) as a:
            clock.advance(0.1)
            a.first_token(answer=False)  # reasoning first
            clock.advance(0.9)
            a.first_answer()
            a.finished(10, 5)
    token, answer = signals.view("first_token"), signals.view("first_answer")
    assert token.ttft_quantile(0.9) == pytest.approx(0.1, abs=0.02)
    assert answer.ttft_quantile(0.9) == pytest.approx(1.0, abs=0.05)
    assert answer.ttft_samples == 20


def test_the_first_turn_on_a_probed_engine_warms_it_and_is_not_its_ttft(
    clock: FakeClock,
) -> None:
    """A probe measured the engine at 60 ms; the first turn paid the prefill of a
    system prompt the engine had not cached (100 ms). The engine's figures stay the
    probe's until a turn on the warm cache (62 ms) is seen: the cold one would have
    been its p90 and free-slot TTFT for ten more turns."""
    signals = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1", max_num_seqs=4)
    signals.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))

    def turn(seconds: float, *, representative: bool = True) -> None:
        with signals.begin(200, representative=representative) as a:
            clock.advance(seconds)
            a.first_token()
            a.finished(200, 20)
        clock.advance(0.5)
        signals.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))

    turn(0.060, representative=False)  # the probe
    turn(0.100)  # the warm-up
    view = signals.view()
    assert view.ttft_samples == 1 and signals.measured_at is not None
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.060)
    turn(0.062)
    view = signals.view()
    assert view.free_ttft_quantiles
    assert max(v for _, v in view.free_ttft_quantiles) == pytest.approx(0.062)
    assert predict_ttft_s(view, 0.9) == pytest.approx(0.062)
    assert view.unloaded_ttft_s == pytest.approx(0.062)


def test_an_unprobed_engine_and_a_hosted_target_learn_from_their_first_turn(
    clock: FakeClock,
) -> None:
    engine = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1", max_num_seqs=4)
    engine.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))
    hosted = make(clock)
    for signals in (engine, hosted):
        with signals.begin(200) as a:
            clock.advance(0.1)
            a.first_token()
            a.finished(200, 20)
        assert signals.view().ttft_samples == 1


def test_one_slow_warm_up_turn_does_not_price_an_engine_s_free_slot_at_its_stall(
    clock: FakeClock,
) -> None:
    # A fresh router's three warm-up turns on an 8-slot engine, one of them while the
    # machine stalled (837 ms): its free slot is priced around the median, with a
    # lognormal's spread, not at that one turn (the real engines' burst, 12-07).
    signals = make(clock, kind="vllm", base_url="http://gpu-a:8000/v1", expected_ttft_ms=30)
    signals.engine_update(EngineSample(waiting=0.0, running=1.0, kv_usage=0.1))
    for ttft in (0.030, 0.837, 0.040):
        with signals.begin(10) as a:
            clock.advance(ttft)
            signals.engine_update(EngineSample(waiting=0.0, running=1.0, kv_usage=0.1))
            a.first_token()
            a.finished()
    view = signals.view()
    placed = dict(view.free_ttft_quantiles)
    assert placed[0.5] == pytest.approx(0.040)
    assert placed[0.9] == pytest.approx(0.040 * math.exp(1.2816 * 0.5), rel=1e-3)
    assert predict_ttft_s(view, 0.9) == pytest.approx(placed[0.9])
    # The stall is still in the sketch of all its turns, as measured.
    assert dict(view.ttft_quantiles)[0.9] == pytest.approx(0.837)
