"""Scorers: one number in [0, 1] per candidate (1 = best), normalised across the
candidates of this turn, as in the Gateway API Inference Extension's scheduler.

A scorer never knows how its signal is measured (that is `signals/` and
`predict.py`), and never picks (that is the policy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from router.policy.base import PlanContext, RoutingRequest, TargetView
from router.policy.predict import expected_cost_usd, load, predict_ttft_s
from router.policy.rank import clamp01, meets_slo

#: scores for each target, in the order given
Scorer = Callable[[RoutingRequest, Sequence[TargetView], PlanContext], list[float]]


def lower_is_better(values: Sequence[float]) -> list[float]:
    """Min-max normalisation, inverted: the lowest value scores 1, the highest 0.

    All equal (or a single candidate): every one scores 1.
    """
    lo, hi = min(values), max(values)
    if hi <= lo:
        return [1.0] * len(values)
    return [clamp01((hi - v) / (hi - lo)) for v in values]


def ttft_scorer(quantile: float) -> Scorer:
    def score(
        request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> list[float]:
        del request, ctx
        return lower_is_better([predict_ttft_s(v, quantile) for v in targets])

    return score


def cost_scorer(
    request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
) -> list[float]:
    del ctx
    return lower_is_better([expected_cost_usd(v, request) for v in targets])


def load_scorer(
    request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
) -> list[float]:
    del request, ctx
    return lower_is_better([load(v) for v in targets])


def affinity_scorer(
    request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
) -> list[float]:
    """1 for the target of the conversation's previous turn while it meets the SLO."""
    return [
        1.0 if v.name == request.affinity_target and meets_slo(v, ctx.slo)[0] else 0.0
        for v in targets
    ]
