"""The upstreams a reload dropped: closed once the turns of the config they served
are done, or once `server.drain_s` has passed, so pools never pile up reload after
reload. `count` is what `firsttoken_upstream_pools` shows."""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._retiring: list[_Retiring] = []

    def retire(self, owner: Busy, upstreams: list[Upstream], within_s: float) -> None:
        if upstreams:
            self._retiring.append(_Retiring(owner, upstreams, self._clock() + within_s))

    def closing(self) -> list[Upstream]:
        return [u for r in self._retiring for u in r.upstreams]

    def count(self, current: Iterable[Upstream]) -> int:
        """Pools open: the running config's and those still retiring."""
        return len({id(u) for u in current} | {id(u) for u in self.closing()})

    async def sweep(self, current: Iterable[Upstream]) -> bool:
        """Close what is due; whether anything was."""
        now = self._clock()
        due = [r for r in self._retiring if r.owner.active == 0 or now >= r.deadline]
        if not due:
            return False
        self._retiring = [r for r in self._retiring if r not in due]
        in_use = {id(u) for u in current} | {id(u) for u in self.closing()}
        for retiring in due:
            if retiring.owner.active:
                log.warning(
                    "closing the upstreams of a reloaded config with %d turns still on them",
                    retiring.owner.active,
                )
            for upstream in retiring.upstreams:
                if id(upstream) not in in_use:
                    await upstream.aclose()
        return True

    async def aclose(self) -> None:
        for upstream in self.closing():
            await upstream.aclose()
        self._retiring = []
