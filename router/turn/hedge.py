"""When to hedge: the delay before a second target starts, and the route's budget.

The budget follows tower's retry budget and Finagle's: extra upstream requests are
a fraction of recent turns, a hard cap counted over a sliding window of turns.
Hedges and fallbacks share it: a fallback is never refused (the turn would fail
without it) but is charged, so a route that is failing over hedges less, and a
failure storm is not amplified. One hedge may be spent when the route has been
quiet (a floor of one, not on top of the rate), so a lone late turn still gets help.

The adaptive delay answers two questions. When is the primary late by its own
standard? Past the high tail of its predicted TTFT distribution (p99, queue
included), by the tail's own spread above the median, and by at least a fifth of
it: a target whose TTFT does not vary is then never hedged, and a turn sent to a
busy engine is not hedged for being as slow as predicted. And when is a hedge the
last that can still save the SLO? At the SLO minus the hedge target's own predicted
TTFT at p90 (or the SLO's quantile, if lower): later, the hedge would rarely land.
The hedge starts at the earlier of the two, within the route's `min_ms` and
`max_ms`: a hedge towards a fast target may wait, one towards a slow target must
start early or not help.

A turn no hedge can save (the backup would land too late) is hedged when its
primary is late for itself, not at the SLO's own deadline. Hedges at the deadline
cut no miss and mostly lost to the primary: on issue 17's tuning fleets they were
more than half of all extra requests, spent the budget and the APIs' rate limits on
turns already lost (the turns an API could still have answered in time queued at an
engine instead), and cost 0.3-0.5 points of attainment; without them the stalling
fleets' p99 bar stood where it was, their tails a few percent longer (a stall is
late for its target anyway; RESULTS.md, 12-07).

The tail, not a quantile like p90, is what makes the budget last. A delay at the
primary's own p90 hedges about one turn in ten by construction, whether or not it
is in danger: with `max_rate: 0.1` that spent the budget on turns that would have
made it, and the stall that came next found it empty (the hedge-starved stalls of
issue 17). At the tail or the last useful moment, a hedge fires when a turn is
really late or really at risk, and the budget is there for it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from router.config import Hedge, Slo
from router.policy.base import TargetView
from router.policy.predict import attainment, doubt, predict_ttft_s

#: the end of a distribution's body: a first token is late past it by ...
BODY_QUANTILE = 0.9
#: ... this many times the body's width (p90 - p50), and at least this share of the p90
LATE_SPREADS = 2.0
LATE_MARGIN = 0.2
#: a hedge is useful while the backup would still answer in time this often (or at
#: the SLO's quantile, if lower)
BACKUP_QUANTILE = 0.9
#: a turn is at risk once, still waiting, it is this likely to miss the SLO
RISK = 0.5
#: a backup predicted this much slower than the fastest is still fast enough
BACKUP_SLACK = 0.25


@dataclass(slots=True)
class HedgeSpend:
    """`hedge.max_cost_share`: hedges to priced targets add at most `share` to what the
    route's turns cost, over the same sliding window of turns as the count.

    Each turn's slot holds the expected cost of its first attempt and of the hedges
    it started (the plan's `expected_cost_usd`: a whole answer's, an upper bound for
    a hedge, whose loser pays only what it streamed). A hedge to a priced target is
    refused when it would take the window's hedge spend past `share` of its first
    attempts' spend; a hedge to a free target costs nothing and is never refused by
    it. So a route whose turns start on free engines does not hedge to a priced API
    at all under this cap: that is what the cap says (unset, the default, it may)."""

    share: float
    window: int = 200
    #: per turn: [first attempt's expected cost, hedges' expected cost]
    _slots: deque[list[float]] = field(default_factory=deque)
    _first: float = 0.0
    _hedges: float = 0.0

    def record_turn(self) -> None:
        self._slots.append([0.0, 0.0])
        if len(self._slots) > self.window:
            first, hedges = self._slots.popleft()
            self._first = max(self._first - first, 0.0)
            self._hedges = max(self._hedges - hedges, 0.0)

    def first_attempt(self, cost_usd: float) -> None:
        if self._slots:
            self._slots[-1][0] += cost_usd
            self._first += cost_usd

    def allows(self, cost_usd: float) -> bool:
        """Whether a hedge expected to cost `cost_usd` stays within the share."""
        return cost_usd <= 0.0 or self._hedges + cost_usd <= self.share * self._first

    def hedged(self, cost_usd: float) -> None:
        if self._slots:
            self._slots[-1][1] += cost_usd
            self._hedges += cost_usd


@dataclass(slots=True)
class HedgeBudget:
    """At most `max_rate` extra upstream requests per turn over the last `window` turns:
    a hard cap, counted exactly over a sliding window of turns.

    Each turn opens a slot; every extra request (a hedge, a fallback) is counted in the
    newest slot, and a slot leaves the count `window` turns later. A hedge is refused
    when one more would put the window over `max_rate` of its turns, so no run of
    `window` turns sends more than that share of extra requests on hedges; over a
    whole run the share stays within it too (a run is a sequence of such windows).
    A decaying count (the rate it replaced) let a burst of hedges borrow against the
    decayed past and went over the rate on a whole run (10.5 % with `max_rate: 0.1`).
    """

    max_rate: float
    window: int = 200
    #: the route's cap on what hedges to priced targets spend (`hedge.max_cost_share`)
    spend: HedgeSpend | None = None
    #: extra requests counted while each of the last `window` turns was the newest
    _slots: deque[int] = field(default_factory=deque)
    _extra: int = 0
    #: extra requests counted before the first turn (they join its slot)
    _early: int = 0

    @classmethod
    def of(cls, hedge: Hedge | None) -> HedgeBudget:
        """The budget of a route with this `hedge:` block (none: nothing to spend)."""
        if hedge is None:
            return cls(0.0)
        share = hedge.max_cost_share
        return cls(hedge.max_rate, spend=None if share is None else HedgeSpend(share))

    def record_turn(self) -> None:
        self._slots.append(self._early)
        self._early = 0
        if len(self._slots) > self.window:
            self._extra -= self._slots.popleft()
        if self.spend is not None:
            self.spend.record_turn()

    def try_spend(self) -> bool:
        """Take one hedge from the budget, if it allows one."""
        # The floor of one lets a new or quiet route hedge (a window of fewer than
        # 1 / max_rate turns); it is not added on top of the rate.
        if self._extra + 1 > max(self.max_rate * len(self._slots), 1.0):
            return False
        self._count()
        return True

    def charge(self) -> None:
        """Book an extra request that was not asked for (a fallback): never refused."""
        self._count()

    def _count(self) -> None:
        if self._slots:
            self._slots[-1] += 1
        else:
            self._early += 1
        self._extra += 1

    @property
    def rate(self) -> float:
        return self._extra / len(self._slots) if self._slots else 0.0


def hedge_delay_s(
    hedge: Hedge,
    primary: TargetView,
    backup: TargetView | None = None,
    slo: Slo | None = None,
    elapsed_s: float = 0.0,
) -> float:
    """Seconds after the `primary` attempt started before `backup` is started beside it.

    Fixed, or adaptive: when the primary is late against its own tail (`late_s`),
    or earlier when the turn is at risk of missing the SLO and a hedge can still
    save it: at the last moment a hedge can land in time (the SLO minus the
    backup's predicted p90, counting the `elapsed_s` of the turn before the primary
    started) if a turn still waiting by then is more likely than not to miss
    (`at_risk_s`). Bounded by `min_ms` and `max_ms`.
    """
    if hedge.after_ms != "adaptive":
        return hedge.after_ms / 1000.0
    delay_s = late_s(primary)
    if slo is not None:
        budget_s = slo.ttft_ms / 1000.0 - elapsed_s
        if backup is not None:
            last_useful_s = budget_s - predict_ttft_s(backup, min(slo.quantile, BACKUP_QUANTILE))
            if at_risk_s(primary, budget_s) <= last_useful_s:
                delay_s = min(delay_s, last_useful_s)
    return min(max(delay_s, hedge.min_ms / 1000.0), hedge.max_ms / 1000.0)


def late_s(view: TargetView) -> float:
    """When a first token is late for this target: past the body of its distribution
    (p90) by twice the body's width (p90 - p50), at least by `LATE_MARGIN` of the p90,
    by the prediction (queue included) or by what was measured, whichever is later.

    For a lognormal TTFT that is about its p99.5, but unlike the p99 itself it does
    not move when a few percent of requests stall: a target that stalls 3 % of the
    time has its stall as its p99, and a hedge late against that would never come
    before the stall ends. Widened while the evidence is thin (the sketch's own
    upper bound on a location, `exp(z s / sqrt(n))`: 1.9x on one sample, 1.07x on a
    hundred), so a target measured once, by a probe, is not hedged for a prefill."""

    def late(p90: float, p50: float) -> float:
        return p90 + max(LATE_SPREADS * (p90 - p50), LATE_MARGIN * p90)

    at = late(predict_ttft_s(view, BODY_QUANTILE), predict_ttft_s(view, 0.5))
    if view.ttft_samples:
        at = max(at, late(view.ttft_quantile(BODY_QUANTILE), view.ttft_quantile(0.5)))
    return at * doubt(view)


def at_risk_s(view: TargetView, budget_s: float) -> float:
    """From when a turn still waiting for this target's first token is more likely than
    not (`RISK`) to miss `budget_s`: its predicted quantile at 1 - P(miss) / RISK;
    from the start if it is that likely to miss anyway, never if it is predicted
    never to miss."""
    miss = 1.0 - attainment(view, budget_s)
    if miss <= 0.0:
        return math.inf
    if miss >= RISK:
        return 0.0
    return predict_ttft_s(view, 1.0 - miss / RISK)


def choose_backup(
    views: Sequence[TargetView],
    slo: Slo | None,
    *,
    primary: TargetView | None = None,
    hedge: Hedge | None = None,
    elapsed_s: float = 0.0,
) -> int:
    """Which of the remaining targets a hedge starts (an index into `views`).

    Given the `primary` it would start beside and the route's `hedge` and `slo`: the
    cheapest (ties, the faster) that, started at its own hedge delay, would still
    answer within the SLO's time at p90 (or the SLO's quantile, if lower). A free
    engine that makes it is as good a hedge as a priced API that makes it sooner, and
    costs nothing: hedges that went to the priced API on fleets that are nearly all
    local were a large share of a small bill (the cost bar of issue 17).

    Else (none would make it, or no SLO): the cheapest of those predicted nearly as
    fast as the fastest (within `BACKUP_SLACK`); ties, the faster.

    p90, not the SLO's quantile: a hedge needs a first token soon, which the body of
    a target's distribution says; a p99 is mostly how it stalls."""
    q = min(slo.quantile, BACKUP_QUANTILE) if slo is not None else BACKUP_QUANTILE
    preds = [predict_ttft_s(v, q) for v in views]
    by_price = sorted(range(len(views)), key=lambda i: (_price(views[i]), preds[i]))
    if primary is not None and hedge is not None and slo is not None:
        budget_s = slo.ttft_ms / 1000.0 - elapsed_s
        for i in by_price:
            if hedge_delay_s(hedge, primary, views[i], slo, elapsed_s) + preds[i] <= budget_s:
                return i
    fast_enough = min(preds) * (1.0 + BACKUP_SLACK)
    return next(i for i in by_price if preds[i] <= fast_enough)


def _price(view: TargetView) -> float:
    return view.price.input_per_mtok + view.price.output_per_mtok
