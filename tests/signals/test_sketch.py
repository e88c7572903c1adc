"""The TTFT sketch's censored samples (Kaplan-Meier), evidence and optimistic bounds."""

from __future__ import annotations

import math
import random

import pytest

from router.policy.base import QUANTILES, interpolate
from router.policy.predict import LOG_SPREAD, Z_90
from router.signals.sketch import DecayingQuantiles
from tests.signals.conftest import FakeClock


def test_kaplan_meier_of_the_textbook_example(clock: FakeClock) -> None:
    # Times 1..6 with 3 and 5 censored: S drops by 1/6 at 1, 1/5 at 2, 1/3 at 4, all at 6.
    sketch = DecayingQuantiles(1e9, 0.5, clock, quantiles=(0.5,))
    for t, censored in ((1, False), (2, False), (3, True), (4, False), (5, True), (6, False)):
        if censored:
            sketch.observe_censored(float(t))
        else:
            sketch.observe(float(t))
    # F(1) = 1/6, F(2) = 1 - 5/6 * 4/5 = 1/3, F(4) = 1 - 2/3 * 2/3 = 5/9, F(6) = 1
    assert sketch.quantile(1 / 6) == 1.0
    assert sketch.quantile(0.3) == 2.0
    assert sketch.quantile(0.5) == 4.0  # 5/9 >= 0.5
    assert sketch.quantile(0.6) == 6.0


def test_hedge_losers_keep_a_target_from_looking_fast(clock: FakeClock) -> None:
    # A target that answered 3 times at 100 ms (the races it won) and lost 7 races at
    # 300 ms: dropping the losers would say p50 = 100 ms.
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    for _ in range(3):
        sketch.observe(0.1)
    for _ in range(7):
        sketch.observe_censored(0.3)
    assert sketch.quantile(0.2) == 0.1
    # Nothing is known above 300 ms but that it is above: the prior (500 ms) stands ...
    assert sketch.quantile(0.5) == 0.5
    assert dict(sketch.quantiles())[0.5] == 0.5
    # ... unless it is below what the data say: then the bound.
    sketch.set_prior(0.2)
    assert sketch.quantile(0.5) == 0.3


def test_a_target_that_lost_its_only_race_early_is_not_fast(clock: FakeClock) -> None:
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    sketch.observe_censored(0.01)  # cancelled 10 ms in: TTFT > 10 ms, nothing more
    assert sketch.quantile(0.5) == 0.5


def test_a_censored_sample_below_the_answers_changes_nothing(clock: FakeClock) -> None:
    # Cancelled at 10 ms (the other attempt won at once): TTFT > 10 ms says nothing here.
    plain = DecayingQuantiles(60.0, 0.5, clock)
    mixed = DecayingQuantiles(60.0, 0.5, clock)
    for v in (0.2, 0.3, 0.4, 0.5):
        plain.observe(v)
        mixed.observe(v)
    mixed.observe_censored(0.01)
    assert mixed.quantiles() == plain.quantiles()


def test_evidence_counts_recent_samples_and_fades(clock: FakeClock) -> None:
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    assert sketch.evidence() == 0.0
    for _ in range(10):
        sketch.observe(0.2)
    assert sketch.evidence() == pytest.approx(10.0)
    clock.advance(60.0)
    assert sketch.evidence() == pytest.approx(10.0 / math.e)
    sketch.observe_censored(0.3)  # censored samples are evidence too
    assert sketch.evidence() == pytest.approx(10.0 / math.e + 1.0)


def test_an_unmeasured_target_may_be_as_fast_as_any(clock: FakeClock) -> None:
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    assert sketch.quantile(0.9) == 0.5  # the prior, for predictions
    assert all(v == 0.0 for _, v in sketch.lower_bounds())


def test_the_optimistic_bound_tightens_with_evidence_and_widens_with_age(
    clock: FakeClock,
) -> None:
    rng = random.Random(3)
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    sketch.observe(0.6)  # one slow answer does not rule the target out for good
    one = sketch.lower_bound(0.9)
    assert one == pytest.approx(0.6 * math.exp(-Z_90 * LOG_SPREAD))
    for _ in range(200):
        sketch.observe(rng.lognormvariate(math.log(0.2), 0.3))
    many = sketch.lower_bound(0.9)
    assert many <= sketch.quantile(0.9)
    assert many > 0.8 * sketch.quantile(0.9)
    clock.advance(600.0)  # ten time constants without a sample: little is known now
    assert sketch.lower_bound(0.9) < 0.5 * many
    clock.advance(600.0)
    assert sketch.lower_bound(0.9) == 0.0
    # The point estimate itself does not move with time: only the confidence does.
    assert sketch.quantile(0.9) == pytest.approx(dict(sketch.quantiles())[0.9])


def test_the_oldest_of_equal_samples_is_the_one_evicted(clock: FakeClock) -> None:
    # Two samples kept; a censored 1.0 then an answer at 1.0, then 2.0: the censored
    # one (the oldest) leaves, so nothing censored is left and the median is 1.0.
    # Evicting the other 1.0 would leave the censored one and move the median to 2.0.
    sketch = DecayingQuantiles(60.0, 0.5, clock, size=2, quantiles=(0.5,))
    sketch.observe_censored(1.0)
    sketch.observe(1.0)
    sketch.observe(2.0)
    assert sketch.quantile(0.5) == 1.0
    assert sketch.quantile(0.99) == 2.0


@pytest.mark.parametrize("seed", range(20))
def test_quantiles_and_bounds_in_one_pass_are_those_of_one_point_at_a_time(
    clock: FakeClock, seed: int
) -> None:
    # `quantiles()` and `lower_bounds()` compute every point from one read of the
    # distribution; each must be exactly what `quantile(q)` / `lower_bound(q)` give.
    rng = random.Random(seed)
    sketch = DecayingQuantiles(30.0, 0.4, clock, size=rng.choice((4, 16, 256)))
    for _ in range(rng.randrange(0, 60)):
        clock.advance(rng.random())
        sample = rng.lognormvariate(-2.0, 0.8)
        if rng.random() < 0.2:
            sketch.observe_censored(sample)
        else:
            sketch.observe(sample)
    assert sketch.quantiles() == tuple((q, sketch.quantile(q)) for q in QUANTILES)
    assert sketch.median() == sketch.quantile(0.5)
    for evidence in (None, 0.0, 0.3, 1.0, 7.5, 300.0):
        expected = tuple((q, sketch.lower_bound(q, evidence)) for q in QUANTILES)
        assert sketch.lower_bounds(evidence) == expected
    # one optimistic quantile from only the bounds around it: what interpolating all
    # of them gives, to the last bit, at the grid's points, between them and outside
    for evidence in (0.0, 0.3, 1.0, 7.5, 300.0):
        points = sketch.lower_bounds(evidence)
        for q in (0.0, *QUANTILES, 0.05, 0.7, 0.93, 0.995, 1.0, rng.random()):
            assert sketch.lower_bound_at(q, evidence) == interpolate(points, q, 0.0)


def test_one_outlier_among_a_few_samples_does_not_set_the_placed_tail(clock: FakeClock) -> None:
    # Three warm-up turns on an engine, one of them during a stall of the machine: the
    # empirical p90 (and p99) is that stall alone; placed, it is a lognormal's around
    # the median. The median and the lower quantiles are the samples'.
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    for ttft in (0.030, 0.040, 0.837):
        sketch.observe(ttft)
    raw, placed = dict(sketch.quantiles()), dict(sketch.placed_quantiles())
    assert raw[0.75] == raw[0.9] == raw[0.99] == 0.837
    assert placed[0.75] == pytest.approx(0.040 * math.exp(0.6745 * LOG_SPREAD), rel=1e-4)
    assert placed[0.9] == pytest.approx(0.040 * math.exp(Z_90 * LOG_SPREAD), rel=1e-4)
    assert placed[0.99] == pytest.approx(0.040 * math.exp(2.3263 * LOG_SPREAD), rel=1e-4)
    assert {q: placed[q] for q in QUANTILES if q <= 0.5} == {
        q: raw[q] for q in QUANTILES if q <= 0.5
    }


def test_the_placed_tail_is_the_samples_once_they_place_it(clock: FakeClock) -> None:
    sketch = DecayingQuantiles(60.0, 0.5, clock)
    for ttft in [0.030] * 19 + [0.837]:
        sketch.observe(ttft)
    raw, placed = dict(sketch.quantiles()), dict(sketch.placed_quantiles())
    # Twenty samples place p90 (two expected above it): the samples' own.
    assert placed[0.9] == raw[0.9]
    # p99 needs a hundred: the lone outlier still does not set it.
    assert raw[0.99] == 0.837
    assert placed[0.99] == pytest.approx(0.030 * math.exp(2.3263 * LOG_SPREAD), rel=1e-4)


def test_a_target_slow_on_every_sample_stays_slow_when_placed(clock: FakeClock) -> None:
    sketch = DecayingQuantiles(60.0, 0.05, clock)
    for ttft in (0.80, 0.85, 0.90):
        sketch.observe(ttft)
    assert sketch.placed_quantiles() == sketch.quantiles()
    # Samples long ago are little evidence: the tail is held to the median's lognormal,
    # never raised above the samples.
    clock.advance(600.0)
    assert all(
        p <= r for (_, p), (_, r) in zip(sketch.placed_quantiles(), sketch.quantiles(), strict=True)
    )
