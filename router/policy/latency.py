"""Pickers on predicted TTFT: `latency` (fastest first) and `slo_cost` (cheapest
target that meets the route's SLO, so free local GPUs take traffic until their
queue would break the SLO, then it spills to hosted APIs, and returns as it drains).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policy.base import Candidate, Plan, PlanContext, RoutingRequest, TargetView
from router.policy.explore import Leads
from router.policy.predict import DEFAULT_QUANTILE, attainment, doubt, predict_ttft_s
from router.policy.rank import (
    finish_plan,
    fmt_ms,
    fmt_q,
    fmt_slo,
    fmt_usd,
    make_candidate,
    ratio_score,
)


def _by_predicted_ttft(
    targets: Sequence[TargetView], request: RoutingRequest, q: float
) -> list[Candidate]:
    """Fastest first (ties keep the listed order); score = best prediction / own."""
    preds = [predict_ttft_s(v, q) for v in targets]
    best = min(preds)
    cands = [
        make_candidate(v, request, p, ratio_score(best, p))
        for v, p in zip(targets, preds, strict=True)
    ]
    return sorted(cands, key=lambda c: c.predicted_ttft_s)


class LatencyPolicy:
    """Lowest predicted TTFT at `quantile` first."""

    def __init__(self, quantile: float = DEFAULT_QUANTILE) -> None:
        self.quantile = quantile

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        ranked = _by_predicted_ttft(targets, request, self.quantile)
        pred = fmt_ms(ranked[0].predicted_ttft_s)
        body = f"lowest predicted {fmt_q(self.quantile)} (pred {pred})"
        return finish_plan(
            "latency", ranked, targets, request, ctx, body=body, q=self.quantile, ties=True
        )


#: a turn whose best chance of answering within the SLO's time is below this is lost
LOST = 0.5


class SloCostPolicy:
    """Among targets meeting the SLO (their prediction at its quantile, as far as its
    evidence lets it be trusted: `predict.promised_ttft_s`), the cheapest first (ties:
    faster); then the rest
    by predicted TTFT. If none meets it, the one likeliest to answer within the SLO's
    time first (`predict.attainment`). Without an SLO: `latency`.

    A turn no target is even likely to answer in time (each misses the SLO's time more
    often than not, `LOST`) is lost wherever it goes: it goes where it is predicted to
    be answered soonest (at p90, as `latency` ranks), not to a full engine's small
    chance. Sent to the likeliest, such turns piled onto a queued engine whose slim
    odds they shared (2-10 %), and the queue they made sank the turns behind them
    that could still have made it (issue 17's tuning fleets whose engines ran full
    lost 9-25 points of attainment to it; 93.9 -> 94.7 % pooled over seeds 0-99 with
    adaptive hedging, for 0.5 % more cost). The soonest is often a hosted API, with no
    queue to add to."""

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        slo = ctx.slo
        if slo is None:
            ranked = _by_predicted_ttft(targets, request, DEFAULT_QUANTILE)
            body = (
                f"no SLO configured, lowest predicted {fmt_q(DEFAULT_QUANTILE)}"
                f" (pred {fmt_ms(ranked[0].predicted_ttft_s)})"
            )
            return finish_plan(
                "slo_cost", ranked, targets, request, ctx, body=body, q=DEFAULT_QUANTILE, ties=True
            )

        budget_s = slo.ttft_ms / 1000.0
        by_ttft = _by_predicted_ttft(targets, request, slo.quantile)
        views = {v.name: v for v in targets}
        promises = {c.name: c.predicted_ttft_s * doubt(views[c.name]) <= budget_s for c in by_ttft}
        meeting = sorted(
            (c for c in by_ttft if promises[c.name]),
            key=lambda c: (c.expected_cost_usd, c.predicted_ttft_s),
        )
        rest = [c for c in by_ttft if not promises[c.name]]
        likely: dict[str, float] = {}
        soonest: dict[str, float] = {}
        if not meeting:
            # None can promise the SLO's quantile: the likeliest to make the SLO at all
            # goes first (a fast API with rare stalls beats a full engine's long wait),
            # unless none is likely to: then the soonest to answer.
            likely = {c.name: attainment(views[c.name], budget_s) for c in rest}
            if max(likely.values()) >= LOST:
                rest.sort(key=lambda c: (-likely[c.name], c.predicted_ttft_s))
            else:
                soonest = {c.name: predict_ttft_s(views[c.name], DEFAULT_QUANTILE) for c in rest}
                rest.sort(key=lambda c: soonest[c.name])
        n = len(by_ttft)
        # Positional score: the ranking is lexicographic, not a single metric.
        ranked = [
            Candidate(c.name, c.predicted_ttft_s, c.expected_cost_usd, (n - i) / n)
            for i, c in enumerate([*meeting, *rest])
        ]
        first = ranked[0]
        if meeting:
            body = (
                f"cheapest meeting {fmt_slo(slo)}"
                f" (pred {fmt_ms(first.predicted_ttft_s)}, {fmt_usd(first.expected_cost_usd)})"
            )
        elif soonest:
            body = (
                f"none meets {fmt_slo(slo)} or is likely within {slo.ttft_ms:g}ms"
                f" (best {max(likely.values()):.0%}), soonest at {fmt_q(DEFAULT_QUANTILE)}"
                f" (pred {fmt_ms(soonest[first.name])})"
            )
        else:
            body = (
                f"none meets {fmt_slo(slo)}, likeliest within {slo.ttft_ms:g}ms"
                f" ({likely[first.name]:.0%}, pred {fmt_ms(first.predicted_ttft_s)})"
            )
        return finish_plan(
            "slo_cost",
            ranked,
            targets,
            request,
            ctx,
            body=body,
            q=slo.quantile,
            leads=cheaper_within(budget_s, first_meets=bool(meeting)),
            ties=True,
            cost_first=True,
        )


def cheaper_within(budget_s: float, first_meets: bool) -> Leads:
    """`Leads` for slo_cost: a candidate that, at its optimistic prediction, would meet
    the SLO and be cheaper than the first (or as cheap and faster); when the first
    does not meet the SLO, one that would meet it, or be faster.

    Whether the first meets it is the plan's own verdict (`first_meets`: its
    prediction within the SLO as far as its evidence can be trusted), not its
    prediction alone: a cheap API seen once at 353 ms under a 376 ms SLO does not
    promise it, and led by it, a pricier API never measured was not explored for
    a hundred turns on tuning fleet 96 (issue 17) while the first missed a turn in
    five."""

    def leads(candidate: Candidate, optimistic_s: float, first: Candidate) -> bool:
        meets = optimistic_s <= budget_s
        if not first_meets or first.predicted_ttft_s > budget_s:
            return meets or optimistic_s < first.predicted_ttft_s
        if not meets:
            return False
        cost, first_cost = candidate.expected_cost_usd, first.expected_cost_usd
        if cost < first_cost * (1.0 - 1e-9):
            return True
        return cost <= first_cost * (1.0 + 1e-9) and optimistic_s < first.predicted_ttft_s

    return leads
