"""The pace guard: a stream that slows to a trickle after its first token.

The relay (`relay.py`) asks for one per stream and tells it how long each read of
upstream bytes waited; the guard says when the stream has turned out too slow, once.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.config import TargetConfig
from router.policy.base import TargetView

#: a wait for upstream bytes this many times the target's own time per token is slow
SLOW_FACTOR = 20.0
#: ... but never less than this
SLOW_FLOOR_S = 0.1


@dataclass(slots=True)
class PaceGuard:
    """Notices a stream that slows to a trickle after its first token.

    Only the time spent waiting for upstream bytes counts (a slow client makes the
    router read later, not the upstream answer later). Three waits in a row longer
    than `max_wait_s` trip it, once.
    """

    max_wait_s: float
    slow: int = 0
    tripped: bool = False

    @classmethod
    def for_target(cls, config: TargetConfig, view: TargetView | None) -> PaceGuard | None:
        if config.timeouts.min_tokens_per_s is not None:
            return cls(1.0 / config.timeouts.min_tokens_per_s)
        if view is not None and view.tpot_s is not None:
            return cls(max(SLOW_FACTOR * view.tpot_s, SLOW_FLOOR_S))
        return None  # no pace measured yet, none configured: nothing to compare with

    def observe(self, waited_s: float) -> bool:
        """True exactly once: when the stream has just turned out too slow."""
        self.slow = self.slow + 1 if waited_s > self.max_wait_s else 0
        if self.slow >= 3 and not self.tripped:
            self.tripped = True
            return True
        return False
