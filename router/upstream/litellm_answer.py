"""What a litellm call hands back to a turn: a stream whose first frame is in hand, or
a body already read, as `UpstreamResponse`s (router/upstream/base.py).

A stream's connection is cut from under litellm on close: the raw httpx response of
the call (recorded by `LitellmUpstream`'s response hook) goes first, then litellm's
own iterators tidy up. Shielded, so a cancelled turn still reaches the socket and the
provider sees the cancel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import httpx


async def close_stream(
    frames: AsyncIterator[bytes], stream: Any, http: httpx.Response | None
) -> None:
    """Close a litellm stream: the socket first, then the frames and litellm's iterator
    (a Responses iterator has no `aclose`; its socket is all there is to close)."""
    with anyio.CancelScope(shield=True):
        if http is not None:
            await http.aclose()
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            await aclose()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


class LitellmStreamResponse:
    """A streamed answer whose first frame is already in hand."""

    status = 200

    def __init__(
        self,
        *,
        first: bytes,
        frames: AsyncIterator[bytes],
        stream: Any,
        http_response: httpx.Response | None,
        headers: Mapping[str, str],
    ) -> None:
        self.headers = headers
        self._first: bytes | None = first
        self._frames = frames
        self._stream = stream
        self._http = http_response

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for frame in self._frames:
            yield frame

    async def aread(self) -> bytes:
        return b"".join([frame async for frame in self.aiter_bytes()])

    async def aclose(self) -> None:
        await close_stream(self._frames, self._stream, self._http)

    async def finish(self) -> None:
        await self.aclose()


class LitellmJsonResponse:
    """A non-streamed answer, already read."""

    status = 200

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.headers = headers
        self._body = body

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aread(self) -> bytes:
        return self._body

    async def aclose(self) -> None:
        return None

    async def finish(self) -> None:
        return None
