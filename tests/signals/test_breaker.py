from __future__ import annotations

from router.policy.base import BreakerState
from router.signals.breaker import Breaker
from tests.signals.conftest import FakeClock


def state(b: Breaker) -> BreakerState:
    """Read the state afresh (so mypy does not narrow a property across clock moves)."""
    return b.state


def make(clock: FakeClock) -> Breaker:
    return Breaker(failures=3, base_s=1.0, max_s=4.0, clock=clock)


def test_consecutive_failures_open_it_and_a_success_resets_the_count(clock: FakeClock) -> None:
    b = make(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert state(b) == "closed"
    assert b.consecutive_failures == 2
    b.record_failure()
    assert state(b) == "open"
    assert not b.available
    assert not b.try_acquire()
    assert b.open_remaining_s() == 1.0


def test_half_open_lets_exactly_one_probe_through(clock: FakeClock) -> None:
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    clock.advance(1.0)
    assert state(b) == "half_open"
    assert b.available
    assert b.try_acquire()
    assert not b.available
    assert not b.try_acquire()
    b.record_success()
    assert state(b) == "closed"
    assert b.try_acquire()
    assert b.try_acquire()


def test_probe_failures_back_off_exponentially_up_to_the_cap(clock: FakeClock) -> None:
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    opened_for = []
    for _ in range(4):
        opened_for.append(b.open_remaining_s())
        clock.advance(b.open_remaining_s())
        assert b.try_acquire()
        b.record_failure()
    assert opened_for == [1.0, 2.0, 4.0, 4.0]
    clock.advance(4.0)
    assert b.try_acquire()
    b.record_success()
    for _ in range(3):
        b.record_failure()
    assert b.open_remaining_s() == 1.0  # a close resets the backoff


def test_failures_while_open_do_not_extend_it(clock: FakeClock) -> None:
    b = make(clock)
    for _ in range(3):
        b.record_failure()
    clock.advance(0.5)
    b.record_failure()
    assert b.open_remaining_s() == 0.5


def test_open_for_is_exact_and_never_shortened(clock: FakeClock) -> None:
    b = make(clock)
    b.open_for(30.0)
    assert state(b) == "open"
    b.open_for(5.0)
    assert b.open_remaining_s() == 30.0
    b.record_success()  # an older attempt finishing does not lift "wait 30 s"
    assert state(b) == "open"
    clock.advance(30.0)
    assert state(b) == "half_open"
    assert b.try_acquire()


def test_a_probe_with_no_verdict_frees_the_slot(clock: FakeClock) -> None:
    b = make(clock)
    b.open_for(2.0)
    clock.advance(2.0)
    assert b.try_acquire()
    assert not b.try_acquire()
    b.release_probe()
    assert b.try_acquire()
