"""Running the router under uvicorn: graceful drain, and /metrics on its own port.

Drain (SIGTERM or SIGINT): readiness turns false at once, new turns get a clean 503
(`draining`, with Retry-After) so a balancer sends them elsewhere, streams in
flight run to their end, and the process exits 0 once none is left or the drain
deadline passes. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType
from typing import Literal

import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.app import Router
from router.errors import NotFound
from router.server import Message, Receive, Scope, Send, Server

log = logging.getLogger("firsttoken")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, router: Router, drain_s: float) -> None:
        super().__init__(config)
        self._router = router
        self._drain_s = drain_s
        self._deadline: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._deadline is not None or self._drain_s <= 0:
            super().handle_exit(sig, frame)
            return
        self._router.draining = True
        self._deadline = time.monotonic() + self._drain_s
        log.info(
            "draining: %d turns in flight, up to %.0fs; signal again to stop now",
            self._router.active_turns,
            self._drain_s,
        )

    async def on_tick(self, counter: int) -> bool:
        if self._deadline is not None and not self.should_exit:
            if self._router.active_turns == 0:
                self.should_exit = True
            elif time.monotonic() >= self._deadline:
                log.warning(
                    "drain deadline passed with %d turns in flight", self._router.active_turns
                )
                self.should_exit = True
        return await super().on_tick(counter)


class MetricsApp:
    """A bare ASGI app serving only /metrics, for `server.metrics_port`."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            body = generate_latest(self._router.metrics.registry)
            status, ctype = 200, CONTENT_TYPE_LATEST.encode()
        else:
            body = NotFound("only /metrics is served on this port").to_json()
            status, ctype = 404, b"application/json"
        start: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _config(
    app: Server | MetricsApp, host: str, port: int, log_level: str, lifespan: Literal["on", "off"]
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=64 * 1024,
    )


def run(router: Router, host: str, port: int, log_level: str) -> None:
    """Serve until drained. Blocks; installs uvloop."""
    server_cfg = router.runtime.config.server
    main = DrainingServer(
        _config(Server(router, reload=router.reload_from_file), host, port, log_level, "on"),
        router,
        server_cfg.drain_s,
    )
    if server_cfg.metrics_port is None:
        main.run()
        return
    metrics = uvicorn.Server(
        _config(MetricsApp(router), host, server_cfg.metrics_port, log_level, "off")
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
