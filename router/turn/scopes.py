"""Cancel scopes for the hot path, without anyio's backend look-up per scope, and
deadlines for them without a timer each.

`anyio.CancelScope(...)` asks which async library runs (sniffio, then anyio's backend
table) every time it is called: about a third of what a scope costs, and a turn opens
two (the client's, and its attempt's deadline). The router only ever runs on asyncio
(uvicorn, aiohttp, uvloop), so the backend's scope class is looked up once, through
anyio's public factory, and called directly after that.

A scope's own deadline is a loop timer armed on entry and cancelled on exit (and
again whenever the deadline moves): ~3.8 us of the ~8 us a deadlined scope costs,
for a deadline (a body's arrival, a first token's) that almost never passes.
`Deadlines` gives all of them one timer: a heap of (deadline, scope), the timer
armed at the earliest, a scope that is done dropped from it lazily. Adding a
deadline later than the earliest (the usual case: they share timeouts) arms nothing.

`Deadlines.after_send` runs a callback two loop iterations on: a turn's bookkeeping
that need not delay its request (decision metrics, the hedge timer) runs once the
request is written upstream, while the target works. Two, because on Python 3.11
aiohttp writes a request's body in a task of its own, started when the turn's task
yields: a callback queued by the turn before that would run first.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Final

import anyio

#: Deadlines rebuilds its heap when it holds this many more dropped deadlines than live
#: ones (a module constant, not a class one: a compiled build's slotted class has none)
COMPACT_AFTER: Final = 4096


@functools.cache
def _scope_class() -> type[anyio.CancelScope]:
    return type(anyio.CancelScope())


def cancel_scope(deadline: float = math.inf) -> anyio.CancelScope:
    """`anyio.CancelScope(deadline=deadline)` for the running (asyncio) backend."""
    return _scope_class()(deadline=deadline)


class Deadline:
    """One scope's place in `Deadlines`; `Deadlines.drop` it once the scope is done."""

    __slots__ = ("scope",)

    def __init__(self, scope: anyio.CancelScope | None) -> None:
        self.scope = scope


class Deadlines:
    """Cancels each scope given to `cancel_after` at its deadline, by one timer for
    all of them: what `CancelScope(deadline=...)` does, as
    precisely (the timer is armed at the earliest deadline still pending)."""

    __slots__ = ("_armed_at", "_heap", "_live", "_loop", "_order", "_timer")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._live = 0

    def __len__(self) -> int:
        """Deadlines pending (not dropped, not passed)."""
        return self._live

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        # `asyncio.get_running_loop()` is a getpid() system call (a fork check) each
        # time: the loop is asked for only when the one kept is not running (a router's
        # first turn, or tests that run one loop after another).
        if loop is None or not loop.is_running():
            loop = asyncio.get_running_loop()
            self._reset(loop)
        return loop

    def after_send(self, callback: Callable[..., object], *args: object) -> None:
        """Run `callback(*args)` once the calling task has yielded and the tasks it
        started have taken a step (a turn: once its request is written upstream)."""
        loop = self._running_loop()
        loop.call_soon(loop.call_soon, callback, *args)

    def cancel_after(self, delay_s: float, scope: anyio.CancelScope) -> Deadline:
        """Cancel `scope` `delay_s` seconds from now, unless the result is dropped first."""
        loop = self._running_loop()
        when = loop.time() + delay_s
        if when == math.inf:
            return Deadline(None)  # never due: nothing to keep
        entry = Deadline(scope)
        heap = self._heap
        heapq.heappush(heap, (when, next(self._order), entry))
        self._live += 1
        if when < self._armed_at:
            self._arm(loop, when)
        elif len(heap) > COMPACT_AFTER + 2 * self._live:
            self._compact()
        return entry

    def drop(self, entry: Deadline) -> None:
        """The scope is done: its deadline no longer matters."""
        if entry.scope is not None:
            entry.scope = None
            self._live -= 1

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = loop
        self._heap = []
        self._timer = None
        self._armed_at = math.inf
        self._live = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        loop = self._loop
        assert loop is not None
        now = loop.time()
        heap = self._heap
        while heap:
            when, _, entry = heap[0]
            scope = entry.scope
            if scope is not None and when > now:
                # A timer may fire a little early: wait for this one's own time.
                self._arm(loop, when)
                return
            heapq.heappop(heap)
            if scope is not None:
                entry.scope = None
                self._live -= 1
                scope.cancel()

    def _compact(self) -> None:
        """Drop the dropped deadlines (done scopes: those of the turns that primed)."""
        self._heap = [item for item in self._heap if item[2].scope is not None]
        heapq.heapify(self._heap)
