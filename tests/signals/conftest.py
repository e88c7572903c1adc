"""Shared fakes for the signals tests: a clock that only moves when told to."""

from __future__ import annotations

import pytest


class FakeClock:
    """Monotonic seconds under the test's control."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
