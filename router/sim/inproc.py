"""A simulated server's backend as an `Upstream`, called in-process: no socket, no HTTP.

The routing benchmark on unseen fleets (`benchmarks/fleets.py`) runs the router,
its fleet and the load in one process on a virtual clock (`router.sim.virtual`),
where a socket would never wake the loop. `InProcessUpstream` gives the router the
same `Upstream` seam its HTTP client does: `send` hands the parsed request to a
`router.sim.backend.Backend` (a vLLM-like engine, a hosted-like API), raises
`UpstreamStatusError` for its rejections (a 429 with its `Retry-After` and
`x-ratelimit-*` headers, a 400), and streams OpenAI SSE bytes framed by the same
`router.sim.wire.Encoder` the HTTP servers use. `aclose` before the end is a
cancel: the generation is closed (an engine drops the sequence at once).

`latency_s` delays the stream by a fixed network latency (the first token, and so
everything after it). After the first token, tokens are sent `chunk_tokens` at a
time (8: well inside the router's stall detector, which trips at 20 times a
target's time per token): the router sees the same first token and the same end,
for far less work per simulated turn.

Every attempt is noted in an `AttemptRecord` passed to `on_attempt` when it ends,
for the benchmark's accounting (cost of hedge losers, causes of misses).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from router.clock import Clock
from router.errors import UpstreamStatusError
from router.sim.backend import Backend, Generation, Rejection
from router.sim.behaviour import Behaviour
from router.sim.wire import DONE, Encoder, InvalidRequest, SimRequest, error_body, parse_request
from router.upstream.base import UpstreamRequest
from router.upstream.openai import retry_after_s


@dataclass(slots=True)
class AttemptRecord:
    """One request a simulated target saw, as the benchmark accounts for it."""

    target: str
    #: the request's `x-sim-draw-key` header (the benchmark's turn id), if any
    key: str | None
    started_at: float
    status: int = 200
    prompt_tokens: int = 0
    first_token_at: float | None = None
    ended_at: float | None = None
    tokens_sent: int = 0
    cancelled: bool = False


class InProcessResponse:
    """The streamed answer of one admitted request."""

    status = 200

    def __init__(
        self,
        upstream: InProcessUpstream,
        sim: SimRequest,
        gen: Generation,
        record: AttemptRecord,
        request_id: str,
    ) -> None:
        self._upstream = upstream
        self._sim = sim
        self._gen = gen
        self._record = record
        self._encoder = Encoder(request_id, sim.endpoint, sim.model)
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in gen.headers.items()}
        self._closed = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        gen, enc, record, up = self._gen, self._encoder, self._record, self._upstream
        n = gen.n_tokens
        await gen.next_token()
        if up.latency_s > 0:
            await asyncio.sleep(up.latency_s)
        record.first_token_at = up.clock()
        record.tokens_sent = 1
        yield enc.role() + enc.content(0)
        i = 1
        while i < n:
            got = await gen.next_tokens(min(up.chunk_tokens, n - i))
            record.tokens_sent = i + got
            yield b"".join(enc.content(j) for j in range(i, i + got))
            i += got
        tail = enc.finish("stop")
        if self._sim.include_usage:
            tail += enc.usage(self._sim.prompt_tokens, n)
        self._finish(cancelled=False)
        yield tail + DONE

    async def aread(self) -> bytes:
        chunks = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(chunks)

    async def aclose(self) -> None:
        self._finish(cancelled=True)

    async def finish(self) -> None:
        """The answer is over (`[DONE]` read): nothing to hand back in process."""
        self._finish(cancelled=False)

    def _finish(self, *, cancelled: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._gen.close()
        self._record.cancelled = cancelled
        self._record.ended_at = self._upstream.clock()
        self._upstream.ended(self._record)


class InProcessUpstream:
    """`router.upstream.base.Upstream` over a simulator backend, in this process."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        *,
        clock: Clock,
        behaviour: Behaviour | None = None,
        latency_s: float = 0.0,
        chunk_tokens: int = 8,
        on_attempt: Callable[[AttemptRecord], None] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.clock = clock
        self.behaviour = behaviour or Behaviour()
        self.latency_s = latency_s
        self.chunk_tokens = chunk_tokens
        self._on_attempt = on_attempt
        self._ids = itertools.count(1)

    async def send(self, request: UpstreamRequest) -> InProcessResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = AttemptRecord(self.name, headers.get("x-sim-draw-key"), self.clock())
        try:
            sim = parse_request(request.endpoint, dict(request.body), None)
        except InvalidRequest as exc:
            self._reject(record, Rejection(400, error_body(str(exc), "invalid_request_error")))
        record.prompt_tokens = sim.prompt_tokens
        outcome = self.backend.begin(sim, self.behaviour, headers)
        if isinstance(outcome, Rejection):
            self._reject(record, outcome)
        return InProcessResponse(self, sim, outcome, record, f"chatcmpl-inproc{next(self._ids)}")

    def _reject(self, record: AttemptRecord, rejection: Rejection) -> NoReturn:
        record.status = rejection.status
        record.ended_at = self.clock()
        self.ended(record)
        headers = {k.lower(): v for k, v in rejection.headers.items()}
        body = json.dumps(rejection.body).encode()
        raise UpstreamStatusError(
            f"{self.name}: upstream answered {rejection.status}",
            target=self.name,
            upstream_status=rejection.status,
            body=body,
            # read as the router's HTTP client reads it (Retry-After, whole seconds)
            retry_after_s=retry_after_s(headers, body, wall_now=0.0),
            headers=headers,
        )

    def ended(self, record: AttemptRecord) -> None:
        if self._on_attempt is not None:
            self._on_attempt(record)

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
