"""A small HTTP/1.1 client for the relay's hot path: one keep-alive pool per target.

Why not aiohttp (or httpx): on this kind of machine a request through aiohttp's
`ClientSession` takes ~500 microseconds from the call to the response headers at
low load, against ~170 for the same bytes over a bare protocol with httptools'
parser (benchmarks/RESULTS.md, "Overhead"). That time is spent before the upstream
sees the turn, i.e. it is added to every first token. A relay needs little of a
general client: POST a body, read the status and headers, hand over body chunks as
they arrive, close the connection to cancel. That is all this module does.

- One write per request (head and body together), TCP_NODELAY (asyncio's default).
- The response is parsed by httptools (C): chunked and Content-Length bodies; the
  chunks reach the caller as they arrive, joined only if several are waiting.
- Keep-alive: a connection goes back to the pool when its answer was read to the
  end and both sides allow it; idle ones are dropped after `keepalive_s`. A request
  that finds its reused connection closed before any answer byte is retried once
  on a new connection (the server closed an idle keep-alive connection under us).
- Timeouts: `connect_s` bounds the TCP (and TLS) connect; `read_s` bounds each wait
  for bytes (the headers, then the silence between two chunks).
- Closing an answer before its end closes the connection: the target sees the
  disconnect and stops generating.
- Back-pressure: past `HIGH_WATER` unread bytes the socket stops being read.

Errors are httpx's exceptions (`ConnectError`, `ConnectTimeout`, `ReadTimeout`,
`ReadError`, `RemoteProtocolError`): `router.upstream.openai.translate` turns them
into `router.errors` in one place, for this client and for any httpx transport.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

#: unread bytes of one answer past which the socket is not read until they are taken
HIGH_WATER = 1 << 20


class Http1Response:
    """An answer whose status and headers are in and whose body is being read."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_loop",
        "_read_s",
        "_size",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection, loop: asyncio.AbstractEventLoop, read_s: float) -> None:
        self._conn = conn
        self._loop = loop
        self._read_s = read_s
        self.status = 0
        #: lower-cased names; repeated headers joined with ", "
        self.headers: Mapping[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: httpx.HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- fed by the connection --------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: httpx.HTTPError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller -----------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(self._read_s, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(httpx.ReadTimeout(f"no bytes for {self._read_s:g}s"))

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._size > HIGH_WATER:  # reading was paused: all is taken now
                    self._conn.resume()
                self._size = 0
                yield data
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                await self._wait()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Give the connection back if the answer was read to its end, else close it."""
        self._conn.answer_closed(self._done and self._error is None and not self._chunks)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one request at a time."""

    def __init__(self, pool: Http1Client) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._response: Http1Response | None = None
        self._headers_ready: asyncio.Future[None] | None = None
        self._header_items: list[tuple[str, str]] = []
        #: bytes of the current answer received so far (0: it may be retried)
        self.received = 0
        self._keep_alive = False
        self._until_eof = False

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, but behave as such
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the stream is out of step
            self.close()
            return
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(httpx.RemoteProtocolError(f"invalid HTTP answer: {exc}"))

    def eof_received(self) -> bool:
        response = self._response
        if response is not None and self._until_eof and response.status:
            self._response_ended()  # a body without length or chunks ends at EOF
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        detail = f": {exc}" if exc else ""
        self._lost(httpx.ReadError(f"the connection was closed{detail}"))
        self._pool.forget(self)

    # -- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_items.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        headers: dict[str, str] = {}
        for name, value in self._header_items:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        response.status = self._parser.get_status_code()
        response.headers = headers
        self._until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and response.status not in (204, 304)
        )
        self._header_items = []
        ready = self._headers_ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._feed(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        self._response_ended()

    def _response_ended(self) -> None:
        assert self._response is not None
        self._response._finish()

    # -- used by the client --------------------------------------------------------------

    async def request(self, data: bytes, read_s: float) -> Http1Response:
        assert self.transport is not None
        response = self._response = Http1Response(self, self._loop, read_s)
        ready = self._headers_ready = self._loop.create_future()
        self.received = 0
        self._keep_alive = False
        self._until_eof = False
        self.transport.write(data)
        timer = self._loop.call_later(read_s, self._headers_timed_out, ready, read_s)
        try:
            await ready
        except BaseException:  # a cancel (hedge lost, client gone, deadline) included
            self.close()
            raise
        finally:
            timer.cancel()
            self._headers_ready = None
        return response

    def _headers_timed_out(self, ready: asyncio.Future[None], read_s: float) -> None:
        if not ready.done():
            ready.set_exception(httpx.ReadTimeout(f"no answer within {read_s:g}s"))

    def _lost(self, error: httpx.HTTPError) -> None:
        ready = self._headers_ready
        if ready is not None and not ready.done():
            ready.set_exception(error)
        if self._response is not None:
            self._response._fail(error)
        self.close()

    def answer_closed(self, complete: bool) -> None:
        self._response = None
        if complete and self._keep_alive and not self.closed:
            self.resume()
            self._pool.release(self)
        else:
            self.close()

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Client:
    """A keep-alive pool to one origin (`base_url`'s scheme, host and port)."""

    def __init__(
        self,
        base_url: str,
        *,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        # As written in the URL (an IPv6 address keeps its brackets), without userinfo
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":  # the system's CAs (SSL_CERT_FILE / SSL_CERT_DIR apply)
            self._ssl = ssl_context or ssl.create_default_context()
        self._keepalive_s = keepalive_s
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    def head(self, method: str, path: str, headers: Mapping[str, str], length: int) -> bytes:
        """The request line and headers, ready to be followed by `length` body bytes."""
        lines = [f"{method} {path} HTTP/1.1\r\nhost: {self._host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"content-length: {length}\r\n\r\n")
        head = "".join(lines)
        breaks = len(lines) + 2  # two on the first and last line, one on each other
        if head.count("\n") != breaks or head.count("\r") != breaks:
            raise httpx.LocalProtocolError("a header name or value contains a line break")
        try:
            return head.encode("latin-1")
        except UnicodeEncodeError as exc:
            raise httpx.LocalProtocolError("a header is not latin-1 text") from exc

    async def open(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect_s: float,
        read_s: float,
    ) -> Http1Response:
        """Send the request; return once the status line and headers are in."""
        data = self.head(method, path, headers, len(body)) + body
        conn = self._take_idle()
        if conn is not None:
            try:
                return await conn.request(data, read_s)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if conn.received:  # the server answered something: not ours to resend
                    raise
            # An idle connection the server had closed: once more, on a new one.
        conn = await self._connect(connect_s)
        return await conn.request(data, read_s)

    def _take_idle(self) -> _Connection | None:
        deadline = asyncio.get_running_loop().time() - self._keepalive_s
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    async def _connect(self, connect_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        try:
            async with asyncio.timeout(connect_s):
                await loop.create_connection(
                    lambda: conn,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect timed out after {connect_s:g}s") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._open.add(conn)
        return conn

    def release(self, conn: _Connection) -> None:
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        self._open.clear()
