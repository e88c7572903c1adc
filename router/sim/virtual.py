"""An asyncio event loop whose clock is virtual: waiting costs no wall time.

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())    # main() may sleep for minutes; it returns in milliseconds

`loop.time()` starts at 0 and only moves when every task is waiting: the loop's
selector, asked to wait `timeout` seconds for I/O, advances the clock by exactly
that instead, and the timers due then run. A simulation made only of tasks,
timers and in-process queues (a fleet of `router.sim` backends called through
`router.sim.inproc`, a router whose clock is `loop.time`) then runs as fast as the
CPU allows, deterministically, however long its simulated traffic lasts. The CPU
time of the code itself costs no virtual time, so what it measures is routing, not
the machine.

Anything that needs a real file descriptor or a thread (sockets, `run_in_executor`)
has no place on this loop: nothing would ever wake it. When every task waits and no
timer is due, the simulation is deadlocked and `select` says so instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any


class Deadlock(RuntimeError):
    """Every task waits, no timer is due: nothing can ever happen on this loop."""


class _AdvancingSelector(selectors.BaseSelector):
    """Holds registrations (the loop's self-pipe) but never waits: it moves the clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("virtual time: every task waits and no timer is due")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        self._keys.clear()

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual, advanced only while idle."""

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_AdvancingSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does this while every task waits)."""
        self._virtual_now += seconds
