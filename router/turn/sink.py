"""Where a turn writes its answer: the `Sink` protocol, and the clock in front of it.

The gateway's `AsgiSink` implements it over ASGI's `send`; tests record into a list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from router.clock import Clock

Header = tuple[bytes, bytes]


class Sink(Protocol):
    """Where a turn writes its answer (the server's ASGI `send`, in practice)."""

    async def start(self, status: int, headers: Sequence[Header]) -> None: ...

    def write(self, data: bytes) -> Awaitable[None]:
        """Awaited by the caller (a coroutine function fits, or one returning the
        server's own awaitable)."""
        ...

    async def finish(self, last: bytes = b"") -> None:
        """The answer's last bytes (if any) and its end, in one write."""
        ...


class FirstByteClock:
    """A `Sink` in front of another that notes when the response starts.

    The response starts at the commit point, so `started_at - arrival` is the time
    to first token as the client sees it: fallbacks, hedge delays and the router's
    own overhead included. Writes go straight to the inner sink (no extra frame per
    chunk on the hot path).
    """

    __slots__ = ("_clock", "_sink", "finish", "started_at", "write")

    def __init__(self, sink: Sink, clock: Clock) -> None:
        self._sink = sink
        self._clock = clock
        self.started_at: float | None = None
        self.write: Callable[[bytes], Awaitable[None]] = sink.write
        self.finish = sink.finish

    async def start(self, status: int, headers: Sequence[Header]) -> None:
        self.started_at = self._clock()
        await self._sink.start(status, headers)
