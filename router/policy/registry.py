"""From a YAML policy spec to a `Policy`, and one turn's plan: filters, then policy.

Policies are registered by the spec's `type:` name; a stateful one (round robin)
keeps its state in its instance, so build one policy per route.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from router.policy.base import Plan, PlanContext, Policy, RoutingRequest, TargetView
from router.policy.filters import eligible_targets
from router.policy.latency import LatencyPolicy, SloCostPolicy
from router.policy.p2c import PowerOfTwoChoicesPolicy
from router.policy.simple import OrderedPolicy, RandomPolicy, RoundRobinPolicy
from router.policy.specs import (
    LatencySpec,
    OrderedSpec,
    P2CSpec,
    PolicySpec,
    RandomSpec,
    RoundRobinSpec,
    SloCostSpec,
    WeightedSpec,
)
from router.policy.weighted import WeightedPolicy


def _ordered(spec: OrderedSpec) -> Policy:
    return OrderedPolicy()


def _round_robin(spec: RoundRobinSpec) -> Policy:
    return RoundRobinPolicy()


def _random(spec: RandomSpec) -> Policy:
    return RandomPolicy()


def _latency(spec: LatencySpec) -> Policy:
    return LatencyPolicy(spec.quantile)


def _p2c(spec: P2CSpec) -> Policy:
    return PowerOfTwoChoicesPolicy()


def _slo_cost(spec: SloCostSpec) -> Policy:
    return SloCostPolicy()


def _weighted(spec: WeightedSpec) -> Policy:
    return WeightedPolicy(spec.weights, spec.quantile)


#: the spec's `type` picks the factory, so each factory receives its own spec class
FACTORIES: Mapping[str, Callable[[Any], Policy]] = {
    "ordered": _ordered,
    "round_robin": _round_robin,
    "random": _random,
    "latency": _latency,
    "p2c": _p2c,
    "slo_cost": _slo_cost,
    "weighted": _weighted,
}


def build_policy(spec: PolicySpec) -> Policy:
    try:
        factory = FACTORIES[spec.type]
    except KeyError:
        raise ValueError(f"unknown policy type '{spec.type}'") from None
    return factory(spec)


def plan_turn(
    policy: Policy, request: RoutingRequest, views: Sequence[TargetView], ctx: PlanContext
) -> Plan:
    """Filter the route's targets, let the policy rank the survivors, attach the rejected.

    Every candidate of the plan carries its predicted TTFT, expected cost and score.
    Raises NoTargetAvailable (listing each target's reason) when nothing survives.
    """
    survivors, rejected = eligible_targets(request, views)
    plan = policy.plan(request, survivors, ctx)
    if rejected == plan.rejected:  # nothing filtered out (the usual turn): as it is
        return plan
    return Plan(plan.candidates, plan.reason, rejected)
