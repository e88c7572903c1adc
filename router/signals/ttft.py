"""TTFT estimators: peak-EWMA, a time-decayed quantile sketch, and a plain EWMA.

- `PeakEwma` follows Finagle's `PeakEwma` load metric (twitter/finagle,
  `finagle-core/.../loadbalancer/PeakEwma`) as ported to tower's
  `tower::load::PeakEwma`: a sample above the estimate replaces it at once (so a
  slow target is noticed on its first slow answer); any other sample moves the
  estimate toward itself with weight `1 - exp(-dt/tau)`, where `dt` is the time
  since the previous update (so it recovers over about `tau` seconds, whatever the
  request rate). One change: the first real sample replaces the YAML prior, since a
  measurement of this target beats a guess about it.
- `DecayingQuantiles` (in `sketch.py`, re-exported here) is a bounded buffer of the
  latest samples, censored ones included, under forward decay.
- `Ewma` is the time-aware exponentially weighted moving average used for time per
  output token, unloaded TTFT and mean output length.

All of them read time from an injected monotonic clock and keep no global state.
"""

from __future__ import annotations

import math

from router.clock import Clock
from router.signals.sketch import DecayingQuantiles

__all__ = ["DecayingQuantiles", "Ewma", "PeakEwma"]


class PeakEwma:
    """Finagle/tower peak-EWMA of a latency, in seconds, starting from a prior."""

    __slots__ = ("_at", "_clock", "_measured", "_value", "tau_s")

    def __init__(self, tau_s: float, prior: float, clock: Clock) -> None:
        self.tau_s = tau_s
        self._clock = clock
        self._value = prior
        self._at = clock()
        self._measured = False

    @property
    def value(self) -> float:
        return self._value

    @property
    def measured(self) -> bool:
        """True once a real sample has replaced the prior."""
        return self._measured

    def observe(self, sample: float) -> None:
        now = self._clock()
        if not self._measured or sample > self._value:
            self._value = sample
        else:
            weight = math.exp(-max(now - self._at, 0.0) / self.tau_s)
            self._value = self._value * weight + sample * (1.0 - weight)
        self._at = now
        self._measured = True

    def observe_lower_bound(self, bound: float) -> bool:
        """A censored sample: the true value is at least `bound` (a cancelled wait).

        Only a bound above the estimate says anything; it is then treated as a peak.
        Returns whether the estimate moved.
        """
        if bound <= self._value:
            return False
        self._value = bound
        self._at = self._clock()
        self._measured = True
        return True

    def set_prior(self, prior: float) -> None:
        """Change the prior (config reload); a measured estimate is kept."""
        if not self._measured:
            self._value = prior


class Ewma:
    """An EWMA whose sample weight is `1 - exp(-dt/tau)`; None until the first sample."""

    __slots__ = ("_at", "_clock", "_value", "tau_s")

    def __init__(self, tau_s: float, clock: Clock) -> None:
        self.tau_s = tau_s
        self._clock = clock
        self._value: float | None = None
        self._at = 0.0

    @property
    def value(self) -> float | None:
        return self._value

    def observe(self, sample: float) -> None:
        now = self._clock()
        if self._value is None:
            self._value = sample
        else:
            weight = math.exp(-max(now - self._at, 0.0) / self.tau_s)
            self._value = self._value * weight + sample * (1.0 - weight)
        self._at = now
