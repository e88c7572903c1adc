"""One simulated OpenAI-compatible server on 127.0.0.1: HTTP, SSE, faults and records.

`SimServer` owns the HTTP side (aiohttp's low-level server on a listener it opens
itself, so `refuse` can close and re-open the port) and the fault modes of
`router.sim.behaviour`. When, and how many, tokens are produced is decided by a
`Backend`: fixed timing (`OpenAISim`), a continuous-batching engine (`VllmSim`)
or a hosted API with rate limits (`HostedSim`).

Client disconnects are noticed at once: the runner is built with
`handler_cancellation=True`, so aiohttp cancels the handler task as soon as the
transport reports the connection lost, even while the handler sleeps before the
first token. The record's `cancelled_at` is set there, and the backend's
generation is closed (a vLLM-like engine drops the sequence from its batch).

Over 400 lines (about 520), kept whole: every fault mode acts on the same request, stream
and record, so splitting them would pass that state around; the timing lives in
the backends, the bytes in `wire`, the fault grammar in `behaviour`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import struct
import time
from collections import deque
from dataclasses import replace
from typing import Any, Self

from aiohttp import web

from router.clock import Clock
from router.sim.backend import Backend, Generation, Rejection
from router.sim.behaviour import FAULT_HEADER, Behaviour, Fault, FaultSyntaxError
from router.sim.chat_store import ChatStore
from router.sim.conversations import unknown_conversation
from router.sim.embeddings import Embedder
from router.sim.moderations import moderate
from router.sim.records import RequestRecord
from router.sim.responses import ResponsesEncoder, ResponseStore, unknown_previous
from router.sim.wire import (
    DONE,
    MALFORMED_FRAME,
    Encoder,
    Endpoint,
    FinishReason,
    InvalidRequest,
    SimRequest,
    error_body,
    padded_error_chunks,
    parse_request,
)


def _hang() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


class SimServer:
    """An OpenAI-compatible server; use as `async with SimServer(backend) as s:`."""

    def __init__(
        self,
        backend: Backend,
        *,
        behaviour: Behaviour | None = None,
        model: str = "sim-model",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        self.backend = backend
        self.model = model
        self.host = host
        self._port = port
        self._clock = clock
        self._behaviour = behaviour or Behaviour()
        self.records: deque[RequestRecord] = deque(maxlen=max_records)
        self._ids = itertools.count(1)
        #: stored Responses (GET, DELETE, `previous_response_id`), and embeddings
        self.stored = ResponseStore()
        #: stored chat completions (`store: true`)
        self.chats = ChatStore()
        #: chat ids unique across simulators, so a test can tell which stored one
        self._chat_prefix = os.urandom(3).hex()
        self._embedder = Embedder()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT (no path)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: http://127.0.0.1:PORT/v1."""
        return f"{self.url}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/moderations", moderate)
        self.stored.add_routes(app)
        self.chats.add_routes(app)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self.backend.add_routes(app)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await self.backend.start()
        if self._behaviour.fault.kind != "refuse":
            await self._listen()
        elif not self._port:
            raise RuntimeError("cannot start refusing without a fixed port")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._close_listener()
        if self._runner is not None:
            self._drop_connections()
            await self._runner.cleanup()
            self._runner = None
        await self.backend.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None and self._runner.server is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._runner.server, self.host, self._port, reuse_address=True
        )
        self._port = self._listener.sockets[0].getsockname()[1]

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _drop_connections(self) -> None:
        if self._runner is not None and self._runner.server is not None:
            for handler in self._runner.server.connections:
                handler.force_close()

    # -- behaviour ------------------------------------------------------------------

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        """Takes effect at once; re-opening a refused port finishes in a task."""
        was_refusing = self._behaviour.fault.kind == "refuse"
        self._behaviour = value
        refusing = value.fault.kind == "refuse"
        if refusing and not was_refusing:
            self._close_listener()
            self._drop_connections()
        elif was_refusing and not refusing and self._runner is not None:
            task = asyncio.get_running_loop().create_task(self._listen())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def set_behaviour(self, value: Behaviour) -> None:
        """Like assigning `behaviour`, and waits until the port is open again."""
        self.behaviour = value
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def set_fault(self, fault: Fault) -> None:
        await self.set_behaviour(replace(self._behaviour, fault=fault))

    # -- endpoints ------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "sim"}]
        return web.json_response({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "completions")

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "responses")

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._completion(request, "embeddings")

    def _record_id(self, endpoint: Endpoint) -> str:
        if endpoint == "responses":
            return self.stored.new_id()
        if endpoint == "chat":
            return f"chatcmpl-sim{self._chat_prefix}{next(self._ids)}"
        prefix = "cmpl-sim" if endpoint == "completions" else "emb-sim"
        return f"{prefix}{next(self._ids)}"

    async def _completion(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        now = self._clock()
        record = RequestRecord(
            id=self._record_id(endpoint),
            path=request.path,
            body=None,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=now,
        )
        self.records.append(record)
        behaviour = self._behaviour
        try:
            return await self._serve(request, endpoint, record, behaviour)
        except asyncio.CancelledError:
            if record.finished_at is None:
                record.cancelled_at = self._clock()
            raise
        except ConnectionResetError:
            # The client went away while we wrote (a router closing a hedge loser or
            # a cancelled turn): normal for a server, so say so as aiohttp expects,
            # a cancellation, rather than as an error with a traceback.
            if record.finished_at is None:
                record.cancelled_at = self._clock()
            raise asyncio.CancelledError from None

    async def _serve(
        self,
        request: web.Request,
        endpoint: Endpoint,
        record: RequestRecord,
        behaviour: Behaviour,
    ) -> web.StreamResponse:
        try:
            record.body = json.loads(await request.read())
            sim_request = parse_request(endpoint, record.body, request.headers.get("authorization"))
            fault_text = request.headers.get(FAULT_HEADER)
            fault = Fault.parse(fault_text) if fault_text else behaviour.fault
        except (ValueError, InvalidRequest, FaultSyntaxError) as exc:
            return self._reject(
                record, Rejection(400, error_body(str(exc), "invalid_request_error"))
            )
        record.fault = fault.kind
        if endpoint == "responses":
            missing = unknown_previous(sim_request, self.stored)
            if missing is not None:
                return self._reject(record, Rejection(400, missing))
            unknown = unknown_conversation(sim_request.body, self.stored.conversations)
            if unknown is not None:
                return self._reject(record, Rejection(404, unknown))
        early = await self._early_fault(request, record, fault)
        if early is not None:
            return early
        outcome = self.backend.begin(sim_request, behaviour, record.headers)
        if isinstance(outcome, Rejection):
            return self._reject(record, outcome)
        try:
            if endpoint == "embeddings":
                return await self._embed(
                    request,
                    record=record,
                    sim=sim_request,
                    behaviour=behaviour,
                    fault=fault,
                    gen=outcome,
                )
            if sim_request.stream:
                return await self._stream(
                    request, record, sim_request, behaviour=behaviour, fault=fault, gen=outcome
                )
            return await self._unary(
                request, record, sim_request, behaviour=behaviour, fault=fault, gen=outcome
            )
        finally:
            outcome.close()

    def _reject(self, record: RequestRecord, rejection: Rejection) -> web.Response:
        record.status = rejection.status
        record.finished_at = self._clock()
        return web.json_response(
            rejection.body, status=rejection.status, headers=dict(rejection.headers)
        )

    async def _early_fault(
        self, request: web.Request, record: RequestRecord, fault: Fault
    ) -> web.StreamResponse | None:
        kind = fault.kind
        if kind == "refuse":  # arrived on a connection opened before the port closed
            self._cut(request, record)
            return web.Response(status=503)
        if kind == "hang_before_headers":
            await _hang()
        headers: dict[str, str] = {}
        if fault.retry_after_s is not None:
            headers["Retry-After"] = f"{max(1, round(fault.retry_after_s))}"
        if kind == "status" and fault.body_bytes:
            return await self._padded_error(request, record, fault, headers)
        if kind == "status":
            body = error_body(
                fault.message, "server_error" if fault.status >= 500 else "invalid_request_error"
            )
            return self._reject(record, Rejection(fault.status, body, headers))
        if kind == "rate_limited":
            retry = fault.retry_after_s if fault.retry_after_s is not None else 1.0
            headers["Retry-After"] = f"{max(1, round(retry))}"
            headers.update(
                {
                    "x-ratelimit-limit-requests": "60",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": f"{retry:g}s",
                    "x-ratelimit-limit-tokens": "100000",
                    "x-ratelimit-remaining-tokens": "0",
                    "x-ratelimit-reset-tokens": f"{retry:g}s",
                }
            )
            body = error_body(
                f"Rate limit reached (simulated). Please try again in {retry:g}s.",
                "requests",
                "rate_limit_exceeded",
            )
            return self._reject(record, Rejection(429, body, headers))
        return None

    async def _padded_error(
        self, request: web.Request, record: RequestRecord, fault: Fault, headers: dict[str, str]
    ) -> web.StreamResponse:
        record.status = fault.status
        response = web.StreamResponse(
            status=fault.status, headers={**headers, "Content-Type": "application/json"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):  # the client may stop reading early
            for chunk in padded_error_chunks(fault.message, fault.body_bytes):
                await response.write(chunk)
            await response.write_eof()
        record.finished_at = self._clock()
        return response

    def _cut(self, request: web.Request, record: RequestRecord, reset: bool = False) -> None:
        """Close the connection from the server's side (not a client cancellation)."""
        record.finished_at = self._clock()
        transport = request.transport
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.close()

    async def _stream(
        self,
        request: web.Request,
        record: RequestRecord,
        sim: SimRequest,
        *,
        behaviour: Behaviour,
        fault: Fault,
        gen: Generation,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **gen.headers,
            }
        )
        record.status = 200
        await response.prepare(request)
        if fault.kind == "reset_after_headers":
            self._cut(request, record, reset=True)
            return response
        if fault.kind == "malformed":
            await response.write(MALFORMED_FRAME)
            await response.write(DONE)
            record.finished_at = self._clock()
            return response
        encoder = self._encoder(record, sim, behaviour.reply)
        await response.write(encoder.role())
        if fault.kind == "hang_before_first_token":
            await _hang()
        n = gen.n_tokens
        stop_at = n
        if fault.kind in ("die_after", "error_event_after"):
            stop_at = min(n, fault.after_tokens)
        for i in range(stop_at):
            await gen.next_token()
            if fault.kind == "trickle" and i > 0:
                await asyncio.sleep(fault.trickle_s)
            await response.write(encoder.content(i))
            if i == 0:
                record.first_token_at = self._clock()
            record.tokens_sent = i + 1
        if fault.kind == "die_after":
            self._cut(request, record)
            return response
        if fault.kind == "error_event_after":
            await response.write(encoder.error_event(fault.message))
        else:
            reason = _finish_reason(sim, behaviour, n)
            await response.write(encoder.finish(reason))
            if sim.include_usage:
                await response.write(encoder.usage(sim.prompt_tokens, n))
            if isinstance(encoder, Encoder):
                self._store_chat(sim, encoder.full(n, reason, sim.prompt_tokens))
        if encoder.done:
            await response.write(encoder.done)
        await response.write_eof()
        record.finished_at = self._clock()
        return response

    async def _before_a_unary_answer(
        self, request: web.Request, record: RequestRecord, fault: Fault
    ) -> web.StreamResponse | None:
        """The faults that strike before a unary answer: a hang, or a reset after the
        headers (returned: the response to end on)."""
        if fault.kind == "hang_before_first_token":
            await _hang()
        if fault.kind == "reset_after_headers":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            self._cut(request, record, reset=True)
            return response
        return None

    async def _unary(
        self,
        request: web.Request,
        record: RequestRecord,
        sim: SimRequest,
        *,
        behaviour: Behaviour,
        fault: Fault,
        gen: Generation,
    ) -> web.StreamResponse:
        cut = await self._before_a_unary_answer(request, record, fault)
        if cut is not None:
            return cut
        n = gen.n_tokens
        for i in range(n):
            await gen.next_token()
            if fault.kind == "trickle" and i > 0:
                await asyncio.sleep(fault.trickle_s)
            if i == 0:
                record.first_token_at = self._clock()
        record.tokens_sent = n
        if fault.kind == "die_after":
            self._cut(request, record)
            return web.Response(status=500)
        if fault.kind == "error_event_after":
            return self._reject(record, Rejection(500, error_body(fault.message)))
        record.status = 200
        record.finished_at = self._clock()
        if fault.kind == "malformed":
            return web.Response(body=MALFORMED_FRAME, content_type="application/json")
        body = self._encoder(record, sim).full(
            n, _finish_reason(sim, behaviour, n), sim.prompt_tokens
        )
        self._store_chat(sim, body)
        return web.json_response(body, headers=dict(gen.headers))

    def _store_chat(self, sim: SimRequest, completion: dict[str, Any]) -> None:
        """A chat completion asked to be stored (`store: true`) is kept."""
        if sim.endpoint == "chat" and sim.body.get("store") is True:
            self.chats.put(completion, sim.body)

    def _encoder(
        self, record: RequestRecord, sim: SimRequest, reply: str | None = None
    ) -> Encoder | ResponsesEncoder:
        """`reply`: the chat answer's words (a Responses answer is numbered tokens)."""
        if sim.endpoint == "responses":
            return ResponsesEncoder(record.id, sim, self.stored)
        return Encoder(record.id, sim.endpoint, sim.model, reply)

    async def _embed(
        self,
        request: web.Request,
        *,
        record: RequestRecord,
        sim: SimRequest,
        behaviour: Behaviour,
        fault: Fault,
        gen: Generation,
    ) -> web.StreamResponse:
        """One embeddings answer, ready after the first-token wait (faults as unary)."""
        cut = await self._before_a_unary_answer(request, record, fault)
        if cut is not None:
            return cut
        await gen.next_token()
        record.first_token_at = self._clock()
        if fault.kind == "die_after":
            self._cut(request, record)
            return web.Response(status=500)
        if fault.kind == "error_event_after":
            return self._reject(record, Rejection(500, error_body(fault.message)))
        try:
            body = (
                MALFORMED_FRAME
                if fault.kind == "malformed"
                else self._embedder.body(sim, behaviour.embedding_dims)
            )
        except InvalidRequest as exc:
            return self._reject(
                record, Rejection(400, error_body(str(exc), "invalid_request_error"))
            )
        record.status = 200
        record.finished_at = self._clock()
        return web.Response(body=body, content_type="application/json", headers=dict(gen.headers))


def _finish_reason(sim: SimRequest, behaviour: Behaviour, n: int) -> FinishReason:
    truncated = sim.max_tokens is not None and sim.max_tokens <= n < behaviour.tokens
    return "length" if truncated else "stop"
