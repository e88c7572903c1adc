"""Counters and histograms that a turn updates without a lock: the per-turn series.

prometheus_client's `Counter` and `Histogram` take a `threading.Lock` for every
increment, and a histogram's `observe` walks its bounds in Python: 0.7 us an `inc`
and 1.5 us an `observe` on this machine, about fifteen of them per turn (callgrind:
4 % of an embeddings request's instructions). The router updates these series from
one thread, its event loop, so the lock buys nothing: here a child is two plain
floats (a counter) or a list of bucket counts (a histogram, the bucket found by
bisection), and the family is a custom collector that reads them when scraped.

What a scrape shows is what prometheus_client's own classes show: the same family
names, types, help, labels, `_total`/`_bucket`/`_count`/`_sum` samples and `_created`
timestamps (unless `PROMETHEUS_DISABLE_CREATED_SERIES` says otherwise, as it does for
prometheus_client). A scrape from another thread (the metrics port) reads each float
whole under the GIL; a child created meanwhile is in the next scrape.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: a bucket bound as prometheus_client writes it in `le` (Go's float format)
_go_float: Callable[[float], str] = floatToGoString


def _created_series() -> bool:
    """prometheus_client's own switch for `_created` samples."""
    value = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return value.lower() not in ("true", "1", "t")


class CounterChild:
    """One labelled counter: `inc` adds to a float."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class HistogramChild:
    """One labelled histogram: `observe` counts the value in its bucket (the first
    bound at or above it, `+Inf` past the last) and adds it to the sum."""

    __slots__ = ("_bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        #: per bucket, not cumulative; the last is `+Inf`
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


C = TypeVar("C", CounterChild, HistogramChild)


class _Family(Collector, Generic[C]):
    """A labelled family registered as a collector; children made on first use."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._created = _created_series()
        self._children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            child = self._children[values] = self._child()
        return child

    def remove(self, *values: str) -> None:
        self._children.pop(values, None)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _child(self) -> C:
        raise NotImplementedError

    def _family(self) -> Metric:
        raise NotImplementedError


class FastCounter(_Family[CounterChild]):
    """A labelled counter family (the name without `_total`, as prometheus_client's)."""

    def _child(self) -> CounterChild:
        return CounterChild()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created if self._created else None)
        yield family


class FastHistogram(_Family[HistogramChild]):
    """A labelled histogram family with fixed bucket bounds."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"{name}: buckets must be distinct and increasing")
        if bounds[-1] == float("inf"):
            bounds = bounds[:-1]
        self._bounds = bounds
        self._le = (*(_go_float(b) for b in bounds), "+Inf")
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> HistogramChild:
        return HistogramChild(self._bounds)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            counts = list(accumulate(child.counts))
            family.add_metric(values, list(zip(self._le, counts, strict=True)), child.sum)
            if self._created:
                labels = dict(zip(self.labelnames, values, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, child.created))
        yield family
