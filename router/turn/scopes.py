"""Cancel scopes for the hot path, without anyio's backend look-up per scope.

`anyio.CancelScope(...)` asks which async library runs (sniffio, then anyio's backend
table) every time it is called: about a third of what a scope costs, and a turn opens
two (the client's, and its attempt's deadline). The router only ever runs on asyncio
(uvicorn, aiohttp, uvloop), so the backend's scope class is looked up once, through
anyio's public factory, and called directly after that.
"""

from __future__ import annotations

import functools

import anyio


@functools.cache
def _scope_class() -> type[anyio.CancelScope]:
    return type(anyio.CancelScope())


def cancel_scope(deadline: float = float("inf")) -> anyio.CancelScope:
    """`anyio.CancelScope(deadline=deadline)` for the running (asyncio) backend."""
    return _scope_class()(deadline=deadline)
