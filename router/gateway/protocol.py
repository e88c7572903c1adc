"""The HTTP/1.1 connection protocol `firsttoken serve` runs: uvicorn's httptools
protocol with bounds on request heads, response heads sent with their first body
bytes, and each request's `DisconnectWatch` (router/gateway/asgi.py) in its scope.
`serving.py` configures uvicorn with it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.errors import FirstTokenError, HeadersTooLarge, MalformedHttp, RequestTimeout
from router.gateway.asgi import DISCONNECT, DisconnectWatch

log = logging.getLogger("firsttoken")


class HeadTooLarge(Exception):
    """Raised inside the parser: uvicorn answers 400 and closes the connection."""


class HeadCoalescingTransport:
    """A connection's transport that sends a response head together with the body
    bytes written right after it.

    uvicorn writes the status line and headers as soon as the app sends
    `http.response.start`, and the first body bytes in a second write: two TCP
    segments, so the client wakes twice at the commit point and the first token
    waits behind a second syscall. Here a head is held until the next write of the
    same loop iteration (the router's commit writes the first token at once) and
    both go out as one; a head with nothing after it goes out on the next loop
    iteration. Interim heads (`100 Continue`) are never held. Everything else is the
    wrapped transport's."""

    __slots__ = ("_flush_handle", "_held", "_inner", "_loop")

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data = self._held + data
            self._drop_held()
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self._held = data
            self._flush_handle = self._loop.call_soon(self._flush)
            return
        self._inner.write(data)

    def close(self) -> None:
        self._flush()
        self._inner.close()

    def unwrap(self) -> asyncio.Transport:
        """The wrapped transport, with anything held sent: for a connection that stops
        being HTTP (a WebSocket upgrade), whose frames then go straight to it."""
        self._flush()
        return self._inner

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._drop_held()
            self._inner.write(held)

    def _drop_held(self) -> None:
        self._held = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the two guards it lacks (the fault suite
    found both): a bound on the size of a request head, and a deadline for it, so a
    slowloris client cannot hold a connection (and a file descriptor) for ever. The
    body's deadline is the app's (`Server._read_body`). Its transport sends each
    response head with the first body bytes (`HeadCoalescingTransport`).

    What the parser refuses (Content-Length with Transfer-Encoding, two
    Content-Lengths, CR or NUL in a header, a head over the limit) is answered in
    the API's error shape too: uvicorn's plain-text 400 is replaced where it is
    sent (`send_400_response`), as a 431 when the head was too large."""

    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = HeadCoalescingTransport(transport, self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        #: a request head has begun and is not complete
        self._in_head = False
        self._lost = DisconnectWatch()
        self._extension: dict[object, object] = {"watch": self._lost}  # ASGI: a dict
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        self._lost.fire()

    def handle_websocket_upgrade(self) -> None:
        # A WebSocket has no response head to hold: its protocol gets the socket's own
        # transport, so each frame skips the wrapper's write() and attribute look-ups
        # (uvicorn pauses and resumes reading once a frame).
        if isinstance(self.transport, HeadCoalescingTransport):
            self.transport = self.transport.unwrap()
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # each request's scope carries the connection's watch (`DisconnectWatch`)
        self.scope.setdefault("extensions", {})[DISCONNECT] = self._extension
        self._head_bytes = 0
        self._in_head = True  # the deadline is armed only if the head spans reads

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_head_bytes:
            raise HeadTooLarge

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        if self._head_bytes > self.max_head_bytes:
            err: FirstTokenError = HeadersTooLarge(
                f"the request head is over the {self.max_head_bytes}-byte limit"
            )
        else:
            err = MalformedHttp(
                "the HTTP request is malformed (e.g. Content-Length with Transfer-Encoding, "
                "two Content-Lengths, or a control character in a header)"
            )
        log.info("%s %s", err.status, err.message)
        self._close_with(err, b"HTTP/1.1 %d %s\r\n" % (err.status, _REASONS[err.status]))

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        err = RequestTimeout("the request head did not arrive in time")
        self._close_with(err, b"HTTP/1.1 408 Request Timeout\r\n")

    def _close_with(self, err: FirstTokenError, status_line: bytes) -> None:
        """Answer `err` in the API's shape and close: the connection cannot go on."""
        body = err.to_json()
        self.transport.write(
            status_line + b"content-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()


_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}
