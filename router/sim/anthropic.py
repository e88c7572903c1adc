"""A local server speaking Anthropic's Messages API, for tests and benchmarks.

`POST /v1/messages`, streaming (SSE with `event:` lines exactly as Anthropic sends
them) and not. The answer is deterministic: `tokens` output tokens "t0 t1 t2 ...",
the first after `ttft_s`, then one every `itl_s`. Every answer carries Anthropic's
rate-limit headers (`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`,
reset in RFC 3339) and a `request-id`.

Timing and faults come from the shared `router.sim.behaviour.Behaviour`, so the
same `Fault` values and `x-sim-fault` header drive this server and the OpenAI one.
Here they look like Anthropic:

    status (400/401/403/404/413/429/500/529/...)  {"type":"error","error":{"type":...}}
                             with the Anthropic error type for that status
                             (`rate_limit_error`, `overloaded_error`, `api_error`, ...)
    rate_limited             429 `rate_limit_error`, Retry-After, remaining 0
    hang_before_headers      nothing is ever sent
    hang_before_first_token  200, message_start, content_block_start, ping, then nothing
    die_after                N text deltas, then the connection is cut
    error_event_after        N text deltas, then `event: error` and the end of the body
    malformed                200 and a first frame that is not JSON
    trickle                  every token `trickle_s` apart
    reset_after_headers      200 and headers, then the connection is cut
    refuse                   not supported here (close the server instead)

Each request is recorded (`AnthropicSim.requests`): its JSON body, its headers
with `x-api-key` and `authorization` redacted, when it arrived and, if the client
went away before the answer was complete, when that was noticed (`cancelled_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from router.clock import Clock
from router.sim.anthropic_wire import (
    Answer,
    closing,
    count_input_tokens,
    error_body,
    error_event,
    message,
    opening,
    text_delta,
)
from router.sim.behaviour import (
    FAULT_HEADER,
    ITL_HEADER,
    TTFT_HEADER,
    Behaviour,
    Fault,
    FaultSyntaxError,
)

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server saw it. Secrets in headers are already redacted."""

    body: Any
    headers: dict[str, str]
    received_at: float
    #: when the server noticed the client had gone before the answer was complete
    cancelled_at: float | None = None
    completed_at: float | None = None
    #: content tokens written before the end (or the cancel)
    tokens_sent: int = 0
    status: int = 200
    #: set once the request completed or was cancelled
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


@dataclass(slots=True)
class _Limits:
    requests: int = 1000
    tokens: int = 400_000
    window_s: float = 60.0
    used_requests: int = 0
    used_tokens: int = 0


class AnthropicSim:
    """`async with AnthropicSim() as sim:` serves on `sim.base_url` (127.0.0.1, any port)."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        api_key: str | None = None,
        clock: Clock = time.monotonic,
        requests_limit: int = 1000,
        tokens_limit: int = 400_000,
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        #: when set, requests must carry it in `x-api-key` (401 otherwise); never recorded
        self._api_key = api_key
        self._clock = clock
        self._limits = _Limits(requests=requests_limit, tokens=tokens_limit)
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._serial = 0

    def __repr__(self) -> str:
        return f"AnthropicSim(base_url={self.base_url!r})"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        # Cancel the handler when the client disconnects, so a cancel is seen at once
        # even while the handler sleeps between tokens.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AnthropicSim:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_cancelled(self, record: RecordedRequest, timeout_s: float = 2.0) -> float | None:
        """`cancelled_at` of `record` once it is set, or None after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.ended.wait(), timeout_s)
        return record.cancelled_at

    # -- the endpoint --------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(
            body=None,
            headers={
                k.lower(): (REDACTED if k.lower() in _SECRET_HEADERS else v)
                for k, v in request.headers.items()
            },
            received_at=self._clock(),
        )
        self.requests.append(record)
        try:
            return await self._answer(request, record)
        except (asyncio.CancelledError, ConnectionResetError):
            if record.completed_at is None:
                record.cancelled_at = self._clock()
            raise
        finally:
            if record.completed_at is None and record.cancelled_at is None:
                record.completed_at = self._clock()
            record.ended.set()

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return self._error(record, 400, "request body is not JSON")
        record.body = body
        if self._api_key is not None and request.headers.get("x-api-key") != self._api_key:
            return self._error(record, 401, "invalid x-api-key")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(record, 400, "messages: field required")
        if not isinstance(body.get("max_tokens"), int):
            return self._error(record, 400, "max_tokens: field required")
        try:
            behaviour = self._behaviour_for(request)
        except FaultSyntaxError as exc:
            return self._error(record, 400, str(exc))
        fault = behaviour.fault

        if fault.kind == "hang_before_headers":
            await asyncio.Event().wait()
        if fault.kind == "status":
            return self._error(record, fault.status, fault.message, fault.retry_after_s)
        if fault.kind == "rate_limited":
            retry = fault.retry_after_s if fault.retry_after_s is not None else 1.0
            return self._error(
                record,
                429,
                "Number of request tokens has exceeded your per-minute rate limit",
                retry,
                exhausted=True,
            )

        n_out = min(behaviour.tokens, body["max_tokens"])
        answer = Answer(
            model=str(body.get("model", "claude-sim")),
            input_tokens=count_input_tokens(body),
            output_tokens=n_out,
            stop_reason="max_tokens" if n_out < behaviour.tokens else "end_turn",
            message_id=f"msg_sim{self._serial:06d}",
            texts=[f"t{i}" if i == 0 else f" t{i}" for i in range(n_out)],
        )
        self._limits.used_requests += 1
        self._limits.used_tokens += answer.input_tokens + answer.output_tokens
        if body.get("stream") is True:
            return await self._stream(request, record, behaviour, answer)
        return await self._json(record, behaviour, answer)

    def _behaviour_for(self, request: web.Request) -> Behaviour:
        b = self.behaviour
        if FAULT_HEADER in request.headers:
            b = Behaviour(b.ttft_s, b.itl_s, b.tokens, Fault.parse(request.headers[FAULT_HEADER]))
        if TTFT_HEADER in request.headers:
            b = Behaviour(float(request.headers[TTFT_HEADER]) / 1000, b.itl_s, b.tokens, b.fault)
        if ITL_HEADER in request.headers:
            b = Behaviour(b.ttft_s, float(request.headers[ITL_HEADER]) / 1000, b.tokens, b.fault)
        return b

    def _headers(self, *, exhausted: bool = False) -> dict[str, str]:
        self._serial += 1
        reset = (
            (datetime.now(UTC) + timedelta(seconds=self._limits.window_s))
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )
        lim = self._limits
        out = {"request-id": f"req_sim{self._serial:06d}"}
        for kind, limit, used in (
            ("requests", lim.requests, lim.used_requests),
            ("tokens", lim.tokens, lim.used_tokens),
        ):
            remaining = 0 if exhausted else max(0, limit - used)
            out[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            out[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            out[f"anthropic-ratelimit-{kind}-reset"] = reset
        return out

    def _error(
        self,
        record: RecordedRequest,
        status: int,
        message: str,
        retry_after_s: float | None = None,
        *,
        exhausted: bool = False,
    ) -> web.Response:
        headers = self._headers(exhausted=exhausted or status == 429)
        if retry_after_s is not None:
            headers["retry-after"] = f"{retry_after_s:g}"
        record.status = status
        record.completed_at = self._clock()
        return web.Response(
            status=status,
            body=error_body(status, message),
            content_type="application/json",
            headers=headers,
        )

    async def _json(self, record: RecordedRequest, b: Behaviour, a: Answer) -> web.Response:
        await asyncio.sleep(b.ttft_s + max(0, a.output_tokens - 1) * self._gap(b))
        record.tokens_sent = a.output_tokens
        record.completed_at = self._clock()
        return web.json_response(message(a), headers=self._headers())

    @staticmethod
    def _gap(b: Behaviour) -> float:
        return b.fault.trickle_s if b.fault.kind == "trickle" else b.itl_s

    async def _stream(
        self, request: web.Request, record: RecordedRequest, b: Behaviour, a: Answer
    ) -> web.StreamResponse:
        fault = b.fault
        resp = web.StreamResponse(
            headers={
                **self._headers(),
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
            }
        )
        await resp.prepare(request)
        transport = request.transport
        if fault.kind == "reset_after_headers":
            return self._cut(resp, transport, record)
        if fault.kind == "malformed":
            await resp.write(b"event: message_start\ndata: {not json\n\n")
            return await self._finish(resp, record)
        await resp.write(opening(a))
        if fault.kind == "hang_before_first_token":
            await asyncio.Event().wait()
        await asyncio.sleep(b.ttft_s)
        gap = self._gap(b)
        cut = fault.kind in ("die_after", "error_event_after")
        stop_after = fault.after_tokens if cut else None
        for i, text in enumerate(a.texts):
            if stop_after is not None and i >= stop_after:
                break
            if i:
                await asyncio.sleep(gap)
            await resp.write(text_delta(text))
            record.tokens_sent = i + 1
        if fault.kind == "die_after":
            return self._cut(resp, transport, record)
        if fault.kind == "error_event_after":
            await resp.write(error_event(fault.message))
            return await self._finish(resp, record)
        await resp.write(closing(a))
        return await self._finish(resp, record)

    async def _finish(
        self, resp: web.StreamResponse, record: RecordedRequest
    ) -> web.StreamResponse:
        await resp.write_eof()
        record.completed_at = self._clock()
        return resp

    def _cut(
        self,
        resp: web.StreamResponse,
        transport: asyncio.BaseTransport | None,
        record: RecordedRequest,
    ) -> web.StreamResponse:
        record.completed_at = self._clock()
        if transport is not None:
            with contextlib.suppress(OSError):
                transport.abort()  # type: ignore[attr-defined]
        return resp
