"""When to hedge: the delay before a second target starts, and the route's budget.

The budget follows tower's retry budget and Finagle's: hedges are a fraction of
recent turns, counted with exponential decay so the window slides; one hedge may
be spent when the route has been quiet (a floor of one, not on top of the rate),
so a lone late turn still gets help.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config import Hedge
from router.policy.base import TargetView


@dataclass(slots=True)
class HedgeBudget:
    """At most `max_rate` of the last ~`window` turns may hedge."""

    max_rate: float
    window: float = 200.0
    _turns: float = 0.0
    _hedges: float = 0.0

    def record_turn(self) -> None:
        keep = 1.0 - 1.0 / self.window
        self._turns = self._turns * keep + 1.0
        self._hedges *= keep

    def try_spend(self) -> bool:
        # The floor of one lets a quiet route hedge; it is not added on top of the
        # rate, so a busy route stays within `max_rate` of its turns.
        if self._hedges + 1.0 > max(self.max_rate * self._turns, 1.0):
            return False
        self._hedges += 1.0
        return True

    @property
    def rate(self) -> float:
        return self._hedges / self._turns if self._turns else 0.0


def hedge_delay_s(hedge: Hedge, primary: TargetView) -> float:
    """Fixed, or adaptive: the primary's own predicted p90 TTFT, bounded."""
    if hedge.after_ms == "adaptive":
        delay_ms = primary.ttft_quantile(0.9) * 1000.0
        return min(max(delay_ms, hedge.min_ms), hedge.max_ms) / 1000.0
    return hedge.after_ms / 1000.0
