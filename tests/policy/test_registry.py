from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from router.policy.base import Policy
from router.policy.registry import FACTORIES, build_policy, plan_turn
from router.policy.specs import PolicySpec
from tests.policy.views import ctx, hosted, request, vllm

SPEC = TypeAdapter(PolicySpec)

ALL_SPECS: list[dict[str, Any]] = [
    {"type": "ordered"},
    {"type": "round_robin"},
    {"type": "random"},
    {"type": "latency", "quantile": 0.5},
    {"type": "p2c"},
    {"type": "slo_cost"},
    {"type": "weighted", "weights": {"ttft": 1.0, "cost": 1.0, "load": 0.5, "affinity": 0.5}},
]

FLEET = [
    vllm("gpu", waiting=2, in_flight=3),
    hosted("api", 0.3),
    hosted("down", 0.2, breaker="open", available=False),
    hosted("spare", 0.6, ttft_samples=2),
]


def build(raw: dict[str, Any]) -> Policy:
    return build_policy(SPEC.validate_python(raw))


def test_every_spec_type_has_a_factory() -> None:
    assert set(FACTORIES) == {raw["type"] for raw in ALL_SPECS}


@pytest.mark.parametrize("raw", ALL_SPECS, ids=lambda raw: raw["type"])
@pytest.mark.parametrize("slo_ms", [None, 300.0])
def test_every_policy_plans_every_survivor_with_its_numbers(
    raw: dict[str, Any], slo_ms: float | None
) -> None:
    policy = build(raw)
    for seed in range(20):
        c = ctx(seed, slo_ms=slo_ms, exploration=0.3)
        plan = plan_turn(policy, request(affinity="gpu"), FLEET, c)
        assert sorted(plan.order) == ["api", "gpu", "spare"]
        assert plan.rejected == (("down", "breaker open"),)
        assert plan.reason.startswith(f"{raw['type']}: ")
        for cand in plan.candidates:
            assert cand.predicted_ttft_s > 0.0
            assert cand.expected_cost_usd >= 0.0
            assert 0.0 <= cand.score <= 1.0
        costs = {cand.name: cand.expected_cost_usd for cand in plan.candidates}
        assert costs["gpu"] == 0.0
        assert costs["api"] == pytest.approx(0.00021)


def test_latency_spec_quantile_reaches_the_policy() -> None:
    fleet = [hosted("steady", 0.3, p50=0.25), hosted("spiky", 0.5, p50=0.1)]
    p50 = build({"type": "latency", "quantile": 0.5})
    p90 = build({"type": "latency"})
    assert plan_turn(p50, request(), fleet, ctx()).order[0] == "spiky"
    assert plan_turn(p90, request(), fleet, ctx()).order[0] == "steady"


def test_each_built_round_robin_keeps_its_own_counter() -> None:
    first, second = build({"type": "round_robin"}), build({"type": "round_robin"})
    fleet = [hosted("a", 0.3), hosted("b", 0.3)]
    assert plan_turn(first, request(), fleet, ctx()).order == ("a", "b")
    assert plan_turn(first, request(), fleet, ctx()).order == ("b", "a")
    assert plan_turn(second, request(), fleet, ctx()).order == ("a", "b")
