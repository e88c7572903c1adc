"""Where a turn writes its answer: the `Sink` protocol.

The gateway's `AsgiSink` implements it over ASGI's `send`; tests record into a list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Header = tuple[bytes, bytes]


class Sink(Protocol):
    """Where a turn writes its answer (the server's ASGI `send`, in practice)."""

    async def start(self, status: int, headers: Sequence[Header]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...
