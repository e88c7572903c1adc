"""Learning from zero (issue 17): the issue's two fleets, turn after turn, with the real
signals on an injected clock. Every target starts unmeasured at the default prior."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from router.config import Price, SignalsConfig, Slo, TargetConfig
from router.policy.base import PlanContext, Policy, RoutingRequest
from router.policy.explore import ExplorationBudget
from router.policy.latency import LatencyPolicy, SloCostPolicy
from router.policy.registry import plan_turn
from router.signals.target import TargetSignals
from tests.signals.conftest import FakeClock

#: a target's TTFT for one turn, from the test's generator
Draw = Callable[[random.Random], float]


def target(name: str, price: float = 0.0) -> TargetConfig:
    return TargetConfig(
        name=name,
        kind="openai",
        base_url=f"http://{name}/v1",
        model="m",
        price=Price(input_per_mtok=price, output_per_mtok=price),
    )


def serve(
    policy: Policy,
    fleet: dict[str, Draw],
    prices: dict[str, float],
    slo: Slo | None,
    *,
    turns: int = 40,
    exploration: float = 0.02,
    seed: int = 0,
) -> list[str]:
    """Each turn: plan, send to the plan's first, wait its TTFT, finish. Returns the
    target of each turn."""
    clock = FakeClock()
    rng = random.Random(seed)
    signals = {n: TargetSignals(target(n, prices[n]), SignalsConfig(), clock) for n in fleet}
    budget = ExplorationBudget(exploration)
    chosen = []
    for _ in range(turns):
        ctx = PlanContext(rng=rng, slo=slo, exploration=exploration, explore=budget)
        views = [s.view() for s in signals.values()]
        first = plan_turn(policy, RoutingRequest(route="r", prompt_tokens=200), views, ctx).order[0]
        chosen.append(first)
        attempt = signals[first].begin(200)
        clock.advance(fleet[first](rng))
        attempt.first_token()
        clock.advance(1.0)  # the answer streams
        attempt.finished(200, 50)
        attempt.release()
        clock.advance(0.5)  # the next turn comes after the last one ended
    return chosen


def fixed(seconds: float) -> Draw:
    return lambda rng: seconds


def lognormal(median: float, sigma: float) -> Draw:
    return lambda rng: rng.lognormvariate(math.log(median), sigma)


def share(chosen: list[str], right: str) -> float:
    window = chosen[10:40]
    return sum(1 for c in window if c == right) / len(window)


@pytest.mark.parametrize("seed", range(5))
def test_latency_finds_the_fast_target_of_two(seed: int) -> None:
    fleet = {"slow": lognormal(0.25, 0.2), "fast": lognormal(0.03, 0.2)}
    chosen = serve(LatencyPolicy(), fleet, {"slow": 0.0, "fast": 0.0}, None, seed=seed)
    assert share(chosen, "fast") >= 0.85, chosen
    assert "fast" in chosen[:3] and "slow" in chosen[:3]  # both measured at once


@pytest.mark.parametrize("seed", range(5))
def test_slo_cost_finds_the_free_target_that_meets_the_slo(seed: int) -> None:
    fleet = {"priced": lognormal(0.02, 0.2), "free": lognormal(0.09, 0.2)}
    prices = {"priced": 1.0, "free": 0.0}
    chosen = serve(SloCostPolicy(), fleet, prices, Slo(ttft_ms=300), seed=seed)
    assert share(chosen, "free") >= 0.85, chosen


@pytest.mark.parametrize("exploration", [0.02, 0.0])
def test_a_new_engine_beside_a_measured_target_is_tried_and_kept(exploration: float) -> None:
    # The "a new local engine would stay unused": the old target is measured at
    # 250 ms; the new one starts at the 500 ms prior. Only exploration ever measures it.
    clock = FakeClock()
    config = SignalsConfig()
    old = TargetSignals(target("old"), config, clock)
    for _ in range(30):
        attempt = old.begin(200)
        clock.advance(0.25)
        attempt.first_token()
        attempt.finished(200, 50)
        attempt.release()
    new = TargetSignals(target("new"), config, clock)
    ctx = PlanContext(
        rng=random.Random(1),
        exploration=exploration,
        explore=ExplorationBudget(exploration),
    )
    chosen = []
    for _ in range(20):
        views = [old.view(), new.view()]
        first = plan_turn(LatencyPolicy(), RoutingRequest("r", 200), views, ctx).order[0]
        chosen.append(first)
        attempt = (old if first == "old" else new).begin(200)
        clock.advance(0.25 if first == "old" else 0.03)
        attempt.first_token()
        attempt.finished(200, 50)
        attempt.release()
    if exploration:
        assert chosen[0] == "new" and chosen[1:] == ["new"] * 19
    else:
        assert chosen == ["old"] * 20
