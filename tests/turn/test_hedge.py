"""The hedge budget and the hedge delay, exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from router.config import Hedge, Price, Slo
from router.policy.base import EngineView, TargetView
from router.turn.hedge import HedgeBudget, hedge_delay_s
from tests.policy.views import hosted


def test_a_quiet_route_may_hedge_once_and_a_busy_one_stays_within_its_rate() -> None:
    budget = HedgeBudget(max_rate=0.1)
    budget.record_turn()
    assert budget.try_spend()  # the floor of one
    assert not budget.try_spend()
    spent = 1
    for _ in range(199):
        budget.record_turn()
        spent += budget.try_spend()  # always late: it would hedge every turn if let
    assert spent <= 0.1 * 200
    assert budget.rate <= 0.1 + 1e-9


def test_fallbacks_are_never_refused_but_leave_less_for_hedges() -> None:
    budget = HedgeBudget(max_rate=0.1)
    for _ in range(30):
        budget.record_turn()
    # 30 turns (decayed: 27.9) allow 2 extra requests; one fallback took one of them.
    assert 0.1 * budget._turns == pytest.approx(2.79, abs=0.01)
    budget.charge()
    assert budget.try_spend()
    assert not budget.try_spend()
    budget.charge()  # a fallback past the rate is still made, and counted
    assert budget.rate == pytest.approx(3 / budget._turns)


def test_the_delay_is_fixed_or_late_against_the_targets_own_tail() -> None:
    view = TargetView(
        name="t",
        kind="openai",
        price=Price(),
        ttft_quantiles=((0.5, 0.1), (0.9, 0.4), (0.99, 2.0)),
        ttft_samples=100,
    )
    assert hedge_delay_s(Hedge(after_ms=250), view) == 0.25
    # p99 2 s, and past it by its spread above the median (1.9 s)
    assert hedge_delay_s(Hedge(after_ms="adaptive"), view) == pytest.approx(3.9)
    assert hedge_delay_s(Hedge(after_ms="adaptive", max_ms=300), view) == 0.3
    fast = TargetView(
        name="f", kind="openai", price=Price(), ttft_quantiles=((0.9, 0.005),), ttft_samples=100
    )
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=20), fast) == 0.02


def test_a_target_whose_ttft_does_not_vary_is_not_hedged() -> None:
    # issue 16: 50 ms every time. A delay at its own p90 (50 ms) hedged ~10 % of turns;
    # late means past its tail by a fifth of it at least: 60 ms, which it never takes.
    steady = hosted("steady", p50=0.05, p90=0.05, p99=0.05)
    adaptive = Hedge(after_ms="adaptive")
    slo = Slo(ttft_ms=300, quantile=0.9)
    for backup in (None, hosted("other", p50=0.05, p90=0.05, p99=0.05)):
        assert hedge_delay_s(adaptive, steady, backup, slo) == pytest.approx(0.06)
        assert hedge_delay_s(adaptive, steady, backup) == pytest.approx(0.06)


def test_a_turn_at_risk_of_missing_the_slo_is_hedged_while_a_hedge_can_still_land() -> None:
    adaptive = Hedge(after_ms="adaptive", min_ms=50, max_ms=1000)
    slo = Slo(ttft_ms=500, quantile=0.99)
    # p50 200 ms, p90 400 ms, p99 2 s: within 500 ms 90.6 % of the time (9.4 % miss)
    primary = hosted("api", p50=0.2, p90=0.4, p99=2.0)
    miss = 1 - (0.9 + 0.09 * 0.1 / 1.6)
    # A fast backup (p90 60 ms) can wait until the last moment it still lands: 440 ms.
    assert hedge_delay_s(adaptive, primary, hosted("fast", p90=0.06), slo) == pytest.approx(0.44)
    # A slow backup (p90 300 ms) would have to start by 200 ms, but a turn still waiting
    # then is not yet likely to miss; it is from the primary's quantile 1 - 2 * miss on.
    at_risk = 0.2 + 0.2 * ((1 - 2 * miss) - 0.5) / 0.4
    slow = hosted("slow", p90=0.3)
    assert hedge_delay_s(adaptive, primary, slow, slo) == pytest.approx(at_risk, abs=1e-3)
    # A turn that started 50 ms late (a fallback) has 50 ms less for the fast backup.
    fast = hosted("fast", p90=0.06)
    assert hedge_delay_s(adaptive, primary, fast, slo, elapsed_s=0.05) == pytest.approx(0.39)
    # A primary that meets the SLO comfortably is hedged only when late for itself.
    comfortable = hosted("api", p50=0.1, p90=0.15, p99=0.2)
    assert hedge_delay_s(adaptive, comfortable, fast, slo) == pytest.approx(0.2 + 0.1)
    # A fixed delay is fixed.
    assert hedge_delay_s(Hedge(after_ms=250), primary, slow, slo) == 0.25


def test_a_queued_engine_is_hedged_when_late_for_its_queue_not_for_its_idle_ttft() -> None:
    # A full batch of 8 freeing 10 slots/s: the turn waits for one slot, exponential
    # with rate 10, so its p99 is 0.05 + ln(100) / 10 s and its median 0.05 + ln(2) / 10.
    engine = EngineView(waiting=0, running=8, kv_usage=0.3, age_s=0.1, stale=False, capacity=8)
    full = TargetView(
        name="gpu",
        kind="vllm",
        price=Price(),
        in_flight=8,
        ttft_quantiles=((0.5, 0.05), (0.9, 0.05), (0.99, 0.05)),
        ttft_samples=100,
        unloaded_ttft_s=0.05,
        completion_rate=10.0,
        engine=engine,
    )
    idle = replace(full, in_flight=0, engine=replace(engine, running=0))
    adaptive = Hedge(after_ms="adaptive", min_ms=20, max_ms=5000)
    assert hedge_delay_s(adaptive, idle) == pytest.approx(0.06)
    p99, p50 = 0.05 + math.log(100) / 10, 0.05 + math.log(2) / 10
    assert hedge_delay_s(adaptive, full) == pytest.approx(p99 + (p99 - p50))
