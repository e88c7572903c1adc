"""The virtual-time event loop: waiting costs no wall time, and a deadlock says so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio
import pytest

from router.sim.virtual import Deadlock, VirtualTimeLoop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def test_an_hour_of_sleeping_tasks_takes_no_wall_time() -> None:
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        woke: list[float] = []

        async def sleeper(s: float) -> None:
            await anyio.sleep(s)
            woke.append(loop.time())

        async with anyio.create_task_group() as tg:
            for s in (3600.0, 0.5, 60.0):
                tg.start_soon(sleeper, s)
        with anyio.move_on_after(10.0):  # deadlines run on the same clock
            await asyncio.Event().wait()
        return loop.time(), woke

    started = time.monotonic()
    now, woke = run(main())
    assert time.monotonic() - started < 1.0
    assert woke == [0.5, 60.0, 3600.0]
    assert now == pytest.approx(3610.0)


def test_every_task_waiting_with_no_timer_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Deadlock):
        run(main())
