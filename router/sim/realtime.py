"""A simulated OpenAI Realtime server (GA shape) on 127.0.0.1, with faults and records.

`GET /v1/realtime?model=M` upgrades to a WebSocket (aiohttp's server; per-message
deflate off, 16 MiB frames), authenticated like OpenAI's: `Authorization:
Bearer` or the browser subprotocols `realtime` and `openai-insecure-api-key.<key>`
(answered `realtime`). Azure OpenAI's paths are served too, `/openai/v1/realtime`
(GA) and `/openai/realtime?api-version=V&deployment=D` (preview), with its
`api-key: <key>` header. A connection that sends the beta header
`OpenAI-Beta: realtime=v1` is closed with 4000 `beta_api_shape_disabled`, as
OpenAI does since 2026. The protocol itself is `router.sim.realtime_session`;
timing and faults are `router.sim.realtime_behaviour`.

WebRTC calls (`POST /v1/realtime/calls`, the SDP exchange and the call's actions) are
`router.sim.realtime_calls`, recorded in `calls`; `/v1/realtime?call_id=ID` joins a
call's session (its sideband), a 404 for a call it never answered.

Tests act on live sessions through `drop(code)` (the server closes every open
session, 1011 by default) and `expire()` (`session_expired`, then 1001), and read
what the server saw in `records`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import replace
from typing import Any, Self

from aiohttp import WSMsgType, web

from router.clock import Clock
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from router.sim.realtime_calls import SimCalls
from router.sim.realtime_records import RealtimeRecord
from router.sim.realtime_session import SimRealtimeSession

MAX_FRAME_BYTES = 16 * 1024 * 1024
KEY_PROTOCOL = "openai-insecure-api-key."


def _error_body(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}})


class _Live:
    """One open session: its socket, protocol state and expiry timer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        session: SimRealtimeSession,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.session = session
        self.expiry: asyncio.TimerHandle | None = None
        self.transport = transport


class RealtimeSim:
    """Use as `async with RealtimeSim() as sim:`; `sim.base_url` is the OpenAI base URL."""

    def __init__(
        self,
        behaviour: RealtimeBehaviour | None = None,
        *,
        model: str = "sim-realtime",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        self.behaviour = behaviour or RealtimeBehaviour()
        self.model = model
        self.api_key = api_key
        self.host = host
        self._port = port
        self._clock = clock
        self.records: deque[RealtimeRecord] = deque(maxlen=max_records)
        self._live: dict[str, _Live] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: WebRTC calls (`POST /v1/realtime/calls`) and what was done to them
        self.calls = SimCalls(lambda: self.behaviour, self._authorised, max_records)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT/v1 (the openai SDK maps it to ws://)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/realtime"

    async def start(self) -> None:
        app = web.Application()
        for path in ("/v1/realtime", "/openai/v1/realtime", "/openai/realtime"):
            app.router.add_get(path, self._realtime)
        app.router.add_get("/health", self._health)
        self.calls.add_routes(app)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for live in list(self._live.values()):
            await live.session.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- control ------------------------------------------------------------------------

    def set_fault(self, fault: RealtimeFault) -> None:
        self.behaviour = replace(self.behaviour, fault=fault)

    @property
    def open_sessions(self) -> list[RealtimeRecord]:
        return [live.session.record for live in self._live.values()]

    async def drop(self, code: int = 1011, reason: str = "simulated failure") -> None:
        """Close every open session from the server's side."""
        for live in list(self._live.values()):
            await self._close(live, code, reason)

    def freeze(self) -> None:
        """Every open session's server stops reading its socket, as a hung process or a
        lost network does: nothing is answered, not even a WebSocket ping."""
        for live in self._live.values():
            if live.transport is not None:
                live.transport.pause_reading()

    async def expire(self) -> None:
        """End every open session as OpenAI's 60-minute cap does."""
        for live in list(self._live.values()):
            await self._expire(live)

    async def _expire(self, live: _Live) -> None:
        await live.session.error(
            "Your session hit the maximum duration of 60 minutes.", code="session_expired"
        )
        await self._close(live, 1001, "session expired")

    async def _close(self, live: _Live, code: int, reason: str) -> None:
        record = live.session.record
        if record.closed_by is None:
            record.closed_by, record.close_code = "server", code
            record.closed_at = self._clock()
        await live.ws.close(code=code, message=reason.encode())

    # -- the endpoint -------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _authorised(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return True
        if request.path.startswith("/openai/") and request.headers.get("api-key") == self.api_key:
            return True  # Azure's
        protocols = request.headers.get("Sec-WebSocket-Protocol", "")
        return f"{KEY_PROTOCOL}{self.api_key}" in [p.strip() for p in protocols.split(",")]

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        session_id = f"sess_sim{next(self._ids)}"
        record = RealtimeRecord(
            id=session_id,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            opened_at=self._clock(),
        )
        self.records.append(record)
        fault = self.behaviour.fault
        if fault.kind == "refuse":
            record.close_code = fault.status
            body = _error_body(fault.message, "server_error", "simulated_refusal")
            return web.Response(status=fault.status, text=body, content_type="application/json")
        if fault.kind == "slow_upgrade":
            await asyncio.sleep(fault.delay_s)
        if not self._authorised(request):
            body = _error_body(
                "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
            return web.Response(status=401, text=body, content_type="application/json")
        model = request.query.get("model", request.query.get("deployment", self.model))
        call_id = request.query.get("call_id")
        if call_id is not None:  # a WebRTC call's sideband: the call's session
            call = self.calls.find(call_id)
            if call is None:
                body = _error_body("Call not found.", "invalid_request_error", "call_not_found")
                return web.Response(status=404, text=body, content_type="application/json")
            model = str(call.session.get("model"))
        ws = web.WebSocketResponse(
            protocols=("realtime",), compress=False, max_msg_size=MAX_FRAME_BYTES, autoping=True
        )
        await ws.prepare(request)
        session = SimRealtimeSession(
            record,
            behaviour=lambda: self.behaviour,
            send=lambda event: ws.send_str(json.dumps(event)),
            close=lambda code, reason: self._close(live, code, reason),
            clock=self._clock,
            model=model,
            transcription=request.query.get("intent") == "transcription",
        )
        live = _Live(ws, session, request.transport)
        self._live[session_id] = live
        try:
            await self._serve(request, live, fault)
        finally:
            self._live.pop(session_id, None)
            if live.expiry is not None:
                live.expiry.cancel()
            await session.aclose()
            if record.closed_by is None:
                record.closed_by, record.closed_at = "client", self._clock()
                record.close_code = ws.close_code
        return ws

    async def _serve(self, request: web.Request, live: _Live, fault: RealtimeFault) -> None:
        ws, session = live.ws, live.session
        if request.headers.get("OpenAI-Beta", "").startswith("realtime="):
            await self._close(live, 4000, "beta_api_shape_disabled")
            return
        if fault.kind == "close_before_created":
            await self._close(live, fault.code, fault.message)
            return
        if fault.kind != "hang_before_created":
            await session.start()
            cap = self.behaviour.session_max_s
            if cap is not None:
                live.expiry = asyncio.get_running_loop().call_later(cap, self._spawn_expiry, live)
        async for message in ws:
            if fault.kind == "hang_before_created":
                continue
            if message.type == WSMsgType.TEXT:
                event = _event(message.data)
                if event is None:
                    session.record.bad_frames += 1
                    await session.error("The frame is not a JSON object.", code="invalid_json")
                else:
                    await session.handle_event(event)
            elif message.type == WSMsgType.BINARY:
                await session.handle_binary()

    def _spawn_expiry(self, live: _Live) -> None:
        task = asyncio.get_running_loop().create_task(self._expire(live))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _event(text: str) -> dict[str, Any] | None:
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):  # a frame too deep to read is not an event
        return None
    return event if isinstance(event, dict) else None
