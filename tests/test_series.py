"""The lock-free per-turn series scrape exactly as prometheus_client's own classes do."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from router.series import FastCounter, FastHistogram

BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
#: on a bound, between bounds, below the first, past the last, zero
VALUES = (0.01, 0.05, 0.07, 0.5, 0.500001, 5.0, 7.5, 0.0, 1e-9, 1.0)


def _scrape(registry: CollectorRegistry) -> str:
    text = generate_latest(registry).decode()
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)  # creation times differ


def _pair() -> tuple[CollectorRegistry, CollectorRegistry]:
    return CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)


def test_histogram_scrapes_like_prometheus_client() -> None:
    theirs, ours = _pair()
    reference = Histogram("x_seconds", "help text", ["route"], buckets=BOUNDS, registry=theirs)
    fast = FastHistogram("x_seconds", "help text", ["route"], registry=ours, buckets=BOUNDS)
    for i, value in enumerate(VALUES):
        route = "a" if i % 3 else "b"
        reference.labels(route).observe(value)
        fast.labels(route).observe(value)
    assert _scrape(ours) == _scrape(theirs)
    assert ours.get_sample_value("x_seconds_bucket", {"route": "a", "le": "0.5"}) == 4


def test_counter_scrapes_like_prometheus_client() -> None:
    theirs, ours = _pair()
    reference = Counter("y", "help", ["route", "target"], registry=theirs)
    fast = FastCounter("y", "help", ["route", "target"], registry=ours)
    for amount, labels in ((1.0, ("r", "t")), (2.5, ("r", "t")), (0.0, ("r", "u"))):
        reference.labels(*labels).inc(amount)
        fast.labels(*labels).inc(amount)
    assert _scrape(ours) == _scrape(theirs)
    assert ours.get_sample_value("y_total", {"route": "r", "target": "t"}) == 3.5


def test_a_removed_child_leaves_the_scrape_and_a_new_one_starts_at_zero() -> None:
    registry = CollectorRegistry()
    fast = FastCounter("z", "help", ["target"], registry=registry)
    fast.labels("gone").inc(4)
    fast.remove("gone")
    assert registry.get_sample_value("z_total", {"target": "gone"}) is None
    fast.labels("gone")
    assert registry.get_sample_value("z_total", {"target": "gone"}) == 0.0


def test_bad_use_is_refused() -> None:
    registry = CollectorRegistry()
    counter = FastCounter("c", "help", ["a", "b"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("only-one")
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("x", "y").inc(-1)
    with pytest.raises(ValueError, match="increasing"):
        FastHistogram("h", "help", [], registry=registry, buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        FastCounter("c", "again", ["a"], registry=registry)  # one name, one family


def test_created_series_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    registry = CollectorRegistry()
    FastHistogram("h", "help", ["r"], registry=registry, buckets=BOUNDS).labels("a").observe(1)
    FastCounter("c", "help", ["r"], registry=registry).labels("a").inc()
    assert "_created" not in generate_latest(registry).decode()
