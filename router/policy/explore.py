"""Exploration: measuring the targets that might be better than the policy's choice.

A policy ranks on what it has measured; a target it has barely measured, or not for
a while, may be better than it looks. Optimism under uncertainty (as in the UCB
family of bandit algorithms; Auer et al., "Finite-time Analysis of the Multiarmed
Bandit Problem", 2002): each candidate's `optimistic_ttft_s` is what its TTFT may
well be given its evidence (0 for a target never measured, widening again as its
samples age), and a candidate is *promising* when, at that optimistic value, the
policy would have put it first. Among the promising, the one with the least
evidence is explored: the policy's first choice moves down one place.

The cost is a real user's turn on a target that may be worse, so it is a budget:
the route's `exploration` is the share of recent turns that may explore (counted
with exponential decay over about `window` turns, with a floor of one so a quiet
route can still explore). A target never measured at all (no TTFT sample of ours,
nothing in its engine's histogram) and not busy with a turn already is tried
without spending the budget: a new local engine or a fresh route measures every
target within its first few turns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from router.policy.base import Candidate, PlanContext, TargetView
from router.policy.predict import optimistic_ttft_s, predict_ttft_s

#: whether a candidate whose TTFT at the plan's quantile were `optimistic_s` would
#: lead the plan instead of its first candidate
Leads = Callable[[Candidate, float, Candidate], bool]


@dataclass(slots=True)
class ExplorationBudget:
    """At most `rate` of the last ~`window` turns may explore (at least one)."""

    rate: float
    window: float = 200.0
    _turns: float = 0.0
    _spent: float = 0.0

    def record_turn(self) -> None:
        keep = 1.0 - 1.0 / self.window
        self._turns = self._turns * keep + 1.0
        self._spent *= keep

    def try_spend(self) -> bool:
        if self.rate <= 0.0 or self._spent + 1.0 > max(self.rate * self._turns, 1.0):
            return False
        self._spent += 1.0
        return True


def unmeasured(view: TargetView) -> bool:
    """Nothing is known of its TTFT: no sample of ours, nothing in its engine's histogram."""
    return view.ttft_samples == 0 and (view.engine is None or view.engine.ttft_seen == 0)


def faster_than_first(candidate: Candidate, optimistic_s: float, first: Candidate) -> bool:
    """`Leads` for policies that rank on predicted TTFT."""
    return optimistic_s < first.predicted_ttft_s


def explore(
    order: Sequence[Candidate],
    views: Mapping[str, TargetView],
    ctx: PlanContext,
    q: float,
    leads: Leads = faster_than_first,
) -> Candidate | None:
    """The candidate to move to the front to be measured, if any (spends the budget)."""
    budget = ctx.explore
    if budget is not None:
        budget.record_turn()
    if ctx.exploration <= 0.0 or len(order) < 2:
        return None
    first = order[0]
    promising = [c for c in order[1:] if leads(c, optimistic_ttft_s(views[c.name], q), first)]
    if not promising:
        return None
    pick = min(promising, key=lambda c: views[c.name].ttft_evidence)
    view = views[pick.name]
    if unmeasured(view) and view.in_flight == 0:
        return pick
    rescue = _rescue(order[1:], views, ctx, q, first)
    if rescue is not None:
        return rescue
    if budget is not None and budget.try_spend():
        return pick
    return None


def _rescue(
    rest: Sequence[Candidate],
    views: Mapping[str, TargetView],
    ctx: PlanContext,
    q: float,
    first: Candidate,
) -> Candidate | None:
    """A turn the policy's first choice is likelier than not to miss the SLO with (its
    predicted median over the SLO's time) risks little by going to a target that,
    at its optimistic prediction, would make it: explored without the budget, the one
    with the least evidence first.

    A thin sketch is ruled by one outlier: a hosted API seen six times, once stalled,
    has the stall for its p90 until ten more samples outweigh it. Issue 17, tuning
    fleet 7: such a stall came just before a burst, and `latency` queued 30 turns for
    1-5 s on full engines (94 % within the SLO, 99.6 % when the stall fell elsewhere)
    while the API would have answered them in 0.2-0.4 s; 2 % of turns to explore with
    did not measure it back in time."""
    slo = ctx.slo
    if slo is None:
        return None
    slo_s = slo.ttft_ms / 1000.0
    if predict_ttft_s(views[first.name], 0.5) <= slo_s:
        return None  # the first choice is likelier than not to make it: the budget rules
    within = [c for c in rest if optimistic_ttft_s(views[c.name], q) <= slo_s]
    return min(within, key=lambda c: views[c.name].ttft_evidence, default=None)
