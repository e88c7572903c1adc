from __future__ import annotations

import math
from typing import Any

import pytest

from router.signals.ttft import DecayingQuantiles, Ewma, PeakEwma
from tests.signals.conftest import FakeClock


def sketch_of(tau_s: float, prior: float, clock: FakeClock, **kw: Any) -> DecayingQuantiles:
    """A sketch reporting p50, p90 and p99 (targets report more points)."""
    return DecayingQuantiles(tau_s, prior, clock, quantiles=(0.5, 0.9, 0.99), **kw)


def test_peak_ewma_starts_at_the_prior_and_a_first_sample_replaces_it(clock: FakeClock) -> None:
    ewma = PeakEwma(10.0, 0.5, clock)
    assert ewma.value == 0.5
    assert not ewma.measured
    ewma.observe(0.2)
    assert ewma.value == 0.2
    assert ewma.measured


def test_peak_ewma_jumps_to_a_peak_and_decays_by_elapsed_time(clock: FakeClock) -> None:
    ewma = PeakEwma(10.0, 0.5, clock)
    ewma.observe(0.2)
    clock.advance(1.0)
    ewma.observe(0.9)
    assert ewma.value == 0.9  # a slower sample is taken at once
    clock.advance(10.0)  # one time constant
    ewma.observe(0.1)
    w = math.exp(-1.0)
    assert ewma.value == pytest.approx(0.9 * w + 0.1 * (1 - w), rel=1e-12)
    before = ewma.value
    ewma.observe(0.1)  # no time passed: a lower sample has no weight yet
    assert ewma.value == before


def test_peak_ewma_censored_bound_only_moves_it_up(clock: FakeClock) -> None:
    ewma = PeakEwma(10.0, 0.5, clock)
    ewma.observe(0.3)
    assert not ewma.observe_lower_bound(0.2)
    assert ewma.value == 0.3
    assert ewma.observe_lower_bound(1.5)
    assert ewma.value == 1.5


def test_peak_ewma_set_prior_keeps_a_measurement(clock: FakeClock) -> None:
    ewma = PeakEwma(10.0, 0.5, clock)
    ewma.set_prior(0.8)
    assert ewma.value == 0.8
    ewma.observe(0.3)
    ewma.set_prior(0.1)
    assert ewma.value == 0.3


def test_ewma_is_none_until_measured_then_time_weighted(clock: FakeClock) -> None:
    ewma = Ewma(5.0, clock)
    assert ewma.value is None
    ewma.observe(2.0)
    assert ewma.value == 2.0
    clock.advance(5.0)
    ewma.observe(4.0)
    w = math.exp(-1.0)
    assert ewma.value == pytest.approx(2.0 * w + 4.0 * (1 - w), rel=1e-12)


def test_quantiles_report_the_prior_when_empty(clock: FakeClock) -> None:
    sketch = sketch_of(60.0, 0.4, clock)
    assert sketch.quantiles() == ((0.5, 0.4), (0.9, 0.4), (0.99, 0.4))
    assert sketch.count == 0


def test_quantiles_of_equally_weighted_samples(clock: FakeClock) -> None:
    sketch = sketch_of(60.0, 0.4, clock, size=256)
    for v in range(100, 0, -1):
        sketch.observe(float(v))
    assert sketch.quantiles() == ((0.5, 50.0), (0.9, 90.0), (0.99, 99.0))
    assert sketch.quantile(0.25) == 25.0
    assert sketch.count == 100


def test_old_samples_fade_with_forward_decay(clock: FakeClock) -> None:
    sketch = sketch_of(60.0, 0.4, clock)
    sketch.observe(3.0)
    sketch.observe(3.0)
    clock.advance(6.0)  # old weights exp(-0.1) = 0.905 each: still the majority
    sketch.observe(1.0)
    assert sketch.quantile(0.5) == 3.0
    fresh = sketch_of(60.0, 0.4, clock)
    fresh.observe(3.0)
    fresh.observe(3.0)
    clock.advance(60.0)  # old weights exp(-1) = 0.368 each: 0.74 < 1
    fresh.observe(1.0)
    assert fresh.quantiles() == ((0.5, 1.0), (0.9, 3.0), (0.99, 3.0))


def test_quantiles_do_not_change_by_reading_later(clock: FakeClock) -> None:
    sketch = sketch_of(10.0, 0.4, clock)
    for v in (0.1, 0.2, 0.3):
        sketch.observe(v)
        clock.advance(1.0)
    first = sketch.quantiles()
    clock.advance(1000.0)
    assert sketch.quantiles() == first


def test_sketch_is_bounded_to_the_latest_samples(clock: FakeClock) -> None:
    sketch = sketch_of(60.0, 0.4, clock, size=4)
    for v in range(1, 11):
        sketch.observe(float(v))
    assert sketch.count == 10
    assert sketch.quantile(0.5) == 8.0  # of 7, 8, 9, 10
    assert sketch.quantile(0.0) == 7.0
    assert sketch.quantile(1.0) == 10.0


def test_sketch_rejects_an_empty_buffer(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="size"):
        sketch_of(60.0, 0.4, clock, size=0)


def test_weights_survive_a_long_uptime(clock: FakeClock) -> None:
    sketch = sketch_of(1.0, 0.4, clock, size=8)
    for _ in range(3):
        sketch.observe(5.0)
    clock.advance(300.0)  # exp(300) would overflow a float's exponent range soon after
    sketch.observe(1.0)
    clock.advance(1000.0)
    sketch.observe(2.0)
    assert sketch.quantiles() == ((0.5, 2.0), (0.9, 2.0), (0.99, 2.0))
    assert sketch.quantile(0.0) == 1.0


def test_evicts_the_oldest_of_equal_values(clock: FakeClock) -> None:
    sketch = sketch_of(60.0, 0.4, clock, size=3)
    for v in (2.0, 2.0, 2.0, 1.0, 1.0):
        sketch.observe(v)
    assert sketch.quantiles() == ((0.5, 1.0), (0.9, 2.0), (0.99, 2.0))
