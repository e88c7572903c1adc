from __future__ import annotations

import math
from dataclasses import replace

import pytest

from router.policy.registry import plan_turn
from router.policy.scorers import lower_is_better
from router.policy.specs import Weights
from router.policy.weighted import WeightedPolicy
from tests.policy.views import PRICEY, ctx, hosted, request, vllm

# predicted p90 / expected cost: local 400ms / $0, fast 200ms / $0.00042, mid 300ms / $0.00021
# (local: a full batch of 2, so one slot to wait for: Erlang(1) p90 = ln 10 / rate = 0.3 s,
# plus 0.05 unloaded and 0.05 spread)
FULL = vllm("local", running=2.0, rate=math.log(10) / 0.3)
assert FULL.engine is not None
FLEET = [
    replace(FULL, in_flight=2, engine=replace(FULL.engine, capacity=2.0)),
    hosted("fast", 0.2, price=PRICEY),
    hosted("mid", 0.3),
]


def weights(**kw: float) -> Weights:
    return Weights.model_validate({"ttft": 0.0, **kw})


def test_lower_is_better_normalises_to_the_unit_interval() -> None:
    assert lower_is_better([0.4, 0.2, 0.3]) == pytest.approx([0.0, 1.0, 0.5])
    assert lower_is_better([5.0, 5.0]) == [1.0, 1.0]
    assert lower_is_better([7.0]) == [1.0]


def test_weights_decide_between_speed_and_price() -> None:
    speed = WeightedPolicy(weights(ttft=1.0, cost=0.5))
    plan = plan_turn(speed, request(), FLEET, ctx())
    assert plan.order == ("fast", "mid", "local")
    # ttft (0, 1, 0.5) x 1 + cost (1, 0, 0.5) x 0.5, over the weight sum 1.5
    by_name = {c.name: c.score for c in plan.candidates}
    assert by_name == pytest.approx({"local": 0.5 / 1.5, "fast": 1.0 / 1.5, "mid": 0.75 / 1.5})
    assert plan.reason == "weighted: score 1.00 = ttft 1.00x1 + cost 0.00x0.5"

    thrift = WeightedPolicy(weights(ttft=0.5, cost=1.0))
    assert plan_turn(thrift, request(), FLEET, ctx()).order == ("local", "mid", "fast")


def test_load_scorer_prefers_the_less_busy() -> None:
    fleet = [hosted("busy", 0.3, in_flight=8), hosted("idle", 0.3, in_flight=1)]
    plan = plan_turn(WeightedPolicy(weights(load=1.0)), request(), fleet, ctx())
    assert plan.order == ("idle", "busy")


def test_affinity_scorer_counts_only_within_the_slo() -> None:
    policy = WeightedPolicy(weights(ttft=1.0, affinity=0.6))
    # mid: ttft 0.5 + affinity 0.6 beats fast: 1.0
    plan = plan_turn(policy, request(affinity="mid"), FLEET, ctx(slo_ms=350))
    assert plan.order[0] == "mid"
    assert "affinity 1.00x0.6" in plan.reason
    # mid's 300ms breaks a 250ms SLO: no bonus
    plan = plan_turn(policy, request(affinity="mid"), FLEET, ctx(slo_ms=250))
    assert plan.order == ("fast", "mid", "local")


def test_weighted_default_weights_rank_by_ttft() -> None:
    plan = plan_turn(WeightedPolicy(), request(), FLEET, ctx())
    assert plan.order == ("fast", "mid", "local")
