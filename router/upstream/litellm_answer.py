"""What a litellm call hands back to a turn: a stream whose first frame is in hand, or
a body already read, as `UpstreamResponse`s (router/upstream/base.py); and the two
readers that turn litellm's stream objects into OpenAI's SSE frames (`chat_frames`,
`response_frames`). A reader hands litellm's exceptions to `fail` (the upstream's
one translation), saying whether the first token was out yet.

A stream's connection is cut from under litellm on close: the raw httpx response of
the call (recorded by `LitellmUpstream`'s response hook) goes first, then litellm's
own iterators tidy up. Shielded, so a cancelled turn still reaches the socket and the
provider sees the cancel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, NoReturn

import anyio
import httpx

from router.errors import UpstreamProtocolError
from router.turn.responses_wire import DELTAS, ENDS, FAILURES
from router.upstream.litellm_errors import Phase
from router.upstream.litellm_frames import DONE, chunk_payload, sse, usage_dict, usage_payload
from router.upstream.litellm_responses import event_frame

#: raises litellm's exception as ours, for the phase it happened in
Fail = Callable[[BaseException, Phase], NoReturn]


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


async def response_frames(stream: Any, fail: Fail, name: str) -> AsyncIterator[bytes]:
    """Responses SSE frames from litellm's events, numbered as they leave. A stream
    that ends before its terminal event is an error, never a silent truncation."""
    events = stream.__aiter__()
    sequence = 0
    committed = ended = False
    while True:
        try:
            event = await events.__anext__()
        except StopAsyncIteration:
            break
        except Exception as exc:  # the litellm boundary: translated below
            fail(exc, "stream" if committed else "send")
        kind, frame = event_frame(event, sequence)
        sequence += 1
        committed = committed or kind in DELTAS
        ended = ended or kind in ENDS or kind in FAILURES
        yield frame
    if not ended:
        raise UpstreamProtocolError(
            f"{name}: the stream ended before response.completed", target=name
        )


async def chat_frames(
    stream: Any, include_usage: bool, fail: Fail, name: str
) -> AsyncIterator[bytes]:
    """OpenAI SSE frames from litellm's chunks. Frames before the first content are
    held back, so the first frame out is the first token. A stream that ends without
    a finish reason is an error, never a silent truncation."""
    chunks = stream.__aiter__()
    held: list[bytes] | None = []  # frames before the first content; None after
    usage: dict[str, Any] | None = None
    finished = False
    last: Any = None
    while True:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except Exception as exc:  # the litellm boundary: translated below
            fail(exc, "stream" if held is None else "send")
        last = chunk
        usage = usage_dict(getattr(chunk, "usage", None)) or usage
        payload = chunk_payload(chunk)
        if payload is None:
            continue
        finished = finished or any(c["finish_reason"] for c in payload["choices"])
        frame = sse(payload)
        if held is not None and not any(set(c["delta"]) - {"role"} for c in payload["choices"]):
            held.append(frame)
            continue
        if held:
            for early in held:
                yield early
        held = None
        yield frame
    if not finished:
        raise UpstreamProtocolError(f"{name}: the stream ended before a finish reason", target=name)
    if held is not None:
        if usage is None:
            # litellm skips frames it cannot parse and then invents `finish_reason:
            # stop`; a real answer always reports usage (we always ask for it).
            raise UpstreamProtocolError(
                f"{name}: the stream had no content and no usage", target=name
            )
        for early in held:
            yield early
    if include_usage and usage is not None and last is not None:
        yield sse(usage_payload(last.id, last.created, last.model, usage))
    yield DONE
