"""The event loop's lag: how late it wakes a task that asked to sleep.

Every stream on a replica waits for the loop; when the router itself stalls (a
large parse, a GC pause, a starved CPU) this is where it shows, rather than in a
target's latency. Sampled by a task the runtime starts in its lifespan.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from router.clock import Clock

#: how often the lag is sampled
INTERVAL_S = 0.05


async def sample_loop_lag(clock: Clock, observe: Callable[[float], None]) -> None:
    while True:
        asked = clock()
        await anyio.sleep(INTERVAL_S)
        observe(max(0.0, clock() - asked - INTERVAL_S))
