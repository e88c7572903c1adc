"""The hedge budget and the hedge delay, exactly."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from router.config import Hedge, Price, Slo
from router.policy.base import EngineView, TargetView
from router.policy.predict import LOG_SPREAD, Z_90
from router.turn.hedge import HedgeBudget, HedgeSpend, choose_backup, hedge_delay_s
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
    # 30 turns allow 3 extra requests; one fallback took one of them.
    budget.charge()
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    budget.charge()  # a fallback past the rate is still made, and counted
    assert budget.rate == pytest.approx(4 / 30)
    assert not budget.try_spend()


def test_the_cap_is_hard_over_any_run_of_turns_whatever_the_pattern_of_hedges() -> None:
    """Every extra request counts, and no prefix of a run goes over the rate: a burst
    of late turns after a quiet spell cannot borrow against the past (the decaying
    count did: 10.5 % on a held-out fleet with `max_rate: 0.1`)."""
    budget = HedgeBudget(max_rate=0.1, window=200)
    rng = random.Random(7)
    turns = extra = 0
    for i in range(5000):
        budget.record_turn()
        turns += 1
        if rng.random() < 0.02:
            budget.charge()  # a fallback
            extra += 1
        # quiet for a while, then a burst in which every turn wants a hedge
        if (i // 300) % 2 == 1 and budget.try_spend():
            extra += 1
        assert extra <= max(0.1 * turns, 1.0) + 1e-9
    assert 0.05 * turns <= extra  # ... and the budget is used, not starved


def test_a_slot_leaves_the_window_and_frees_its_hedges() -> None:
    budget = HedgeBudget(max_rate=0.5, window=4)
    for _ in range(4):
        budget.record_turn()
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()  # 2 of 4 turns
    budget.record_turn()  # the oldest slot (no hedge in it) leaves
    assert not budget.try_spend()
    for _ in range(3):
        budget.record_turn()  # the slot that held both hedges leaves
    assert budget.try_spend() and budget.try_spend()


def test_a_spend_cap_holds_priced_hedges_to_its_share_of_the_window_and_never_free_ones() -> None:
    spend = HedgeSpend(share=0.1, window=4)
    budget = HedgeBudget(max_rate=1.0, window=4, spend=spend)
    for _ in range(4):
        budget.record_turn()
        spend.first_attempt(1.0)  # four turns: 4.0 spent, 0.4 left for hedges
    assert spend.allows(0.3)
    spend.hedged(0.3)
    assert not spend.allows(0.2)  # 0.5 > 0.4
    assert spend.allows(0.1)
    assert spend.allows(0.0)  # a free target's hedge is never refused
    # The hedge's turn leaves the window after four more, and its spend with it.
    for _ in range(4):
        budget.record_turn()
        spend.first_attempt(1.0)
    assert spend.allows(0.4)
    assert not spend.allows(0.41)
    # A route whose first attempts are all free never hedges to a priced target.
    free = HedgeSpend(share=0.5)
    free.record_turn()
    free.first_attempt(0.0)
    assert not free.allows(1e-9)
    assert free.allows(0.0)


def test_the_budget_of_a_hedge_block_has_a_spend_cap_only_if_it_asks() -> None:
    assert HedgeBudget.of(None).max_rate == 0.0
    assert HedgeBudget.of(Hedge()).spend is None
    capped = HedgeBudget.of(Hedge(max_rate=0.2, max_cost_share=0.05))
    assert capped.max_rate == 0.2
    assert capped.spend is not None and capped.spend.share == 0.05


def test_the_delay_is_fixed_or_late_against_the_body_of_the_targets_distribution() -> None:
    view = TargetView(
        name="t",
        kind="openai",
        price=Price(),
        ttft_quantiles=((0.5, 0.1), (0.9, 0.4), (0.99, 2.0)),
        ttft_samples=100,
    )
    assert hedge_delay_s(Hedge(after_ms=250), view) == 0.25
    # p90 400 ms, past it by twice the body's width (p90 - p50 = 300 ms): 1 s
    assert hedge_delay_s(Hedge(after_ms="adaptive"), view) == pytest.approx(1.0)
    assert hedge_delay_s(Hedge(after_ms="adaptive", max_ms=300), view) == 0.3
    fast = TargetView(
        name="f", kind="openai", price=Price(), ttft_quantiles=((0.9, 0.005),), ttft_samples=100
    )
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=20), fast) == 0.02


def test_a_stall_mass_in_the_p99_does_not_push_the_hedge_past_the_stall() -> None:
    # 3 % of requests stall for 3 s: the p99 is the stall, the body is not.
    stalls = hosted("api", p50=0.2, p90=0.3, p99=3.2)
    delay = hedge_delay_s(Hedge(after_ms="adaptive"), stalls)
    assert delay == pytest.approx(0.3 + 2 * 0.1)
    assert delay < 1.0


def test_thin_evidence_widens_the_late_point() -> None:
    # One probe said 41 ms: a real turn's prefill must not look late at 49 ms.
    once = hosted("gpu", p50=0.041, p90=0.041, p99=0.041, ttft_samples=1, ttft_evidence=1.0)
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=0), once) == pytest.approx(
        0.041 * 1.2 * math.exp(Z_90 * LOG_SPREAD)
    )
    many = replace(once, ttft_samples=400, ttft_evidence=400.0)
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=0), many) == pytest.approx(
        0.041 * 1.2 * math.exp(Z_90 * LOG_SPREAD / 20)
    )


def test_a_target_whose_ttft_does_not_vary_is_not_hedged() -> None:
    # issue 16: 50 ms every time. A delay at its own p90 (50 ms) hedged ~10 % of turns;
    # late means past its body by a fifth of it at least: 60 ms, which it never takes.
    steady = hosted("steady", p50=0.05, p90=0.05, p99=0.05)
    adaptive = Hedge(after_ms="adaptive")
    slo = Slo(ttft_ms=300, quantile=0.9)
    for backup in (None, hosted("other", p50=0.05, p90=0.05, p99=0.05)):
        assert hedge_delay_s(adaptive, steady, backup, slo) == pytest.approx(0.06)
        assert hedge_delay_s(adaptive, steady, backup) == pytest.approx(0.06)


def test_a_turn_at_risk_is_hedged_while_a_hedge_can_land_else_when_late_for_its_target() -> None:
    adaptive = Hedge(after_ms="adaptive", min_ms=50, max_ms=5000)
    slo = Slo(ttft_ms=500, quantile=0.99)
    # p50 300 ms, p90 600 ms: within 500 ms 76.7 % of the time, so a turn waiting for
    # it is more likely than not to miss from its p53 on (330 ms) ...
    primary = hosted("api", p50=0.3, p90=0.6, p99=2.0)
    # ... and a fast backup (p90 60 ms) still lands until 440 ms: hedge then.
    fast = hosted("fast", p90=0.06)
    assert hedge_delay_s(adaptive, primary, fast, slo) == pytest.approx(0.44)
    # A turn that started 50 ms late (after a fallback) has 50 ms less.
    assert hedge_delay_s(adaptive, primary, fast, slo, elapsed_s=0.05) == pytest.approx(0.39)
    # A slow backup (p90 300 ms) would have to start by 200 ms, before the turn is at
    # risk: no hedge can save this SLO, so the turn is hedged when the primary is late
    # for itself (p90 600 ms plus twice the body's width: 1.2 s), not at the SLO's
    # deadline, where a hedge saves no miss and spends the budget (issue 17).
    slow = hosted("slow", p90=0.3)
    assert hedge_delay_s(adaptive, primary, slow, slo) == pytest.approx(1.2)
    # So is a turn whose earlier attempts took it past the SLO already.
    assert hedge_delay_s(adaptive, primary, fast, slo, elapsed_s=0.6) == pytest.approx(1.2)
    # A primary that meets the SLO comfortably is hedged only when late for itself.
    comfortable = hosted("api", p50=0.1, p90=0.15, p99=0.2)
    assert hedge_delay_s(adaptive, comfortable, fast, slo) == pytest.approx(0.15 + 2 * 0.05)
    # A fixed delay is fixed.
    assert hedge_delay_s(Hedge(after_ms=250), primary, slow, slo) == 0.25


def test_a_queued_engine_is_hedged_when_late_for_its_queue_not_for_its_idle_ttft() -> None:
    # A full batch of 8 freeing 10 slots/s: the turn waits for one slot, exponential
    # with rate 10, so its p90 is 0.05 + ln(10) / 10 s and its median 0.05 + ln(2) / 10.
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
    p90, p50 = 0.05 + math.log(10) / 10, 0.05 + math.log(2) / 10
    assert hedge_delay_s(adaptive, full) == pytest.approx(p90 + 2 * (p90 - p50))


def test_the_backup_is_the_cheapest_of_the_nearly_fastest() -> None:
    api = hosted("api", p50=0.08, p90=0.1)
    engine = hosted("gpu", p50=0.1, p90=0.12, price=Price())  # free, 20 % slower
    far = hosted("far", p50=0.2, p90=0.3, price=Price())  # free, but 3x slower
    slo = Slo(ttft_ms=500, quantile=0.99)
    assert choose_backup([api, engine, far], slo) == 1
    assert choose_backup([api, far], slo) == 0
    # judged at p90, not at the SLO's p99 (mostly how a target stalls)
    stalls = hosted("stalls", p50=0.05, p90=0.07, p99=3.0)
    assert choose_backup([api, stalls], slo) == 1


def test_a_free_backup_that_would_still_make_the_slo_is_hedged_to_before_a_priced_one() -> None:
    # The primary, an API at p50 0.2 s / p90 0.25 s, is hedged at its tail (about
    # 0.35 s); a free engine predicted at 0.3 s still lands within the 700 ms SLO from
    # there, so the hedge costs nothing, though a priced API would answer sooner.
    primary = hosted("primary", p50=0.2, p90=0.25)
    api = hosted("api", p50=0.08, p90=0.1)
    engine = hosted("gpu", p50=0.2, p90=0.3, price=Price())
    adaptive = Hedge(after_ms="adaptive")
    roomy = Slo(ttft_ms=700, quantile=0.99)
    assert choose_backup([api, engine], roomy, primary=primary, hedge=adaptive) == 1
    # With 300 ms of the turn gone before the primary started, the engine would land
    # too late: the fast API it is (the rule without a primary: nearly the fastest).
    late = choose_backup([api, engine], roomy, primary=primary, hedge=adaptive, elapsed_s=0.3)
    assert late == 0
    assert choose_backup([api, engine], roomy) == 0
