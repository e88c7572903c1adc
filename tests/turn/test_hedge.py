"""The hedge budget and the hedge delay, exactly."""

from __future__ import annotations

import math

import pytest

from router.config import Hedge, Price, Slo
from router.policy.base import EngineView, TargetView
from router.turn.hedge import HedgeBudget, hedge_delay_s
from tests.policy.views import hosted, vllm


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


def test_the_delay_is_fixed_or_the_targets_own_p90_within_bounds() -> None:
    view = TargetView(
        name="t",
        kind="openai",
        price=Price(),
        ttft_quantiles=((0.5, 0.1), (0.9, 0.4), (0.99, 2.0)),
        ttft_samples=100,
    )
    assert hedge_delay_s(Hedge(after_ms=250), view) == 0.25
    assert hedge_delay_s(Hedge(after_ms="adaptive"), view) == 0.4
    assert hedge_delay_s(Hedge(after_ms="adaptive", max_ms=300), view) == 0.3
    fast = TargetView(
        name="f", kind="openai", price=Price(), ttft_quantiles=((0.9, 0.005),), ttft_samples=100
    )
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=20), fast) == 0.02


def test_the_adaptive_delay_leaves_the_backup_time_to_meet_the_slo() -> None:
    adaptive = Hedge(after_ms="adaptive", min_ms=50, max_ms=1000)
    slo = Slo(ttft_ms=500, quantile=0.9)
    primary = hosted("api", p90=0.4)
    # A fast backup (p90 60 ms) can wait for the primary's own p90: 400 ms.
    assert hedge_delay_s(adaptive, primary, hosted("fast", p90=0.06), slo) == pytest.approx(0.4)
    # A backup with a p90 of 300 ms must start by 500 - 300 = 200 ms to help ...
    slow = hosted("slow", p90=0.3)
    assert hedge_delay_s(adaptive, primary, slow, slo) == pytest.approx(0.2)
    # ... and by 150 ms if the primary itself started 50 ms into the turn (a fallback).
    assert hedge_delay_s(adaptive, primary, slow, slo, elapsed_s=0.05) == pytest.approx(0.15)
    # A backup that cannot meet the SLO anyway: as early as the route allows.
    assert hedge_delay_s(adaptive, primary, hosted("late", p90=0.7), slo) == 0.05
    # The SLO's quantile is the one looked at, for both: at p50 the backup needs 150 ms
    # (so 350 ms), a primary with a 400 ms median is late after 400 ms.
    median = Slo(ttft_ms=500, quantile=0.5)
    sluggish = hosted("api", p90=0.8, p50=0.4)
    assert hedge_delay_s(adaptive, sluggish, slow, median) == pytest.approx(0.35)
    assert hedge_delay_s(adaptive, sluggish, hosted("fast", p90=0.06), median) == pytest.approx(0.4)
    # Without an SLO or a backup, only the primary's own p90 counts.
    assert hedge_delay_s(adaptive, primary, slow) == pytest.approx(0.4)
    assert hedge_delay_s(adaptive, primary, None, slo) == pytest.approx(0.4)
    # A fixed delay is fixed.
    assert hedge_delay_s(Hedge(after_ms=250), primary, slow, slo) == 0.25


def test_a_queued_engine_is_hedged_when_late_for_its_queue_not_for_its_idle_ttft() -> None:
    # Sketch p90 50 ms, but a full batch of 8 freeing 10 slots/s: the turn waits for one
    # slot, ln(10) / 10 s at p90, so it is late only after 0.05 + 0.23 s.
    idle = vllm("gpu", waiting=0, running=4, in_flight=4, p50=0.05, p90=0.05)
    assert idle.engine is not None
    full = TargetView(
        name="gpu",
        kind="vllm",
        price=idle.price,
        in_flight=8,
        ttft_quantiles=idle.ttft_quantiles,
        unloaded_ttft_s=0.05,
        completion_rate=10.0,
        engine=EngineView(waiting=0, running=8, kv_usage=0.3, age_s=0.1, stale=False, capacity=8),
    )
    adaptive = Hedge(after_ms="adaptive", min_ms=20, max_ms=1000)
    assert hedge_delay_s(adaptive, idle) == pytest.approx(0.05)
    assert hedge_delay_s(adaptive, full) == pytest.approx(0.05 + math.log(10) / 10)
