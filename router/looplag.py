"""The event loop's lag: how late it wakes a task that asked to sleep.

Every stream on a replica waits for the loop; when the router itself stalls (a
large parse, a GC pause, a starved CPU) this is where it shows, rather than in a
target's latency. Sampled by a task the runtime starts in its lifespan.

The samples are a chain of timer callbacks, not a task sleeping in a loop: a
callback costs a fraction of a task step through anyio's sleep (looking up the
backend, a future, a task wake-up). They come every `INTERVAL_S` while `busy()`
(turns or sessions in flight), every `IDLE_INTERVAL_S` otherwise: an idle router's
lag matters to nobody, and waking it 10 times a second for it was a third of its
idle wake-ups. A stall still shows when idle if a sample falls due inside it; the
first sample after traffic starts comes within `IDLE_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio

from router.clock import Clock

#: how often the lag is sampled while the router has work in flight
INTERVAL_S = 0.1
#: ... and while it has none
IDLE_INTERVAL_S = 1.0


def _always() -> bool:
    return True


async def sample_loop_lag(
    clock: Clock, observe: Callable[[float], None], busy: Callable[[], bool] = _always
) -> None:
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def tick(asked: float, interval: float) -> None:
        nonlocal handle
        now = clock()
        observe(max(0.0, now - asked - interval))
        following = INTERVAL_S if busy() else IDLE_INTERVAL_S
        handle = loop.call_later(following, tick, now, following)

    first = INTERVAL_S if busy() else IDLE_INTERVAL_S
    handle = loop.call_later(first, tick, clock(), first)
    try:
        await anyio.sleep_forever()
    finally:
        assert handle is not None
        handle.cancel()
