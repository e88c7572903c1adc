"""When to hedge: the delay before a second target starts, and the route's budget.

The budget follows tower's retry budget and Finagle's: extra upstream requests are
a fraction of recent turns, counted with exponential decay so the window slides.
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

The tail, not a quantile like p90, is what makes the budget last. A delay at the
primary's own p90 hedges about one turn in ten by construction, whether or not it
is in danger: with `max_rate: 0.1` that spent the budget on turns that would have
made it, and the stall that came next found it empty (the hedge-starved stalls of
issue 17). At the tail or the last useful moment, a hedge fires when a turn is
really late or really at risk, and the budget is there for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.config import Hedge, Slo
from router.policy.base import TargetView
from router.policy.predict import attainment, predict_ttft_s

#: the tail a first token is late against
TAIL_QUANTILE = 0.99
#: late: past the tail by its spread above the median, and at least by this share of it
LATE_MARGIN = 0.2
#: a hedge is useful while the backup would still answer in time this often (or at
#: the SLO's quantile, if lower)
BACKUP_QUANTILE = 0.9
#: a turn is at risk once, still waiting, it is this likely to miss the SLO
RISK = 0.5


@dataclass(slots=True)
class HedgeBudget:
    """At most `max_rate` of the last ~`window` turns may send an extra request."""

    max_rate: float
    window: float = 200.0
    _turns: float = 0.0
    _hedges: float = 0.0

    def record_turn(self) -> None:
        keep = 1.0 - 1.0 / self.window
        self._turns = self._turns * keep + 1.0
        self._hedges *= keep

    def try_spend(self) -> bool:
        """Take one hedge from the budget, if it allows one."""
        # The floor of one lets a quiet route hedge; it is not added on top of the
        # rate, so a busy route stays within `max_rate` of its turns.
        if self._hedges + 1.0 > max(self.max_rate * self._turns, 1.0):
            return False
        self._hedges += 1.0
        return True

    def charge(self) -> None:
        """Book an extra request that was not asked for (a fallback): never refused."""
        self._hedges += 1.0

    @property
    def rate(self) -> float:
        return self._hedges / self._turns if self._turns else 0.0


def hedge_delay_s(
    hedge: Hedge,
    primary: TargetView,
    backup: TargetView | None = None,
    slo: Slo | None = None,
    elapsed_s: float = 0.0,
) -> float:
    """Seconds after the `primary` attempt started before `backup` is started beside it.

    Fixed, or adaptive: when the primary is late against its own tail (`late_s`),
    or earlier when the turn is at risk of missing the SLO: from the moment a turn
    still waiting is more likely than not to miss it (`at_risk_s`), and from the
    last moment a hedge can still land in time if the turn is that likely to miss
    by then (the SLO minus the backup's predicted p90, counting the `elapsed_s` of
    the turn before the primary started). Bounded by `min_ms` and `max_ms`.
    """
    if hedge.after_ms != "adaptive":
        return hedge.after_ms / 1000.0
    delay_s = late_s(primary)
    if slo is not None:
        budget_s = slo.ttft_ms / 1000.0 - elapsed_s
        risk_s = at_risk_s(primary, budget_s)
        if backup is not None:
            backup_s = predict_ttft_s(backup, min(slo.quantile, BACKUP_QUANTILE))
            risk_s = max(risk_s, budget_s - backup_s)
        delay_s = min(delay_s, risk_s)
    return min(max(delay_s, hedge.min_ms / 1000.0), hedge.max_ms / 1000.0)


def late_s(view: TargetView) -> float:
    """When a first token is late for this target: its p99 plus that tail's spread
    above the median (at least `LATE_MARGIN` of the p99), by the prediction (queue
    included) or by what was measured, whichever is later."""
    tail = predict_ttft_s(view, TAIL_QUANTILE)
    late = tail + max(tail - predict_ttft_s(view, 0.5), LATE_MARGIN * tail)
    if view.ttft_samples:
        seen = view.ttft_quantile(TAIL_QUANTILE)
        late = max(late, seen + max(seen - view.ttft_quantile(0.5), LATE_MARGIN * seen))
    return late


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
