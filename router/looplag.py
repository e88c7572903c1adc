"""The event loop's lag: how late it wakes a task that asked to sleep.

Every stream on a replica waits for the loop; when the router itself stalls (a
large parse, a GC pause, a starved CPU) this is where it shows, rather than in a
target's latency. Sampled by a task the runtime starts in its lifespan.

The samples are a chain of timer callbacks, not a task sleeping in a loop: an idle
router wakes 20 times a second for them, and a callback costs a fraction of a task
step through anyio's sleep (looking up the backend, a future, a task wake-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio

from router.clock import Clock

#: how often the lag is sampled (uvicorn's own tick is 0.1 s too: an idle router wakes
#: 20 times a second, not 30)
INTERVAL_S = 0.1


async def sample_loop_lag(clock: Clock, observe: Callable[[float], None]) -> None:
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def tick(asked: float) -> None:
        nonlocal handle
        now = clock()
        observe(max(0.0, now - asked - INTERVAL_S))
        handle = loop.call_later(INTERVAL_S, tick, now)

    handle = loop.call_later(INTERVAL_S, tick, clock())
    try:
        await anyio.sleep_forever()
    finally:
        assert handle is not None
        handle.cancel()
