"""Power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized Load
Balancing", 2001) over Finagle's peak-EWMA load: TTFT EWMA x (in-flight + 1).

Two distinct candidates are drawn with ctx.rng and the lighter leads; the rest
follow by the same load metric, so fallback and hedging still go lightest next.
Sampling two rather than taking the global minimum avoids herding every router
instance onto the same momentarily idle target.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policy.base import Plan, PlanContext, RoutingRequest, TargetView
from router.policy.predict import peak_ewma_cost, predict_ttft_s
from router.policy.rank import finish_plan, make_candidate, ratio_score, report_quantile


class PowerOfTwoChoicesPolicy:
    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        q = report_quantile(ctx)
        costs = [peak_ewma_cost(v) for v in targets]
        lightest = min(costs)
        cands = [
            make_candidate(v, request, predict_ttft_s(v, q), ratio_score(lightest, c))
            for v, c in zip(targets, costs, strict=True)
        ]
        if len(targets) < 2:
            return finish_plan("p2c", cands, targets, request, ctx, body="only one target")
        i, j = ctx.rng.sample(range(len(targets)), 2)
        winner, loser = (i, j) if costs[i] <= costs[j] else (j, i)
        rest = sorted((k for k in range(len(targets)) if k != winner), key=lambda k: costs[k])
        ranked = [cands[winner], *(cands[k] for k in rest)]
        body = f"lighter of two sampled (load {costs[winner]:.3g}s vs {costs[loser]:.3g}s)"
        return finish_plan("p2c", ranked, targets, request, ctx, body=body)
