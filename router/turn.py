"""One turn: plan -> attempt / hedge / fall back -> commit -> relay -> record.

The commit point: nothing reaches the client until a target has produced its first
content token (or tool-call delta, or a finished empty answer). Before it, any
failure moves the turn to the next target of the plan and a late first token
starts the next one as a hedge; the first to produce a token wins and every other
attempt's connection is closed at once. After it, bytes are relayed as they
arrive, and a failure ends the stream with an OpenAI-style error event.

The turn is the only place that knows policy, signals and upstreams together.
It never sees ASGI: it writes to a `Sink`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from router import sse
from router.config import RouteConfig, TargetConfig
from router.errors import (
    AllTargetsFailed,
    TargetUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.hedge import HedgeBudget, hedge_delay_s
from router.metrics import Metrics
from router.policy.base import Plan, RoutingRequest, TargetView
from router.signals.target import Attempt, TargetSignals
from router.upstream.base import Endpoint, Upstream, UpstreamRequest, UpstreamResponse
from router.upstream.openai import client_body

log = logging.getLogger("firsttoken.turn")

Header = tuple[bytes, bytes]


class Sink(Protocol):
    """Where a turn writes its answer (the server's ASGI `send`, in practice)."""

    async def start(self, status: int, headers: Sequence[Header]) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TargetRuntime:
    config: TargetConfig
    upstream: Upstream
    signals: TargetSignals


@dataclass(frozen=True, slots=True)
class TurnRequest:
    endpoint: Endpoint
    body: Mapping[str, Any]
    stream: bool
    #: the client asked for the usage chunk itself
    client_wants_usage: bool
    routing: RoutingRequest
    #: request headers passed upstream (request id)
    forward_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Primed:
    """An attempt that reached its commit point and now owns an open response."""

    target: TargetRuntime
    attempt: Attempt
    response: UpstreamResponse
    chunks: AsyncIterator[bytes] | None
    #: bytes to send first: every event up to and including the first content
    head: bytes
    #: bytes after the head that do not yet form a complete event
    rest: bytes
    started_at: float
    first_token_at: float
    usage: dict[str, Any] | None = None

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.response.aclose()


@dataclass(slots=True)
class TurnResult:
    """What happened, for logs, headers and metrics."""

    route: str
    target: str | None = None
    attempts: int = 0
    outcome: str = "error"
    hedged: bool = False
    fell_back: bool = False
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    reason: str = ""
    failures: list[UpstreamError] = field(default_factory=list)


class _Race:
    """The attempts of one turn racing to the first token.

    One attempt runs at first. A retryable failure with nothing else running starts
    the next target (fall back); a hedge delay passing with no first token starts
    the next target beside the running ones (hedge), within `max_extra` and the
    route's budget. The first attempt to prime wins; the task group's cancellation
    closes every other one.
    """

    def __init__(
        self,
        turn: Turn,
        request: TurnRequest,
        order: Sequence[TargetRuntime],
        tg: TaskGroup,
        send: MemoryObjectSendStream[Primed | UpstreamError],
    ) -> None:
        self._turn = turn
        self._request = request
        self._order = order
        self._tg = tg
        self._send = send
        self._launched = 0
        self._running = 0
        self._extra = 0

    def _launch(self, kind: str) -> bool:
        turn = self._turn
        if self._launched >= len(self._order):
            return False
        runtime = self._order[self._launched]
        route = turn._route.name
        if kind == "fallback":
            last = turn.result.failures[-1]
            turn._metrics.fell_back(route, last.target, runtime.config.name, last.cause)
            turn.result.fell_back = True
        elif kind == "hedge":
            turn._metrics.hedge(route, "started")
            turn.result.hedged = True
            self._extra += 1
        self._launched += 1
        self._running += 1
        turn.result.attempts += 1
        self._tg.start_soon(turn._prime, runtime, self._request, self._send.clone())
        return True

    def _hedge_delay(self) -> float:
        hedge = self._turn._route.hedge
        if hedge is None or self._extra >= hedge.max_extra or self._launched >= len(self._order):
            return math.inf
        latest = self._order[self._launched - 1].config.name
        return hedge_delay_s(hedge, self._turn._views[latest])

    async def run(
        self, receive: MemoryObjectReceiveStream[Primed | UpstreamError]
    ) -> Primed | None:
        turn = self._turn
        self._launch("first")
        while self._running:
            with anyio.move_on_after(self._hedge_delay()):
                outcome = await receive.receive()
                self._running -= 1
                if isinstance(outcome, Primed):
                    for _ in range(self._running):
                        turn._metrics.hedge(turn._route.name, "cancelled")
                    self._tg.cancel_scope.cancel()
                    return outcome
                turn.result.failures.append(outcome)
                turn._metrics.attempt_failed(turn._route.name, outcome)
                if not outcome.retryable:  # the request itself is bad: no other target helps
                    self._tg.cancel_scope.cancel()
                    return None
                if self._running == 0:
                    self._launch("fallback")
                continue
            # The hedge delay passed with no first token: start the next target too.
            if not (turn._budget.try_spend() and self._launch("hedge")):
                self._extra = len(self._order)  # budget spent: no more hedges this turn
        return None


class Turn:
    """Runs one request against a plan. Made per request by the app."""

    def __init__(
        self,
        *,
        route: RouteConfig,
        plan: Plan,
        views: Mapping[str, TargetView],
        targets: Mapping[str, TargetRuntime],
        budget: HedgeBudget,
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self._route = route
        self._plan = plan
        self._views = views
        self._targets = targets
        self._budget = budget
        self._metrics = metrics
        self._clock = clock
        self.result = TurnResult(route=route.name, reason=plan.reason)
        self._prompt_estimate = 0

    # -- racing to the first token -----------------------------------------------------

    async def _prime(
        self,
        runtime: TargetRuntime,
        request: TurnRequest,
        out: MemoryObjectSendStream[Primed | UpstreamError],
    ) -> None:
        with out:
            await self._attempt(runtime, request, out)

    async def _attempt(
        self,
        runtime: TargetRuntime,
        request: TurnRequest,
        out: MemoryObjectSendStream[Primed | UpstreamError],
    ) -> None:
        cfg = runtime.config
        attempt = runtime.signals.begin(request.routing.prompt_tokens)
        if not attempt.admitted:
            # Its breaker opened (or its half-open probe was taken) since the plan was made.
            attempt.release()
            out.send_nowait(TargetUnavailable(f"{cfg.name}: breaker open", target=cfg.name))
            return
        started = self._clock()
        response: UpstreamResponse | None = None
        handed_over = False
        deadline = cfg.timeouts.first_token_s
        if not request.stream:
            deadline = cfg.timeouts.total_s or (cfg.timeouts.first_token_s + cfg.timeouts.idle_s)
        try:
            body = client_body(request.body, cfg.model, request.stream)
            upstream_request = UpstreamRequest(
                request.endpoint, body, request.stream, dict(request.forward_headers)
            )
            with anyio.fail_after(deadline):
                response = await runtime.upstream.send(upstream_request)
                attempt.headers(response.headers)
                if request.stream:
                    primed = await self._read_to_first_token(runtime, attempt, response, started)
                else:
                    primed = await self._read_whole(runtime, attempt, response, started)
            if request.stream:  # a unary answer's latency is not a time to first token
                attempt.first_token()
            out.send_nowait(primed)
            handed_over = True
        except TimeoutError:
            err = UpstreamTimeout(
                f"{cfg.name}: no first token within {deadline:g}s", target=cfg.name
            )
            attempt.failed(err)
            out.send_nowait(err)
        except UpstreamError as err:
            err.target = err.target or cfg.name
            attempt.failed(err)
            out.send_nowait(err)
        except anyio.get_cancelled_exc_class():
            attempt.cancelled()
            raise
        finally:
            if not handed_over:
                attempt.release()
                if response is not None:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()

    async def _read_to_first_token(
        self, runtime: TargetRuntime, attempt: Attempt, response: UpstreamResponse, started: float
    ) -> Primed:
        name = runtime.config.name
        chunks = response.aiter_bytes()
        head: list[bytes] = []
        buffer = b""
        async for chunk in chunks:
            events, buffer = sse.split_events(buffer + chunk)
            for i, event in enumerate(events):
                try:
                    frame, parsed = sse.classify(event)
                except sse.MalformedFrame as exc:
                    raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
                if frame is sse.Frame.ERROR:
                    raise UpstreamStatusError(
                        f"{name}: error event before the first token",
                        target=name,
                        upstream_status=502,
                        body=json.dumps(parsed).encode(),
                    )
                if frame is sse.Frame.DONE:
                    raise UpstreamProtocolError(
                        f"{name}: stream ended before any token", target=name
                    )
                head.append(event)
                if frame in (sse.Frame.CONTENT, sse.Frame.FINISH):
                    rest = b"".join(events[i + 1 :]) + buffer
                    return Primed(
                        runtime,
                        attempt,
                        response,
                        chunks,
                        b"".join(head),
                        rest,
                        started,
                        self._clock(),
                    )
        raise UpstreamProtocolError(f"{name}: stream closed before the first token", target=name)

    async def _read_whole(
        self, runtime: TargetRuntime, attempt: Attempt, response: UpstreamResponse, started: float
    ) -> Primed:
        name = runtime.config.name
        body = await response.aread()
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise UpstreamProtocolError(f"{name}: response is not JSON", target=name) from exc
        if not isinstance(parsed, dict) or "choices" not in parsed:
            raise UpstreamProtocolError(f"{name}: response has no choices", target=name)
        usage = parsed.get("usage")
        return Primed(
            runtime,
            attempt,
            response,
            None,
            body,
            b"",
            started,
            self._clock(),
            usage=usage if isinstance(usage, dict) else None,
        )

    async def _race(self, request: TurnRequest) -> Primed:
        """Attempts in plan order; a failure falls back, a late first token hedges."""
        order = [self._targets[name] for name in self._plan.order]
        send, receive = anyio.create_memory_object_stream[Primed | UpstreamError](len(order))
        with send, receive:
            async with anyio.create_task_group() as tg:
                race = _Race(self, request, order, tg, send)
                winner = await race.run(receive)
            # A second attempt may have primed in the same instant: close it.
            while True:
                try:
                    late = receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if isinstance(late, Primed):
                    late.attempt.cancelled()
                    late.attempt.release()
                    await late.aclose()
        if winner is None:
            raise AllTargetsFailed(self._failure_message(), self.result.failures)
        if self.result.hedged:
            hedge_won = winner.target.config.name != order[0].config.name
            self._metrics.hedge(self._route.name, "won" if hedge_won else "lost")
        return winner

    def _failure_message(self) -> str:
        failures = self.result.failures
        if not failures:
            return f"route '{self._route.name}': no attempt could be made"
        parts = "; ".join(f.message for f in failures)
        return f"route '{self._route.name}': all {len(failures)} attempts failed ({parts})"

    # -- after the commit point ---------------------------------------------------------

    def headers(self, primed: Primed, content_type: bytes) -> list[Header]:
        reason = self._plan.reason
        if self.result.fell_back:
            reason += "; fell back"
        if self.result.hedged:
            reason += "; hedged"
        pred = next((c for c in self._plan.candidates if c.name == primed.target.config.name), None)
        if pred is not None:
            reason += (
                f"; winner pred {pred.predicted_ttft_s * 1000:.0f}ms ${pred.expected_cost_usd:.6f}"
            )
        self.result.reason = reason
        safe = reason.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
        return [
            (b"content-type", content_type),
            (b"cache-control", b"no-cache"),
            (b"x-firsttoken-target", primed.target.config.name.encode("ascii", "replace")),
            (b"x-firsttoken-attempts", str(self.result.attempts).encode()),
            (b"x-firsttoken-reason", safe[:512]),
        ]

    async def run(self, request: TurnRequest, sink: Sink) -> TurnResult:
        """Race, commit, relay. Raises AllTargetsFailed before the commit point."""
        self._budget.record_turn()
        self._prompt_estimate = request.routing.prompt_tokens
        primed = await self._race(request)
        result = self.result
        result.target = primed.target.config.name
        if request.stream:  # a unary answer has no first token of its own
            result.ttft_s = primed.first_token_at - primed.started_at
        if result.hedged and result.target != self._plan.order[0]:
            result.outcome = "hedged_won"
        elif result.hedged:
            result.outcome = "hedged_lost"
        else:
            result.outcome = "fell_back" if result.fell_back else "ok"
        try:
            if request.stream:
                await sink.start(200, self.headers(primed, b"text/event-stream"))
                await sink.write(primed.head)
                self._metrics.overhead_observed(
                    "first_token_relay", self._clock() - primed.first_token_at
                )
                await self._relay(primed, request, sink)
            else:
                await sink.start(200, self.headers(primed, b"application/json"))
                await sink.write(primed.head)
                self._account(primed, primed.usage, estimated_completion=0)
                primed.attempt.finished(result.prompt_tokens, result.completion_tokens)
            await sink.finish()
        except anyio.get_cancelled_exc_class():
            result.outcome = "client_cancelled"
            primed.attempt.cancelled()
            raise
        finally:
            primed.attempt.release()
            await primed.aclose()
        return result

    async def _relay(self, primed: Primed, request: TurnRequest, sink: Sink) -> None:
        assert primed.chunks is not None
        name = primed.target.config.name
        keep_usage = request.client_wants_usage
        events_seen = 1
        buffer = primed.rest
        done = False
        total_s = primed.target.config.timeouts.total_s
        # One deadline for the whole stream (a single cancel scope, not one per chunk).
        remaining = math.inf if total_s is None else primed.started_at + total_s - self._clock()
        try:
            with anyio.move_on_after(remaining) as deadline:
                while not done:
                    cut = buffer.rfind(b"\n\n")
                    if cut >= 0:
                        block, buffer = buffer[: cut + 2], buffer[cut + 2 :]
                        done, events_seen = await self._forward(
                            primed, block, keep_usage, sink, events_seen
                        )
                        continue
                    chunk = await anext(primed.chunks, None)
                    if chunk is None:
                        break
                    buffer += chunk
                    if b"\r" in chunk:  # a CRLF-framed upstream: normalise (rare)
                        buffer = buffer.replace(b"\r\n", b"\n")
        except UpstreamError as err:
            await self._interrupted(primed, sink, err, events_seen)
            return
        if deadline.cancelled_caught:
            late = UpstreamTimeout(
                f"{name}: stream exceeded total_s={total_s:g}s", target=name, phase="total"
            )
            await self._interrupted(primed, sink, late, events_seen)
            return
        if not done:
            cut_short = UpstreamProtocolError(f"{name}: stream ended without [DONE]", target=name)
            await self._interrupted(primed, sink, cut_short, events_seen)
            return
        self._account(primed, primed.usage, estimated_completion=events_seen)
        primed.attempt.finished(self.result.prompt_tokens, self.result.completion_tokens)

    async def _forward(
        self, primed: Primed, block: bytes, keep_usage: bool, sink: Sink, events_seen: int
    ) -> tuple[bool, int]:
        """Write one block of complete events; act on the rare ones. Returns (done, count)."""
        found = sse.scan(block)
        events_seen += block.count(b"data:")
        if found.has_usage:
            kept = []
            for event in sse.split_events(block)[0]:
                usage, usage_only = sse.usage_of(event)
                if usage is not None:
                    primed.usage = usage
                    if usage_only and not keep_usage:
                        events_seen -= 1
                        continue
                kept.append(event)
            block = b"".join(kept)
        if found.has_error:
            name = primed.target.config.name
            err = UpstreamProtocolError(f"{name}: error event mid-stream", target=name)
            primed.attempt.failed(err)
            self._metrics.attempt_failed(self._route.name, err)
            self.result.failures.append(err)
            self.result.outcome = "error"
        if block:
            await sink.write(block)
        return found.has_done or found.has_error, events_seen

    async def _interrupted(
        self, primed: Primed, sink: Sink, err: UpstreamError, events: int
    ) -> None:
        """After the commit point a failure cannot be hidden: say so, end cleanly."""
        log.warning("turn on route %s: %s after the first token", self._route.name, err.message)
        primed.attempt.failed(err)
        self._metrics.attempt_failed(self._route.name, err)
        self.result.outcome = "error"
        self.result.failures.append(err)
        self._account(primed, primed.usage, estimated_completion=events)
        await sink.write(sse.error_event(f"the upstream stream was interrupted: {err.message}"))

    def _account(
        self, primed: Primed, usage: Mapping[str, Any] | None, estimated_completion: int
    ) -> None:
        result = self.result
        prompt = completion = None
        if usage is not None:
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        result.prompt_tokens = prompt if isinstance(prompt, int) else self._prompt_estimate
        result.completion_tokens = (
            completion if isinstance(completion, int) else estimated_completion
        )
        price = primed.target.config.price
        result.cost_usd = price.cost(result.prompt_tokens, result.completion_tokens)
