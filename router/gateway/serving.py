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
from typing import Any, Literal

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.errors import FirstTokenError, NotFound
from router.gateway import collector
from router.gateway.asgi import Message, Receive, Scope, Send, header
from router.gateway.protocol import GuardedHttpTools
from router.gateway.server import Server
from router.runtime import Router
from router.upstream import eager

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
        eager.install(asyncio.get_running_loop())  # upstream request bytes leave at once
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
