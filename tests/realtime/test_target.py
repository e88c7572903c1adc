"""The breaker watch: a target's sessions learn that its breaker opened from one timer."""

from __future__ import annotations

import asyncio

import pytest

from router.realtime import target as target_module
from router.realtime.target import BreakerWatch
from router.signals.breaker import Breaker

pytestmark = pytest.mark.anyio


@pytest.fixture
def fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "BREAKER_CHECK_S", 0.01)


async def test_every_waiting_session_wakes_when_the_breaker_opens(fast_checks: None) -> None:
    breaker = Breaker(failures=1, base_s=30.0, max_s=60.0, clock=asyncio.get_running_loop().time)
    watch = BreakerWatch(breaker)
    waiters = [asyncio.ensure_future(watch.opened()) for _ in range(64)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)  # closed: nobody wakes
    breaker.record_failure()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    # open: a session asking now is answered at once
    await asyncio.wait_for(watch.opened(), 0.001)


async def test_one_timer_for_all_sessions_and_none_once_they_leave(fast_checks: None) -> None:
    loop = asyncio.get_running_loop()
    breaker = Breaker(failures=1, base_s=30.0, max_s=60.0, clock=loop.time)
    watch = BreakerWatch(breaker)
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    waiters = [asyncio.ensure_future(watch.opened()) for _ in range(64)]
    await asyncio.sleep(0.035)  # a few checks later
    assert len(loop._scheduled) - before <= 2  # type: ignore[attr-defined]  # one (plus the sleep)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert len(loop._scheduled) == before  # type: ignore[attr-defined]
