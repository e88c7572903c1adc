"""What every picker shares: candidates, ties, session affinity, exploration, reasons.

A picker ranks; `share_ties` lets equally good candidates share the load (the one
with less outstanding work first, a draw of `ctx.rng` between equals), and
`finish_plan` then applies the two overrides every signal-driven policy has, in
this order, and writes the reason:

- affinity: the target that served the conversation's previous turn goes first
  (its prefix cache is warm) while its predicted TTFT still meets the route's SLO;
- exploration (`explore.py`): a target that might be better than the first, at
  its optimistic prediction, and is the least measured such, goes first instead,
  within the route's exploration budget (a never-measured one for free).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from router.config import Slo
from router.policy.base import Candidate, Plan, PlanContext, RoutingRequest, TargetView
from router.policy.explore import Leads, explore, faster_than_first
from router.policy.predict import (
    DEFAULT_QUANTILE,
    expected_cost_usd,
    load,
    predict_ttft_s,
    promised_ttft_s,
)

#: predictions this close (relative, or absolute in seconds) are equally good
TIE_RELATIVE = 0.05
TIE_ABSOLUTE_S = 0.002


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
        Candidate(v.name, predict_ttft_s(v, q), expected_cost_usd(v, request), (n - i) / n)
        for i, v in enumerate(ordered)
    ]


def meets_slo(view: TargetView, slo: Slo | None) -> tuple[bool, float]:
    """Whether the target's TTFT at the SLO quantile, as far as it can be trusted
    (`promised_ttft_s`), meets it; and its prediction."""
    q = slo.quantile if slo is not None else DEFAULT_QUANTILE
    promised = promised_ttft_s(view, q)
    return (slo is None or promised <= slo.ttft_ms / 1000.0), predict_ttft_s(view, q)


def _promote(order: list[Candidate], name: str) -> None:
    i = next(k for k, c in enumerate(order) if c.name == name)
    order.insert(0, order.pop(i))


def apply_affinity(
    order: list[Candidate],
    views: Mapping[str, TargetView],
    request: RoutingRequest,
    ctx: PlanContext,
    *,
    no_dearer: bool = False,
) -> tuple[str | None, bool]:
    """Put the affinity target first if it is a candidate within the SLO (and, with
    `no_dearer`, no dearer than the first when the first meets the SLO too).

    Returns a reason fragment (None when the request has no affinity among the
    candidates) and whether the target now leads because of it.
    """
    name = request.affinity_target
    if name is None or name not in views:
        return None, False
    ok, predicted = meets_slo(views[name], ctx.slo)
    if not ok and ctx.slo is not None:
        return f"affinity {name} dropped (pred {fmt_ms(predicted)} > {fmt_slo(ctx.slo)})", False
    first = order[0]
    if no_dearer and first.name != name and meets_slo(views[first.name], ctx.slo)[0]:
        mine = next(c for c in order if c.name == name)
        if mine.expected_cost_usd > first.expected_cost_usd * (1.0 + 1e-9):
            return f"affinity {name} dropped (dearer than {first.name} within the SLO)", False
    _promote(order, name)
    within = f", within {fmt_slo(ctx.slo)}" if ctx.slo is not None else ""
    return f"affinity (pred {fmt_ms(predicted)}{within})", True


def equally_good(a: Candidate, b: Candidate) -> bool:
    """Same expected cost, and predicted TTFTs within the tie tolerance."""
    tolerance = max(TIE_RELATIVE * min(a.predicted_ttft_s, b.predicted_ttft_s), TIE_ABSOLUTE_S)
    return (
        abs(a.expected_cost_usd - b.expected_cost_usd)
        <= 1e-9 * max(a.expected_cost_usd, b.expected_cost_usd)
        and abs(a.predicted_ttft_s - b.predicted_ttft_s) <= tolerance
    )


def share_ties(
    ranked: list[Candidate], views: Mapping[str, TargetView], ctx: PlanContext
) -> list[Candidate]:
    """The leading candidates that are equally good as the first, least loaded first
    (equal loads in a random order from ctx.rng); the rest as ranked."""
    if len(ranked) < 2 or not equally_good(ranked[0], ranked[1]):
        return ranked
    n = 2
    while n < len(ranked) and equally_good(ranked[0], ranked[n]):
        n += 1
    tied = sorted(ranked[:n], key=lambda c: (load(views[c.name]), ctx.rng.random()))
    return [*tied, *ranked[n:]]


def finish_plan(
    policy: str,
    ranked: Sequence[Candidate],
    targets: Sequence[TargetView],
    request: RoutingRequest,
    ctx: PlanContext,
    *,
    body: str,
    affinity: bool = True,
    q: float | None = None,
    leads: Leads = faster_than_first,
    ties: bool = False,
    cost_first: bool = False,
) -> Plan:
    """Share ties (for rankings on predictions), apply affinity (optionally) and
    exploration, and write the reason.

    `q` is the quantile the policy ranked at (the SLO's, else p90); `leads` says
    whether a candidate at an optimistic prediction would have led the ranking;
    `cost_first` (slo_cost) keeps affinity from moving a turn to a dearer target
    than a first choice that meets the SLO: a conversation a hedge or a spill put on
    a priced API returns to the free engine once that meets the SLO again."""
    views = {v.name: v for v in targets}
    order = share_ties(list(ranked), views, ctx) if ties else list(ranked)
    if affinity:
        note, promoted = apply_affinity(order, views, request, ctx, no_dearer=cost_first)
        if promoted:
            body = note or body
        elif note:
            body = f"{body}; {note}"
    pick = explore(order, views, ctx, report_quantile(ctx) if q is None else q, leads)
    if pick is not None:
        view = views[pick.name]
        why = "never measured" if view.ttft_samples == 0 else f"evidence {view.ttft_evidence:.1f}"
        body = f"explore {pick.name} ({why}) instead of {body}"
        _promote(order, pick.name)
    return Plan(candidates=tuple(order), reason=f"{policy}: {body}")
