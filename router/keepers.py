"""One background task per target, kept in step with the running config.

The engine scrapers (one per vLLM target) and the active probes (one per target that
has them) read a target's configuration and feed its signals. A reload can add a
target, remove one, or change what its task reads: its `/metrics` URL, its upstream,
its signals (a target whose identity changed starts afresh). `TargetTasks.sync`
cancels each task whose target is gone or whose key changed and starts the ones now
wanted; before it, a vLLM engine a reload added was never scraped, and its stats stayed
stale, which the policies price as saturated, for as long as the process ran.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio
from anyio.abc import TaskGroup

from router.lifespan import guarded

#: what a target's task is now: (its key, compared at each sync; how to run it)
Wanted = Mapping[str, tuple[object, Callable[[], Awaitable[object]]]]


class TargetTasks:
    """The `what` task of each target (e.g. "engine scraper"), in the task group `tg`;
    a task that ends or dies takes the process down (`lifespan.guarded`)."""

    def __init__(self, tg: TaskGroup, on_dead: Callable[[str], None], what: str) -> None:
        self._tg = tg
        self._on_dead = on_dead
        self._what = what
        self._running: dict[str, tuple[object, anyio.CancelScope]] = {}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._running)

    def sync(self, wanted: Wanted) -> None:
        """Stop the tasks not wanted as they are, start the wanted ones not running."""
        for name, (key, scope) in list(self._running.items()):
            if name not in wanted or wanted[name][0] != key:
                scope.cancel()
                del self._running[name]
        for name, (key, run) in wanted.items():
            if name not in self._running:
                scope = anyio.CancelScope()
                self._running[name] = (key, scope)
                self._tg.start_soon(self._run, name, scope, run)

    async def _run(
        self, name: str, scope: anyio.CancelScope, run: Callable[[], Awaitable[object]]
    ) -> None:
        with scope:
            await guarded(self._on_dead, f"{self._what} of {name}", run)
