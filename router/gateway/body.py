"""Reading a request body through ASGI's `receive`, bounded in size and time.

A refusal while the body is still arriving (`Unread`: over `limit` by its
Content-Length, before a byte of it is read, or refused by a `BodyScreen` on its
first few KiB) is answered with `connection: close`: uvicorn closes the connection
after the answer instead of reading on a body nobody will use.
"""

from __future__ import annotations

import asyncio

import anyio

from router.errors import FirstTokenError, PayloadTooLarge, RequestTimeout
from router.gateway.admission import BodyScreen
from router.gateway.asgi import Receive, Scope, header


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


class Unread(Exception):
    """A refusal before the whole body was read: answer `error`, then close."""

    def __init__(self, error: FirstTokenError) -> None:
        super().__init__(error.message)
        self.error = error


def content_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


async def read_body(
    scope: Scope,
    receive: Receive,
    limit: int,
    timeout_s: float,
) -> bytes:
    """The whole body, within `limit` bytes and `timeout_s` seconds (a turn's body is
    read by `read_unbounded` inside the turn's own cancel scope)."""
    # a scope with a deadline rather than `anyio.fail_after` (a generator context
    # manager that looks up the backend twice more: ~8 microseconds a turn)
    with anyio.CancelScope(deadline=asyncio.get_running_loop().time() + timeout_s) as deadline:
        chunks = await read_unbounded(scope, receive, limit)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    assert deadline.cancelled_caught
    raise body_timeout(timeout_s)


def body_timeout(timeout_s: float) -> RequestTimeout:
    return RequestTimeout(f"the request body did not arrive within {timeout_s:g}s")


async def read_unbounded(
    scope: Scope, receive: Receive, limit: int, screen: BodyScreen | None = None
) -> list[bytes]:
    """The whole body within `limit` bytes, in the pieces it arrived in; the caller's
    cancel scope bounds the time."""
    declared = content_length(scope)
    if declared is not None and declared > limit:
        raise Unread(PayloadTooLarge(f"the request body is over the {limit}-byte limit"))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise Unread(PayloadTooLarge(f"the request body is over the {limit}-byte limit"))
        if screen is not None:
            try:
                screen.feed(chunk, more)
            except FirstTokenError as err:
                if more:
                    raise Unread(err) from None
                raise
        if chunk:
            chunks.append(chunk)
        if not more:
            return chunks or [b""]
