"""The upstreams a reload dropped: closed once the turns of the config they served
are done, or once `server.drain_s` has passed, so pools never pile up reload after
reload. `count` is what `firsttoken_upstream_pools` shows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from router.clock import Clock
from router.upstream.base import Upstream

log = logging.getLogger("firsttoken")


class Busy(Protocol):
    """A config's runtime: how many turns still run on it."""

    @property
    def active(self) -> int: ...


@dataclass(slots=True)
class _Retiring:
    owner: Busy
    upstreams: list[Upstream]
    deadline: float


class Retirer:
    """`current` gives the running config's upstreams; `publish` is told how many pools
    are open (theirs and those still retiring) whenever that may have changed."""

    def __init__(
        self,
        clock: Clock,
        current: Callable[[], Iterable[Upstream]],
        publish: Callable[[int], None],
    ) -> None:
        self._clock = clock
        self._current = current
        self._publish = publish
        self._retiring: list[_Retiring] = []

    def retire(self, owner: Busy, upstreams: list[Upstream], within_s: float) -> None:
        if upstreams:
            self._retiring.append(_Retiring(owner, upstreams, self._clock() + within_s))
        self.count()

    def closing(self) -> list[Upstream]:
        return [u for r in self._retiring for u in r.upstreams]

    def count(self) -> int:
        """Pools open: the running config's and those still retiring (published)."""
        open_ = len({id(u) for u in self._current()} | {id(u) for u in self.closing()})
        self._publish(open_)
        return open_

    async def sweep(self) -> None:
        """Close what is due."""
        now = self._clock()
        due = [r for r in self._retiring if r.owner.active == 0 or now >= r.deadline]
        if not due:
            return
        self._retiring = [r for r in self._retiring if r not in due]
        in_use = {id(u) for u in self._current()} | {id(u) for u in self.closing()}
        for retiring in due:
            if retiring.owner.active:
                log.warning(
                    "closing the upstreams of a reloaded config with %d turns still on them",
                    retiring.owner.active,
                )
            for upstream in retiring.upstreams:
                if id(upstream) not in in_use:
                    await upstream.aclose()
        self.count()

    async def aclose(self) -> None:
        for upstream in self.closing():
            await upstream.aclose()
        self._retiring = []
        self.count()
