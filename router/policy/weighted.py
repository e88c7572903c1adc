"""The weighted picker: scorers in [0, 1] times their YAML weights, summed; the
highest total leads. Affinity is one of the scorers here, not an override.
"""

from __future__ import annotations

from collections.abc import Sequence

from router.policy.base import Plan, PlanContext, RoutingRequest, TargetView
from router.policy.predict import predict_ttft_s
from router.policy.rank import finish_plan, make_candidate
from router.policy.scorers import Scorer, affinity_scorer, cost_scorer, load_scorer, ttft_scorer
from router.policy.specs import Weights


class WeightedPolicy:
    def __init__(self, weights: Weights | None = None, quantile: float = 0.9) -> None:
        self.weights = weights if weights is not None else Weights.model_validate({})
        self.quantile = quantile
        self._scorers: tuple[tuple[str, float, Scorer], ...] = tuple(
            (name, weight, scorer)
            for name, weight, scorer in (
                ("ttft", self.weights.ttft, ttft_scorer(quantile)),
                ("cost", self.weights.cost, cost_scorer),
                ("load", self.weights.load, load_scorer),
                ("affinity", self.weights.affinity, affinity_scorer),
            )
            if weight > 0.0
        )

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan:
        parts = [(name, w, scorer(request, targets, ctx)) for name, w, scorer in self._scorers]
        totals = [sum(w * scores[i] for _, w, scores in parts) for i in range(len(targets))]
        weight_sum = sum(w for _, w, _ in parts)
        cands = [
            make_candidate(
                v,
                request,
                predict_ttft_s(v, self.quantile),
                totals[i] / weight_sum if weight_sum > 0.0 else 0.0,
            )
            for i, v in enumerate(targets)
        ]
        order = sorted(range(len(targets)), key=lambda i: -totals[i])  # stable on ties
        best = order[0]
        terms = " + ".join(f"{name} {scores[best]:.2f}x{w:g}" for name, w, scores in parts)
        body = f"score {totals[best]:.2f} = {terms}" if terms else "no weights, listed order"
        ranked = [cands[i] for i in order]
        return finish_plan("weighted", ranked, targets, request, ctx, body=body, affinity=False)
