"""Fakes for unit tests of a turn: scripted upstreams, a recording sink and a
recorder of the events a turn reports (no Prometheus registry, no sockets)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from router.clock import Clock
from router.config import Config, RouteConfig, parse_config
from router.errors import Cause, UpstreamConnectError, UpstreamError, UpstreamStatusError
from router.policy.base import Candidate, Plan, RoutingRequest
from router.signals.registry import SignalsRegistry
from router.turn.events import TurnEvents
from router.turn.hedge import HedgeBudget
from router.turn.race import Race
from router.turn.relay import Turn
from router.turn.sink import Header
from router.turn.types import TargetRuntime, TurnRequest, TurnResult
from router.upstream.base import UpstreamRequest
from router.upstream.body import ClientBody
from router.upstream.rejections import rejection_reason
from router.vocabulary import HedgeEvent, Outcome, OverheadPhase

CONFIG = """
targets:
  - name: a
    kind: openai
    base_url: http://a.test/v1
    model: model-a
    price: {input_per_mtok: 1.0, output_per_mtok: 2.0}
    timeouts: {first_token_s: 2.0}
  - name: b
    kind: openai
    base_url: http://b.test/v1
    model: model-b
    price: {input_per_mtok: 3.0, output_per_mtok: 4.0}
    timeouts: {first_token_s: 2.0}
routes:
  - {name: chat, targets: [a, b], policy: {type: ordered}}
  - name: hedged
    targets: [a, b]
    policy: {type: ordered}
    hedge: {after_ms: 20, max_extra: 1, max_rate: 1.0}
  - name: hedged-capped
    targets: [a, b]
    policy: {type: ordered}
    hedge: {after_ms: 20, max_extra: 1, max_rate: 1.0, max_cost_share: 0.5}
  - name: hedged-unary
    targets: [a, b]
    policy: {type: ordered}
    hedge: {after_ms: 20, max_extra: 1, max_rate: 1.0, unary: true}
  - name: reasoning
    targets: [a, b]
    policy: {type: ordered}
    first_token_s: 0.05
"""


@dataclass
class Reply:
    """What one call to a fake target does, in order: wait for `gate` (if any), hang
    before the headers (if `hang`), answer `status` (non-2xx raises as an upstream
    would), then yield `chunks` and end as `then` says."""

    chunks: Sequence[bytes] = ()
    status: int = 200
    body: bytes = b""
    then: Literal["end", "hang", "reset"] = "end"
    hang: bool = False
    gate: anyio.Event | None = None
    #: called with a chunk's index just before it is yielded (to move a fake clock)
    before_chunk: Callable[[int], None] | None = None
    #: chunk index -> an event to wait for before yielding that chunk
    holds: Mapping[int, anyio.Event] = field(default_factory=dict)
    #: awaited when the router closes the response (a slow close, to see who waits)
    on_close: Callable[[], Awaitable[None]] | None = None


class FakeResponse:
    """An `UpstreamResponse` that yields a script's chunks."""

    def __init__(self, name: str, reply: Reply) -> None:
        self._name = name
        self._reply = reply
        self.status = reply.status
        self.headers: Mapping[str, str] = {}
        self.closed = False
        self.finished = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        reply = self._reply
        for i, data in enumerate(reply.chunks):
            if i in reply.holds:
                await reply.holds[i].wait()
            if reply.before_chunk is not None:
                reply.before_chunk(i)
            yield data
        if reply.then == "hang":
            await anyio.sleep_forever()
        if reply.then == "reset":
            raise UpstreamConnectError(f"{self._name}: connection reset", target=self._name)

    async def aread(self) -> bytes:
        return self._reply.body

    async def aclose(self) -> None:
        if self._reply.on_close is not None:
            await self._reply.on_close()
        self.closed = True

    async def finish(self) -> None:
        self.finished = True
        self.closed = True


class FakeUpstream:
    """An `Upstream` whose calls follow `replies` in order (the last one repeats)."""

    def __init__(self, name: str, *replies: Reply) -> None:
        self.name = name
        self._replies = list(replies) or [Reply()]
        self.requests: list[UpstreamRequest] = []
        self.responses: list[FakeResponse] = []
        #: calls cancelled before their headers (a hedge loser, a client gone)
        self.cancelled = 0
        #: set by the first call
        self.called = anyio.Event()

    async def send(self, request: UpstreamRequest) -> FakeResponse:
        self.requests.append(request)
        self.called.set()
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        try:
            if reply.gate is not None:
                await reply.gate.wait()
            if reply.hang:
                await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        if reply.status >= 300:
            raise UpstreamStatusError(
                f"{self.name}: upstream answered {reply.status}",
                target=self.name,
                upstream_status=reply.status,
                body=reply.body,
                rejection=rejection_reason(reply.status, reply.body),
            )
        response = FakeResponse(self.name, reply)
        self.responses.append(response)
        return response

    async def warm_up(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class ManualClock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Done:
    """One `turn_done` as reported."""

    target: str
    outcome: Outcome
    ttft_s: float | None
    first_answer_s: float | None
    duration_s: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    streamed: bool = True


@dataclass
class RecordingEvents:
    """A `TurnEvents` that writes down what a turn reported, in order."""

    seen: list[tuple[Any, ...]] = field(default_factory=list)
    done: list[Done] = field(default_factory=list)

    def attempt_failed(self, route: str, err: UpstreamError) -> None:
        self.seen.append(("attempt_failed", err.target, err.cause))

    def fell_back(self, route: str, from_target: str, to_target: str, cause: Cause) -> None:
        self.seen.append(("fell_back", from_target, to_target, cause))

    def fallback_skipped(self, route: str, target: str) -> None:
        self.seen.append(("fallback_skipped", target))

    def hedge(self, route: str, event: HedgeEvent) -> None:
        self.seen.append(("hedge", event))

    def overhead_observed(self, phase: OverheadPhase, seconds: float) -> None:
        self.seen.append(("overhead", phase))

    def stream_degraded(self, route: str, target: str) -> None:
        self.seen.append(("degraded", target))

    def turn_done(
        self,
        route: str,
        target: str,
        outcome: Outcome,
        *,
        ttft_s: float | None,
        first_answer_s: float | None = None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        streamed: bool = True,
    ) -> None:
        self.seen.append(("turn_done", target, outcome))
        self.done.append(
            Done(
                target,
                outcome,
                ttft_s,
                first_answer_s,
                duration_s,
                prompt_tokens,
                completion_tokens,
                cost_usd,
                cached_tokens,
                reasoning_tokens,
                streamed,
            )
        )

    def turn_unanswered(self, route: str, *, cancelled: bool) -> None:
        self.seen.append(("turn_unanswered", cancelled))

    def kinds(self, *names: str) -> list[tuple[Any, ...]]:
        return [e for e in self.seen if e[0] in names]


class RecordingSink:
    """A `Sink` that keeps what the client would have received."""

    def __init__(
        self,
        on_start: Callable[[], None] | None = None,
        on_write: Callable[[bytes], None] | None = None,
    ) -> None:
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.finished = False
        #: what came with the response's end (`finish(last)`)
        self.last: bytes | None = None
        self._on_start = on_start
        self._on_write = on_write

    async def start(self, status: int, headers: Sequence[Header]) -> None:
        self.status = status
        self.headers = dict(headers)
        if self._on_start is not None:
            self._on_start()

    async def write(self, data: bytes) -> None:
        assert self.status is not None, "a write before the response started"
        self.body += data
        if self._on_write is not None:
            self._on_write(data)

    async def finish(self, last: bytes = b"") -> None:
        self.last = last
        if last:
            await self.write(last)
        self.finished = True


class Rig:
    """Two targets `a` and `b` on fake upstreams, a route, and what a turn needs."""

    def __init__(
        self,
        a: FakeUpstream,
        b: FakeUpstream,
        *,
        route: str = "chat",
        clock: Clock = time.monotonic,
        config: str = CONFIG,
    ) -> None:
        self.config: Config = parse_config(config)
        found = self.config.route(route)
        assert found is not None
        self.route: RouteConfig = found
        self.upstreams = {"a": a, "b": b}
        self.clock = clock
        signals = SignalsRegistry(self.config, clock)
        self.targets = {
            t.name: TargetRuntime(t, self.upstreams[t.name], signals[t.name])
            for t in self.config.targets
        }
        self.views = {name: signals[name].view() for name in self.route.targets}
        self.plan = Plan(
            tuple(Candidate(n, 0.1, 0.0001, 1.0) for n in self.route.targets), "ordered: as listed"
        )
        self.budget = HedgeBudget.of(self.route.hedge)
        self.events = RecordingEvents()

    def race(self, result: TurnResult | None = None) -> Race:
        events: TurnEvents = self.events
        return Race(
            route=self.route,
            order=[self.targets[n] for n in self.plan.order],
            views=self.views,
            budget=self.budget,
            events=events,
            clock=self.clock,
            result=result or TurnResult(route=self.route.name),
            costs={c.name: c.expected_cost_usd for c in self.plan.candidates},
        )

    def turn(self, arrived: float = 0.0) -> Turn:
        return Turn(
            route=self.route,
            plan=self.plan,
            views=self.views,
            targets=self.targets,
            budget=self.budget,
            events=self.events,
            clock=self.clock,
            arrived=arrived,
        )

    def request(self, *, stream: bool = True, wants_usage: bool = False) -> TurnRequest:
        body: dict[str, Any] = {"model": self.route.name, "stream": stream, "messages": []}
        return TurnRequest(
            endpoint="chat",
            body=ClientBody.of(body, stream),
            stream=stream,
            client_wants_usage=wants_usage,
            routing=RoutingRequest(route=self.route.name, prompt_tokens=5, stream=stream),
            forward_headers={"x-request-id": "req-1"},
        )
