"""TTFT estimators: peak-EWMA, a time-decayed quantile sketch, and a plain EWMA.

- `PeakEwma` follows Finagle's `PeakEwma` load metric (twitter/finagle,
  `finagle-core/.../loadbalancer/PeakEwma`) as ported to tower's
  `tower::load::PeakEwma`: a sample above the estimate replaces it at once (so a
  slow target is noticed on its first slow answer); any other sample moves the
  estimate toward itself with weight `1 - exp(-dt/tau)`, where `dt` is the time
  since the previous update (so it recovers over about `tau` seconds, whatever the
  request rate). One change: the first real sample replaces the YAML prior, since a
  measurement of this target beats a guess about it.
- `DecayingQuantiles` is a bounded buffer of the latest samples, each weighted by
  `exp(-age / tau)` relative to the newest (forward decay, Cormode et al., "Forward
  Decay: A Practical Time Decay Model for Streaming Systems", ICDE 2009). Because
  forward-decay weights only change by a common factor as time passes, the
  quantiles depend on the samples alone and are cached until the next sample.
- `Ewma` is the time-aware exponentially weighted moving average used for time per
  output token, unloaded TTFT and mean output length.

All of them read time from an injected monotonic clock and keep no global state.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from itertools import accumulate

from router.clock import Clock
from router.policy.base import QUANTILES


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


class DecayingQuantiles:
    """Quantiles of the last `size` samples, weighted by forward exponential decay.

    The q-quantile is the smallest sample whose cumulative weight, in increasing
    order of value, reaches q of the total weight. With no samples every quantile is
    the prior.

    Samples are kept sorted (with their weights alongside) as they arrive, so a read
    after a new sample costs one C-level prefix sum and a bisection per quantile.
    A weight is `exp((t - landmark) / tau)`, fixed when the sample arrives; the
    landmark moves forward (rescaling every weight) before the exponent can overflow.
    """

    __slots__ = (
        "_arrivals",
        "_cache",
        "_clock",
        "_count",
        "_keys",
        "_landmark",
        "_prior",
        "_quantiles",
        "_size",
        "_weights",
        "tau_s",
    )

    #: rescale weights once the newest is exp(this) times the landmark's
    _MAX_EXPONENT = 200.0

    def __init__(
        self,
        tau_s: float,
        prior: float,
        clock: Clock,
        *,
        size: int = 256,
        quantiles: Sequence[float] = QUANTILES,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.tau_s = tau_s
        self._prior = prior
        self._clock = clock
        self._quantiles = tuple(quantiles)
        #: (value, sequence number) in arrival order, for eviction
        self._arrivals: deque[tuple[float, int]] = deque()
        #: the same keys sorted by value, and their weights in the same order
        self._keys: list[tuple[float, int]] = []
        self._weights: list[float] = []
        self._landmark: float | None = None
        self._count = 0
        self._cache: tuple[tuple[float, float], ...] | None = None
        self._size = size

    @property
    def count(self) -> int:
        """Samples observed in total (not only those still in the buffer)."""
        return self._count

    def observe(self, sample: float) -> None:
        now = self._clock()
        if self._landmark is None:
            self._landmark = now
        exponent = (now - self._landmark) / self.tau_s
        if exponent > self._MAX_EXPONENT:
            factor = math.exp(-exponent)
            self._weights = [w * factor for w in self._weights]
            self._landmark, exponent = now, 0.0
        if len(self._arrivals) == self._size:
            oldest = self._arrivals.popleft()
            i = bisect_left(self._keys, oldest)
            del self._keys[i], self._weights[i]
        key = (sample, self._count)
        i = bisect_left(self._keys, key)
        self._keys.insert(i, key)
        self._weights.insert(i, math.exp(exponent))
        self._arrivals.append(key)
        self._count += 1
        self._cache = None

    def set_prior(self, prior: float) -> None:
        self._prior = prior
        if not self._keys:
            self._cache = None

    def quantiles(self) -> tuple[tuple[float, float], ...]:
        """(q, value) for each configured quantile, in increasing q."""
        if self._cache is None:
            self._cache = self._compute(self._quantiles)
        return self._cache

    def quantile(self, q: float) -> float:
        return self._compute((q,))[0][1]

    def _compute(self, qs: Sequence[float]) -> tuple[tuple[float, float], ...]:
        if not self._keys:
            return tuple((q, self._prior) for q in qs)
        cumulative = list(accumulate(self._weights))
        total, last = cumulative[-1], len(cumulative) - 1
        keys = self._keys
        return tuple((q, keys[min(bisect_left(cumulative, q * total), last)][0]) for q in qs)
