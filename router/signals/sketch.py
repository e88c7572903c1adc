"""A time-decayed TTFT sketch that takes censored samples, and says how sure it is.

`DecayingQuantiles` keeps the latest `size` samples, each weighted by
`exp(-age / tau)` relative to the newest (forward decay, Cormode et al., "Forward
Decay: A Practical Time Decay Model for Streaming Systems", ICDE 2009). Forward-decay
weights only change by a common factor as time passes, so the quantiles depend on
the samples alone and are cached until the next one.

A censored sample (`observe_censored(t)`) says only "TTFT > t": an attempt that lost
a hedge, or was cancelled, before its first token. Dropping those would keep a
target that loses races looking fast (it is measured only when it wins); counting
them as TTFTs of exactly `t` would make one that wins its races look slow. With any
in the buffer the distribution is the Kaplan-Meier product-limit estimate over the
weighted samples (Kaplan and Meier, "Nonparametric Estimation from Incomplete
Observations", JASA 1958): in increasing order, each TTFT at `t` removes its weight's
share of the survivors at risk, and a censored sample only leaves the risk set. A
quantile the estimate never reaches (everything above it was censored) is only
bounded from below by the data: it is reported as the largest censoring time or the
prior, whichever is larger (a target that lost its only race after 10 ms is not a
10 ms target).

How sure: `evidence()` is the samples' total weight decayed to now, i.e. about how
many samples were seen in the last `tau` seconds; a target nobody has measured for a
while fades to little evidence. `lower_bound(q)` is an optimistic estimate of the
q-quantile for that much evidence: the quantile at the level `q - z sqrt(q(1-q)/n)`
(a binomial lower confidence bound on which order statistic is the q-quantile),
times `exp(-z s / sqrt(n))`, the same bound on a location whose log-spread is about
`s`, so that a single slow sample does not rule a target out for good. With almost
no evidence it is 0: an unmeasured or long-unmeasured target may be as fast as any.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Sequence
from itertools import accumulate, pairwise
from statistics import NormalDist

from router.clock import Clock
from router.policy.base import QUANTILES
from router.policy.predict import LOG_SPREAD, Z_90


class DecayingQuantiles:
    """Quantiles of the last `size` samples (censored ones too), by forward decay.

    The q-quantile is the smallest TTFT at which the (Kaplan-Meier) distribution
    reaches q. With no samples every quantile is the prior. A weight is
    `exp((t - landmark) / tau)`, fixed when the sample arrives; the landmark moves
    forward (rescaling every weight) before the exponent can overflow.
    """

    __slots__ = (
        "_arrivals",
        "_cache",
        "_caps",
        "_censored",
        "_clock",
        "_count",
        "_curve",
        "_flags",
        "_landmark",
        "_prior",
        "_quantiles",
        "_size",
        "_total",
        "_values",
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
        #: per quantile above the median, a lognormal's q-quantile over its median (see
        #: `placed_quantiles`)
        self._caps = tuple(
            math.exp(NormalDist().inv_cdf(q) * LOG_SPREAD) if 0.5 < q < 1.0 else math.inf
            for q in self._quantiles
        )
        #: the samples in arrival order, for eviction
        self._arrivals: deque[float] = deque()
        #: the same samples sorted by value (equal ones in arrival order), with their
        #: weights and censored flags alongside (what `_distribution` returns, kept)
        self._values: list[float] = []
        self._weights: list[float] = []
        self._flags: list[bool] = []
        self._censored = 0
        self._total = 0.0
        self._landmark: float | None = None
        self._count = 0
        self._cache: tuple[tuple[float, float], ...] | None = None
        #: see `_distribution`; cached until the next sample
        self._curve: tuple[list[float], list[float], float] | None = None
        self._size = size

    @property
    def count(self) -> int:
        """Samples observed in total, censored ones included (not only those kept)."""
        return self._count

    def observe(self, sample: float) -> None:
        """A TTFT of `sample` seconds."""
        self._add(sample, censored=False)

    def observe_censored(self, at_least: float) -> None:
        """An attempt ended without a first token after `at_least` seconds: TTFT > that."""
        self._add(at_least, censored=True)

    def _add(self, sample: float, *, censored: bool) -> None:
        now = self._clock()
        if self._landmark is None:
            self._landmark = now
        exponent = (now - self._landmark) / self.tau_s
        if exponent > self._MAX_EXPONENT:
            factor = math.exp(-exponent)
            self._weights = [w * factor for w in self._weights]
            self._total *= factor
            self._landmark, exponent = now, 0.0
        values = self._values
        # Equal values stay in arrival order: the oldest of a value is the first of
        # its run, and a new sample goes after its run (what sorting by (value,
        # arrival) would give, without a key tuple per sample to compare).
        if len(self._arrivals) == self._size:
            i = bisect_left(values, self._arrivals.popleft())
            self._total -= self._weights[i]
            self._censored -= self._flags[i]
            del values[i], self._weights[i], self._flags[i]
        weight = math.exp(exponent)
        i = bisect_right(values, sample)
        values.insert(i, sample)
        self._weights.insert(i, weight)
        self._flags.insert(i, censored)
        self._censored += censored
        self._total += weight
        self._arrivals.append(sample)
        self._count += 1
        self._cache = None
        self._curve = None

    def set_prior(self, prior: float) -> None:
        self._prior = prior
        self._cache = None

    def evidence(self) -> float:
        """The samples' weight decayed to now: about the samples of the last `tau` s."""
        if self._landmark is None:
            return 0.0
        age = max(self._clock() - self._landmark, 0.0)
        return self._total * math.exp(-age / self.tau_s)

    def quantiles(self) -> tuple[tuple[float, float], ...]:
        """(q, value) for each configured quantile, in increasing q; cached until the
        next sample (a chat turn adds one, and the next plan reads them: one pass over
        the distribution, not a `quantile` call per point)."""
        cache = self._cache
        if cache is None:
            if not self._values:
                cache = tuple((q, self._prior) for q in self._quantiles)
            else:
                values, reached, total = self._distribution()
                cache = tuple((q, self._at(values, reached, q * total)) for q in self._quantiles)
            self._cache = cache
        return cache

    def placed_quantiles(self) -> tuple[tuple[float, float], ...]:
        """`quantiles()`, with each one above the median that the evidence cannot place
        held to a lognormal's around the median (log-spread `LOG_SPREAD`: p90 1.9x it).

        Where fewer than one sample is expected above a q-quantile (evidence n with
        n (1 - q) < 1: under ten for p90), the estimate is the largest sample alone,
        and one outlier sets it: a fresh router's three warm-up turns on the real
        8-slot vLLM engine, one of them 837 ms (the machine stalled), made its p90 for
        a free slot 7x the 2-slot engine's, and the burst queued on the latter
        (`make test-vllm`, 12-07). The cap only lowers: a target slow on every sample
        stays slow. Read for a vLLM engine's free-slot TTFT (`signals/target.py`)."""
        got = self.quantiles()
        if not self._values:
            return got
        n = self.evidence()
        if n * (1.0 - max(self._quantiles)) >= 1.0:
            return got
        median = self.median()
        return tuple(
            (q, min(v, median * cap)) if n * (1.0 - q) < 1.0 else (q, v)
            for (q, v), cap in zip(got, self._caps, strict=True)
        )

    def median(self) -> float:
        """`quantile(0.5)`, from the cached quantiles when 0.5 is one of them."""
        for q, v in self.quantiles():
            if q == 0.5:
                return v
        return self.quantile(0.5)

    def lower_bounds(self, evidence: float | None = None) -> tuple[tuple[float, float], ...]:
        """(q, optimistic value) for each configured quantile, for today's evidence
        (`evidence`, when the caller just read it). Exploration reads them every turn:
        the shrink factor is computed once for all of them."""
        n = self.evidence() if evidence is None else evidence
        if n <= 0.0:
            return tuple((q, 0.0) for q in self._quantiles)
        shrink = math.exp(-Z_90 * LOG_SPREAD / math.sqrt(n))
        return tuple((q, self._bound(q, n, shrink)) for q in self._quantiles)

    def lower_bound_at(self, q: float, evidence: float) -> float:
        """`interpolate(self.lower_bounds(evidence), q, 0.0)` (policy/base.py), to the
        last bit, computing only the one or two bounds that interpolation reads."""
        if evidence <= 0.0:
            return 0.0
        shrink = math.exp(-Z_90 * LOG_SPREAD / math.sqrt(evidence))
        qs = self._quantiles
        if q <= qs[0]:
            return self._bound(qs[0], evidence, shrink)
        for q0, q1 in pairwise(qs):
            if q <= q1:
                v0 = self._bound(q0, evidence, shrink)
                v1 = self._bound(q1, evidence, shrink)
                return v0 + (v1 - v0) * (q - q0) / (q1 - q0)
        return self._bound(qs[-1], evidence, shrink)

    def lower_bound(self, q: float, evidence: float | None = None) -> float:
        """An optimistic q-quantile: what it may well be, given how little was seen."""
        n = self.evidence() if evidence is None else evidence
        if n <= 0.0:
            return 0.0
        return self._bound(q, n, math.exp(-Z_90 * LOG_SPREAD / math.sqrt(n)))

    def _bound(self, q: float, n: float, shrink: float) -> float:
        """The quantile at the level `q - z sqrt(q(1-q)/n)`, times `shrink`."""
        level = q - Z_90 * math.sqrt(q * (1.0 - q) / n)
        return self.quantile(level) * shrink if level > 0.0 else 0.0

    def quantile(self, q: float) -> float:
        if not self._values:
            return self._prior
        values, reached, total = self._distribution()
        return self._at(values, reached, q * total)

    def _at(self, values: list[float], reached: list[float], level: float) -> float:
        """The first value whose distribution reaches `level` (of the total)."""
        i = bisect_left(reached, level * (1.0 - 1e-12))  # rounding must not skip a value
        if i < len(values):
            return values[i]
        if self._censored:  # never reached: above the largest censoring time, unknown
            return max(self._values[-1], self._prior)
        return values[-1]

    def _distribution(self) -> tuple[list[float], list[float], float]:
        """TTFT values in increasing order, how much of the distribution each reaches,
        and the total: prefix sums of the weights without censoring, else the
        Kaplan-Meier estimate (total 1). Cached until the next sample."""
        if self._curve is not None:
            return self._curve
        if not self._censored:
            cumulative = list(accumulate(self._weights))
            self._curve = (self._values, cumulative, cumulative[-1])
            return self._curve
        # Once a censored sample is in, this runs on every new sample (a plan reads
        # the quantiles each turn): the loop is kept lean (no key tuples, no max()).
        values: list[float] = []
        levels: list[float] = []
        add_value, add_level = values.append, levels.append
        at_risk, surviving = self._total, 1.0
        for value, weight, censored in zip(self._values, self._weights, self._flags, strict=True):
            if not censored and at_risk > 0.0:
                factor = 1.0 - weight / at_risk  # weights are finite and positive: no NaN
                surviving *= factor if factor > 0.0 else 0.0
                add_value(value)
                add_level(1.0 - surviving)
            at_risk -= weight
        self._curve = (values, levels, 1.0)
        return self._curve
