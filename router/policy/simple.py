"""Pickers that ignore live signals: ordered, round robin, random.

They still report each candidate's predicted TTFT and expected cost (for headers
and /admin/targets); their score is positional. They neither apply affinity nor
explore: their order does not depend on what has been measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policy.base import Plan, PlanContext, RoutingRequest, TargetView
from router.policy.rank import positional_candidates, report_quantile


class OrderedPolicy:
    """The route's targets in the order listed: the first available one leads."""

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        cands = positional_candidates(targets, request, report_quantile(ctx))
        return Plan(tuple(cands), "ordered: first available in listed order")


class RoundRobinPolicy:
    """Each turn starts one place further along the list of eligible targets."""

    def __init__(self) -> None:
        self._turns = 0

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        start = self._turns % len(targets) if targets else 0
        self._turns += 1
        rotated = [*targets[start:], *targets[:start]]
        cands = positional_candidates(rotated, request, report_quantile(ctx))
        return Plan(tuple(cands), f"round_robin: place {start + 1} of {len(targets)}")


class RandomPolicy:
    """A uniform shuffle drawn from ctx.rng."""

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        shuffled = list(targets)
        ctx.rng.shuffle(shuffled)
        cands = positional_candidates(shuffled, request, report_quantile(ctx))
        return Plan(tuple(cands), "random: uniform shuffle")
