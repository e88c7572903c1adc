"""Running the router under uvicorn: graceful drain, and /metrics on its own port.

Drain (SIGTERM or SIGINT): readiness turns false at once, new turns get a clean 503
(`draining`, with Retry-After) so a balancer sends them elsewhere, streams in
flight run to their end, and the process exits 0 once none is left or the drain
deadline passes. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from types import FrameType
from typing import Any, Literal, cast

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.errors import (
    FirstTokenError,
    HeadersTooLarge,
    MalformedHttp,
    NotFound,
    RequestTimeout,
)
from router.gateway import collector
from router.gateway.asgi import Message, Receive, Scope, Send, header
from router.gateway.server import Server
from router.runtime import Router

log = logging.getLogger("firsttoken")


#: uvicorn's own tick: it refreshes the Date header once a second and looks for an exit
#: every 0.1 s, 10 wake-ups a second of an idle router. Here it ticks once a second, at
#: once when an exit is asked for (a signal, `should_exit` set), and every 0.1 s while
#: draining (the drain's end is looked for on the tick).
TICK_S = 1.0
DRAIN_TICK_S = 0.1


class DrainingServer(uvicorn.Server):
    _tick_loop: asyncio.AbstractEventLoop | None = None
    _tick_waiter: asyncio.Future[None] | None = None

    def __init__(self, config: uvicorn.Config, router: Router, drain_s: float) -> None:
        super().__init__(config)
        self._router = router
        self._drain_s = drain_s
        self._deadline: float | None = None

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        if value:
            self._tick_soon()

    def _tick_soon(self) -> None:
        """Run the next tick now (safe from a signal handler or another thread)."""
        if self._tick_loop is not None:
            self._tick_loop.call_soon_threadsafe(self._tick_now)

    def _tick_now(self) -> None:
        waiter = self._tick_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def main_loop(self) -> None:
        """uvicorn's loop of ticks (`on_tick`), paced as `TICK_S` says."""
        loop = self._tick_loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            draining = self._deadline is not None
            counter = (counter + (1 if draining else 10)) % 864000  # Date at counter % 10 == 0
            waiter = self._tick_waiter = loop.create_future()
            timer = loop.call_later(DRAIN_TICK_S if draining else TICK_S, self._tick_now)
            try:
                await waiter
            finally:
                timer.cancel()
                self._tick_waiter = None
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._deadline is not None or self._drain_s <= 0:
            super().handle_exit(sig, frame)
            return
        self._tick_soon()  # ticks at the drain's pace from now on
        self._router.draining = True
        self._deadline = time.monotonic() + self._drain_s
        log.info(
            "draining: %d turns in flight, up to %.0fs; signal again to stop now",
            self._router.active_turns,
            self._drain_s,
        )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        collector.freeze_after_start()

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            if self._router.active_turns == 0 and self._router.active_sessions == 0:
                self.should_exit = True
            elif time.monotonic() >= self._deadline:
                log.warning(
                    "drain deadline passed with %d turns in flight", self._router.active_turns
                )
                self.should_exit = True
        return await super().on_tick(counter)


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
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # A WebSocket has no response head to hold: its protocol gets the socket's own
        # transport, so each frame skips the wrapper's write() and attribute look-ups
        # (uvicorn pauses and resumes reading once a frame).
        if isinstance(self.transport, HeadCoalescingTransport):
            self.transport = self.transport.unwrap()
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
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


class MetricsApp:
    """A bare ASGI app serving only /metrics, for `server.metrics_port`."""

    def __init__(self, router: Router, bound_host: str | None = None) -> None:
        self.router = router
        self._server = Server(router, bound_host=bound_host)  # for its Host/Origin checks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            guard = self._server.guard()
            guard.check_host(header(scope, b"host"))
            guard.check_origin(header(scope, b"origin"))
        except FirstTokenError as err:
            body, status, ctype = err.to_json(), err.status, b"application/json"
        else:
            body, status, ctype = self._answer(scope["path"])
        start: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _answer(self, path: str) -> tuple[bytes, int, bytes]:
        if path == "/metrics":
            return generate_latest(self.router.metrics.registry), 200, CONTENT_TYPE_LATEST.encode()
        return NotFound("only /metrics is served on this port").to_json(), 404, b"application/json"


#: how uvicorn runs /v1/realtime: the sans-I/O `websockets` protocol (the cheapest of
#: uvicorn's on this kind of machine), no per-message deflate (base64 audio barely
#: compresses and deflate cost 35-60 % more CPU per frame), frames up to 16 MiB
#: (a larger one is closed 1009)
WEBSOCKET_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_max_size": 16 * 1024 * 1024,
    "ws_per_message_deflate": False,
}


def _config(
    app: Server | MetricsApp, host: str, port: int, log_level: str, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    server_cfg = app.router.runtime.config.server
    protocol = type(
        "GuardedHttpTools",
        (GuardedHttpTools,),
        {
            "max_head_bytes": server_cfg.max_header_bytes,
            "head_timeout_s": server_cfg.client_timeout_s,
        },
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=protocol,
        lifespan=lifespan,
        log_level=log_level,
        log_config=None,  # the process's logging (router/logs.py: text or JSON) is used
        access_log=False,
        proxy_headers=False,  # the router reads no client address; skip the middleware
        server_header=False,
        timeout_keep_alive=75,  # longer than a load balancer's usual 60 s idle timeout
        timeout_graceful_shutdown=5,
        **WEBSOCKET_OPTIONS,
    )


def run(router: Router, host: str, port: int, log_level: str) -> None:
    """Serve until drained. Blocks; installs uvloop."""
    server_cfg = router.runtime.config.server
    collector.apply(server_cfg.gc)
    collector.trace_from_env()
    if host in ("0.0.0.0", "::") and not server_cfg.allowed_hosts:
        log.warning(
            "listening on every address, but only localhost and loopback Host values are "
            "served: list the names (and the pod network) clients use in server.allowed_hosts"
        )
    main = DrainingServer(
        _config(
            Server(router, reload=router.reload_from_file, bound_host=host),
            host,
            port,
            log_level,
            "on",
        ),
        router,
        server_cfg.drain_s,
    )

    def fatal(reason: str) -> None:
        main.should_exit = True  # `firsttoken serve` then exits 1 (router.fatal is set)

    router.on_fatal = fatal
    if server_cfg.metrics_port is None:
        main.run()
        return
    metrics = uvicorn.Server(
        _config(MetricsApp(router, host), host, server_cfg.metrics_port, log_level, "off")
    )

    async def both() -> None:
        # The metrics server starts first so the main one installs the signal
        # handlers last and is the one that drains; metrics stop after it.
        task = asyncio.create_task(metrics.serve())
        try:
            await main.serve()
        finally:
            metrics.should_exit = True
            await task

    uvloop.run(both())
