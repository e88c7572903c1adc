"""What every picker shares: candidates, session affinity, exploration, reason text.

A picker ranks; `finish_plan` then applies the two overrides every signal-driven
policy has, in this order, and writes the reason:

- affinity: the target that served the conversation's previous turn goes first
  (its prefix cache is warm) while its predicted TTFT still meets the route's SLO;
- exploration: with probability `ctx.exploration`, a lightly measured target goes
  first instead, so a recovered or new target is noticed. Like affinity it is
  bounded by the SLO: only a target predicted to meet it is explored, since an
  exploration turn is a real user's turn (a target that cannot meet the SLO is
  still measured whenever it serves as a hedge or a fallback).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from router.config import Slo
from router.policy.base import Candidate, Plan, PlanContext, RoutingRequest, TargetView
from router.policy.predict import (
    DEFAULT_QUANTILE,
    FEW_SAMPLES,
    expected_cost_usd,
    predict_ttft_s,
)


def fmt_q(q: float) -> str:
    return f"p{q * 100:g}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def fmt_usd(dollars: float) -> str:
    """Two significant digits, never in exponent form: $0.00002, $0.012, $1.5."""
    if dollars <= 0.0:
        return "$0"
    decimals = max(2, 1 - math.floor(math.log10(dollars)))
    return "$" + f"{dollars:.{decimals}f}".rstrip("0").rstrip(".")


def fmt_slo(slo: Slo) -> str:
    return f"{fmt_q(slo.quantile)}<={slo.ttft_ms:g}ms"


def clamp01(x: float) -> float:
    return 0.0 if math.isnan(x) else min(max(x, 0.0), 1.0)  # NaN counts as worst


def ratio_score(best: float, value: float) -> float:
    """best / value for lower-is-better metrics: 1.0 for the best, towards 0 for worse."""
    return 1.0 if value <= 0.0 else clamp01(best / value)


def report_quantile(ctx: PlanContext) -> float:
    """The quantile a policy without its own reports predictions at."""
    return ctx.slo.quantile if ctx.slo is not None else DEFAULT_QUANTILE


def make_candidate(
    view: TargetView, request: RoutingRequest, predicted_ttft_s: float, score: float
) -> Candidate:
    return Candidate(
        name=view.name,
        predicted_ttft_s=predicted_ttft_s,
        expected_cost_usd=expected_cost_usd(view, request),
        score=clamp01(score),
    )


def positional_candidates(
    ordered: Sequence[TargetView], request: RoutingRequest, q: float
) -> list[Candidate]:
    """Candidates for a fixed order: score 1.0 for the first, falling by 1/n per place."""
    n = len(ordered)
    return [
        make_candidate(v, request, predict_ttft_s(v, q), (n - i) / n) for i, v in enumerate(ordered)
    ]


def meets_slo(view: TargetView, slo: Slo | None) -> tuple[bool, float]:
    """Whether the target's predicted TTFT at the SLO quantile meets it, and that prediction."""
    q = slo.quantile if slo is not None else DEFAULT_QUANTILE
    predicted = predict_ttft_s(view, q)
    return (slo is None or predicted <= slo.ttft_ms / 1000.0), predicted


def _promote(order: list[Candidate], name: str) -> None:
    i = next(k for k, c in enumerate(order) if c.name == name)
    order.insert(0, order.pop(i))


def apply_affinity(
    order: list[Candidate],
    views: Mapping[str, TargetView],
    request: RoutingRequest,
    ctx: PlanContext,
) -> tuple[str | None, bool]:
    """Put the affinity target first if it is a candidate within the SLO.

    Returns a reason fragment (None when the request has no affinity among the
    candidates) and whether the target now leads because of it.
    """
    name = request.affinity_target
    if name is None or name not in views:
        return None, False
    ok, predicted = meets_slo(views[name], ctx.slo)
    if not ok and ctx.slo is not None:
        return f"affinity {name} dropped (pred {fmt_ms(predicted)} > {fmt_slo(ctx.slo)})", False
    _promote(order, name)
    within = f", within {fmt_slo(ctx.slo)}" if ctx.slo is not None else ""
    return f"affinity (pred {fmt_ms(predicted)}{within})", True


def apply_exploration(
    order: list[Candidate], views: Mapping[str, TargetView], ctx: PlanContext
) -> str | None:
    """With probability ctx.exploration, move a rarely or least recently measured
    non-first candidate that meets the SLO to the front; returns a reason fragment
    if it did."""
    if ctx.exploration <= 0.0 or len(order) < 2 or ctx.rng.random() >= ctx.exploration:
        return None
    rest = [c for c in order[1:] if meets_slo(views[c.name], ctx.slo)[0]]
    if not rest:
        return None
    few = [c for c in rest if views[c.name].ttft_samples < FEW_SAMPLES]
    if few:
        pick = ctx.rng.choice(few)
        why = f"{views[pick.name].ttft_samples} samples"
    else:
        pick = max(rest, key=lambda c: _age(views[c.name]))
        why = "least recently measured"
    _promote(order, pick.name)
    return f"explore {pick.name} ({why})"


def _age(view: TargetView) -> float:
    return math.inf if view.ttft_age_s is None else view.ttft_age_s


def finish_plan(
    policy: str,
    ranked: Sequence[Candidate],
    targets: Sequence[TargetView],
    request: RoutingRequest,
    ctx: PlanContext,
    *,
    body: str,
    affinity: bool = True,
) -> Plan:
    """Apply affinity (optionally) and exploration to a ranking and write the reason."""
    views = {v.name: v for v in targets}
    order = list(ranked)
    if affinity:
        note, promoted = apply_affinity(order, views, request, ctx)
        if promoted:
            body = note or body
        elif note:
            body = f"{body}; {note}"
    explored = apply_exploration(order, views, ctx)
    if explored:
        body = f"{explored} instead of {body}"
    return Plan(candidates=tuple(order), reason=f"{policy}: {body}")
