"""When to hedge: the delay before a second target starts, and the route's budget.

The budget follows tower's retry budget and Finagle's: extra upstream requests are
a fraction of recent turns, counted with exponential decay so the window slides.
Hedges and fallbacks share it: a fallback is never refused (the turn would fail
without it) but is charged, so a route that is failing over hedges less, and a
failure storm is not amplified. One hedge may be spent when the route has been
quiet (a floor of one, not on top of the rate), so a lone late turn still gets help.

The adaptive delay answers two questions. When is the primary late by its own
standard? At its predicted p90 (the SLO's quantile, if the route has one): queue
included, so a turn sent to a busy engine is not hedged for being as slow as
predicted. And when is a hedge the last that can still save the SLO? At the SLO
minus the hedge target's own predicted TTFT at that quantile. The hedge starts at
the earlier of the two, within the route's `min_ms` and `max_ms`: a hedge towards a
fast target may wait, one towards a slow target must start early or not help.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config import Hedge, Slo
from router.policy.base import TargetView
from router.policy.predict import DEFAULT_QUANTILE, predict_ttft_s


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

    Fixed, or adaptive: the primary's predicted TTFT at the SLO's quantile (p90
    without an SLO), but no later than the SLO minus the backup's predicted TTFT
    (counting the `elapsed_s` of the turn before the primary started), bounded by
    `min_ms` and `max_ms`.
    """
    if hedge.after_ms != "adaptive":
        return hedge.after_ms / 1000.0
    q = slo.quantile if slo is not None else DEFAULT_QUANTILE
    delay_s = predict_ttft_s(primary, q)
    if slo is not None and backup is not None:
        last_useful_s = slo.ttft_ms / 1000.0 - elapsed_s - predict_ttft_s(backup, q)
        delay_s = min(delay_s, last_useful_s)
    return min(max(delay_s, hedge.min_ms / 1000.0), hedge.max_ms / 1000.0)
