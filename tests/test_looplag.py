"""The loop-lag sampler's pace: every INTERVAL_S under traffic, IDLE_INTERVAL_S idle."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.looplag import IDLE_INTERVAL_S, INTERVAL_S, sample_loop_lag


@pytest.mark.anyio
async def test_lag_is_sampled_under_traffic_and_sparsely_when_idle() -> None:
    busy = True
    samples: list[float] = []
    task = asyncio.ensure_future(sample_loop_lag(time.monotonic, samples.append, lambda: busy))
    try:
        await asyncio.sleep(6 * INTERVAL_S)
        assert len(samples) >= 2, "no lag samples while turns are in flight"
        busy = False
        await asyncio.sleep(2 * INTERVAL_S)  # the tick in flight sees the router idle
        idle_from = len(samples)
        await asyncio.sleep(0.6 * IDLE_INTERVAL_S)
        assert len(samples) - idle_from <= 1, "an idle router is still woken for lag samples"
        busy = True
        await asyncio.sleep(IDLE_INTERVAL_S + 6 * INTERVAL_S)  # the idle tick, then the pace
        assert len(samples) - idle_from >= 3, "sampling did not resume under traffic"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.anyio
async def test_a_stall_under_traffic_shows_as_lag() -> None:
    samples: list[float] = []
    task = asyncio.ensure_future(sample_loop_lag(time.monotonic, samples.append, lambda: True))
    try:
        await asyncio.sleep(INTERVAL_S / 2)
        time.sleep(0.3)  # noqa: ASYNC251 (the loop stalls)
        await asyncio.sleep(2 * INTERVAL_S)
        assert max(samples) >= 0.3 - INTERVAL_S - 0.05
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
