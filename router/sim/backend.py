"""The seam between the HTTP side of a simulated server and what produces tokens.

A `Backend` admits a request (`begin`) and returns either a `Rejection` (an
error answer such as 429 or 400) or a `Generation`, whose `next_token` returns
when the next token is ready. The server closes every generation when the
answer ends for any reason, client disconnect included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from router.sim.behaviour import Behaviour
from router.sim.wire import SimRequest


@dataclass(frozen=True, slots=True)
class Rejection:
    """An answer given instead of a generation (429, 5xx, 400 ...)."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


class Generation(Protocol):
    """The tokens of one admitted request, produced on the backend's schedule."""

    #: content tokens this answer will have
    n_tokens: int
    #: extra response headers (rate-limit headers, ...)
    headers: Mapping[str, str]

    async def next_token(self) -> None:
        """Return when the next token is ready."""

    async def next_tokens(self, k: int) -> int:
        """Return when the next `k` tokens are ready (fewer if the answer ends first),
        with how many; one wake-up for them all."""

    def close(self) -> None:
        """Release it (finished, failed or abandoned); must be idempotent."""


class Backend(Protocol):
    def begin(
        self, request: SimRequest, behaviour: Behaviour, headers: Mapping[str, str]
    ) -> Generation | Rejection: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def add_routes(self, app: web.Application) -> None: ...


class NoLifecycle:
    """For backends with no task to run and no routes of their own."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def add_routes(self, app: web.Application) -> None:
        return None
