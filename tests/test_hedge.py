"""The hedge budget and the hedge delay, exactly."""

from __future__ import annotations

from router.config import Hedge, Price
from router.hedge import HedgeBudget, hedge_delay_s
from router.policy.base import TargetView


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


def test_the_delay_is_fixed_or_the_targets_own_p90_within_bounds() -> None:
    view = TargetView(
        name="t",
        kind="openai",
        price=Price(),
        ttft_quantiles=((0.5, 0.1), (0.9, 0.4), (0.99, 2.0)),
    )
    assert hedge_delay_s(Hedge(after_ms=250), view) == 0.25
    assert hedge_delay_s(Hedge(after_ms="adaptive"), view) == 0.4
    assert hedge_delay_s(Hedge(after_ms="adaptive", max_ms=300), view) == 0.3
    fast = TargetView(name="f", kind="openai", price=Price(), ttft_quantiles=((0.9, 0.005),))
    assert hedge_delay_s(Hedge(after_ms="adaptive", min_ms=20), fast) == 0.02
