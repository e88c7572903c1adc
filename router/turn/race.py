"""Before the commit point: the attempts of one turn racing to the first token.

One attempt runs at first. A retryable failure with nothing else running starts the
next target of the plan (fall back, charged to the route's budget); a hedge delay
passing with no first token starts the fastest remaining target beside the running
ones (hedge), within the route's `max_extra` and budget. The delay is counted from
the start of the latest attempt (see `hedge.hedge_delay_s`). The first attempt to
produce a token the user sees (content, reasoning, a refusal, audio, a tool or
function call delta, or a finished empty answer) wins; cancelling the task group
closes every other attempt's connection at once, so the upstreams see the cancel.

A bad request ends the race only when no other attempt runs (a hedge's 400 never
cancels a primary). Unary turns are hedged only with `hedge.unary`, bounded by
`total_s` and never feed the TTFT estimators. Before the commit point each SSE event
is parsed as JSON: a malformed frame, or one past `upstream.max_event_bytes`, fails over.
How an event reads (chat chunks, Responses events) is the request's `Dialect`.

Just over 400 lines: the race and the two reads an attempt makes up to its commit
point share the attempt's state; the reads' endpoint-specific parts are in
`dialect.py` and `responses_wire.py`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from router.clock import Clock
from router.config import RouteConfig
from router.errors import (
    AllTargetsFailed,
    TargetUnavailable,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.policy.base import TargetView
from router.policy.predict import DEFAULT_QUANTILE, predict_ttft_s
from router.signals.attempt import Attempt
from router.turn import sse
from router.turn.dialect import Dialect
from router.turn.events import TurnEvents
from router.turn.hedge import HedgeBudget, hedge_delay_s
from router.turn.types import Primed, TargetRuntime, TurnRequest, TurnResult
from router.upstream.base import UpstreamRequest, UpstreamResponse

#: how an attempt starts: the plan's first, a fallback after a failure, or a hedge
AttemptKind = Literal["first", "fallback", "hedge"]


class Outbox(Protocol):
    """Where an attempt leaves its outcome: a memory stream when racing, a slot when not."""

    def send_nowait(self, item: Primed | UpstreamError, /) -> None: ...


@dataclass(slots=True)
class _Slot:
    outcome: Primed | UpstreamError | None = None

    def send_nowait(self, item: Primed | UpstreamError, /) -> None:
        self.outcome = item


class Race:
    """Runs the attempts of one turn until one primes or all fail."""

    def __init__(
        self,
        *,
        route: RouteConfig,
        order: Sequence[TargetRuntime],
        views: Mapping[str, TargetView],
        budget: HedgeBudget,
        events: TurnEvents,
        clock: Clock,
        result: TurnResult,
        max_event_bytes: int = 1024 * 1024,
    ) -> None:
        self._route = route
        self._max_event = max_event_bytes
        #: a failure that says the request is bad (not retried elsewhere)
        self._bad_request = False
        self._order = list(order)
        self._views = views
        self._budget = budget
        self._events = events
        self._clock = clock
        self._result = result
        self._launched = 0
        self._running = 0
        self._extra = 0
        #: when the turn's first attempt started, and when the next hedge is due
        self._started_at: float | None = None
        self._hedge_at = math.inf

    async def run(self, request: TurnRequest) -> Primed:
        """The winner, or AllTargetsFailed."""
        hedge = self._route.hedge
        if hedge is None or not (request.stream or hedge.unary):
            winner = await self._one_by_one(request)
        else:
            winner = await self._hedged(request)
        if winner is None:
            raise AllTargetsFailed(self._failure_message(), self._result.failures)
        if self._result.hedged:
            hedge_won = winner.target.config.name != self._order[0].config.name
            self._events.hedge(self._route.name, "won" if hedge_won else "lost")
        return winner

    async def _one_by_one(self, request: TurnRequest) -> Primed | None:
        """Without hedging only one attempt runs at a time: run it in this task (no
        task group, stream or extra task per turn: the common case is the cheap one)."""
        kind: AttemptKind = "first"
        while (runtime := self._next(kind)) is not None:
            slot = _Slot()
            await self._attempt(runtime, request, slot)
            self._running -= 1
            if isinstance(slot.outcome, Primed):
                return slot.outcome
            assert slot.outcome is not None
            if not self._failed(slot.outcome):
                return None
            kind = "fallback"
        return None

    async def _hedged(self, request: TurnRequest) -> Primed | None:
        send, receive = anyio.create_memory_object_stream[Primed | UpstreamError](len(self._order))
        with send, receive:
            async with anyio.create_task_group() as tg:
                winner = await self._race(request, tg, send, receive)
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
        return winner

    def _failure_message(self) -> str:
        failures = self._result.failures
        if not failures:
            return f"route '{self._route.name}': no attempt could be made"
        parts = "; ".join(f.message for f in failures)
        return f"route '{self._route.name}': all {len(failures)} attempts failed ({parts})"

    async def _race(
        self,
        request: TurnRequest,
        tg: TaskGroup,
        send: MemoryObjectSendStream[Primed | UpstreamError],
        receive: MemoryObjectReceiveStream[Primed | UpstreamError],
    ) -> Primed | None:
        self._launch("first", request, tg, send)
        while self._running:
            with anyio.move_on_after(max(self._hedge_at - self._clock(), 0.0)):
                outcome = await receive.receive()
                self._running -= 1
                if isinstance(outcome, Primed):
                    for _ in range(self._running):
                        self._events.hedge(self._route.name, "cancelled")
                    tg.cancel_scope.cancel()
                    return outcome
                if not self._failed(outcome):
                    # The request is bad as far as this target can tell; an attempt
                    # still running may yet answer it (a hedge's 400 must not cancel it).
                    self._bad_request = True
                    self._hedge_at = math.inf
                if self._running == 0 and not self._bad_request:
                    self._launch("fallback", request, tg, send)
                continue
            # The hedge delay passed with no first token: start the next target too.
            if self._bad_request or not (
                self._budget.try_spend() and self._launch("hedge", request, tg, send)
            ):
                self._extra = len(self._order)  # budget spent: no more hedges this turn
                self._hedge_at = math.inf
        return None

    def _failed(self, err: UpstreamError) -> bool:
        """Book a failed attempt; whether another target may still serve the turn."""
        self._result.failures.append(err)
        self._events.attempt_failed(self._route.name, err)
        return err.retryable  # not retryable: the request itself is bad

    def _launch(
        self,
        kind: AttemptKind,
        request: TurnRequest,
        tg: TaskGroup,
        send: MemoryObjectSendStream[Primed | UpstreamError],
    ) -> bool:
        runtime = self._next(kind)
        if runtime is None:
            return False
        tg.start_soon(self._prime, runtime, request, send.clone())
        return True

    def _next(self, kind: AttemptKind) -> TargetRuntime | None:
        """The next target of the plan, with the books kept for how it starts.

        A fallback takes the plan's order (the policy's choice: cheapest within the
        SLO, say) and is charged to the budget. A hedge is a bet on speed, so it
        takes the remaining target with the lowest predicted TTFT at the SLO's
        quantile: for a cost-ordered plan the next in line is often the twin
        engine queued by the same burst, and a target with a heavy tail is a poor
        insurance against a tail."""
        if self._launched >= len(self._order):
            return None
        if kind == "hedge":
            backup = self._backup_index()
            self._order.insert(self._launched, self._order.pop(backup))
        runtime = self._order[self._launched]
        route, result = self._route.name, self._result
        if kind == "fallback":
            last = result.failures[-1]
            self._events.fell_back(route, last.target, runtime.config.name, last.cause)
            self._budget.charge()
            result.fell_back = True
        elif kind == "hedge":
            self._events.hedge(route, "started")
            result.hedged = True
            self._extra += 1
        self._launched += 1
        self._running += 1
        result.attempts += 1
        self._schedule_hedge()
        return runtime

    def _predicted(self, runtime: TargetRuntime) -> float:
        slo = self._route.slo
        q = slo.quantile if slo is not None else DEFAULT_QUANTILE
        return predict_ttft_s(self._views[runtime.config.name], q)

    def _backup_index(self) -> int:
        """Where in the plan the target a hedge would start is: the fastest remaining."""
        rest = range(self._launched, len(self._order))
        return min(rest, key=lambda i: self._predicted(self._order[i]))

    def _schedule_hedge(self) -> None:
        """Set when the next hedge is due, counted from the attempt just launched."""
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        hedge = self._route.hedge
        if hedge is None or self._extra >= hedge.max_extra or self._launched >= len(self._order):
            self._hedge_at = math.inf
            return
        latest = self._views[self._order[self._launched - 1].config.name]
        backup = self._views[self._order[self._backup_index()].config.name]
        delay = hedge_delay_s(hedge, latest, backup, self._route.slo, now - self._started_at)
        self._hedge_at = now + delay

    # -- one attempt ---------------------------------------------------------------------

    async def _prime(
        self,
        runtime: TargetRuntime,
        request: TurnRequest,
        out: MemoryObjectSendStream[Primed | UpstreamError],
    ) -> None:
        with out:
            await self._attempt(runtime, request, out)

    async def _attempt(self, runtime: TargetRuntime, request: TurnRequest, out: Outbox) -> None:
        cfg = runtime.config
        # Everything the router does before the send happens before the target's clock
        # starts: the router's own work is never charged to a target.
        upstream_request = UpstreamRequest(
            request.endpoint,
            request.body.for_target(cfg.model),
            request.stream,
            dict(request.forward_headers),
        )
        # A unary answer's latency is a whole generation, not a time to first token.
        attempt = runtime.signals.begin(request.routing.prompt_tokens, measures_ttft=request.stream)
        if not attempt.admitted:
            # Its breaker opened (or its half-open probe was taken) since the plan was made.
            attempt.release()
            out.send_nowait(TargetUnavailable(f"{cfg.name}: breaker open", target=cfg.name))
            return
        started = self._clock()
        response: UpstreamResponse | None = None
        handed_over = False
        deadline = self._route.first_token_s or cfg.timeouts.first_token_s
        if not request.stream:
            deadline = cfg.timeouts.total_s
        try:
            with anyio.fail_after(deadline):
                response = await runtime.upstream.send(upstream_request)
                attempt.headers(response.headers)
                read = self._read_to_first_token if request.stream else self._read_whole
                primed = await read(runtime, attempt, response, started, request.dialect)
            if request.stream:
                attempt.first_token(answer=primed.first_kind in ("answer", "finish"))
            out.send_nowait(primed)
            handed_over = True
        except TimeoutError:
            what = "no first token" if request.stream else "no whole answer"
            err = UpstreamTimeout(
                f"{cfg.name}: {what} within {deadline:g}s",
                target=cfg.name,
                phase="first_token" if request.stream else "total",
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
        self,
        runtime: TargetRuntime,
        attempt: Attempt,
        response: UpstreamResponse,
        started: float,
        dialect: Dialect,
    ) -> Primed:
        name = runtime.config.name
        chunks = response.aiter_bytes()
        framer = sse.Framer(self._max_event)
        head: list[bytes] = []
        response_id = None
        async for chunk in chunks:
            try:
                block = framer.feed(chunk)
            except sse.EventTooLarge as exc:
                raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
            if not block:
                continue
            events = sse.split_events(block)
            for i, event in enumerate(events):
                try:
                    frame, kind, parsed = dialect.classify(event)
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
                if parsed is not None and response_id is None:
                    response_id = dialect.response_id(parsed)
                if frame in (sse.Frame.TOKEN, sse.Frame.FINISH):
                    rest = b"".join(events[i + 1 :])
                    if rest:  # complete events after the first token: keep them first
                        framer = sse.Framer(self._max_event, rest + framer.pending)
                    return Primed(
                        runtime,
                        attempt,
                        response,
                        chunks,
                        b"".join(head),
                        framer,
                        started,
                        self._clock(),
                        first_kind=kind,
                        response_id=response_id,
                    )
        raise UpstreamProtocolError(f"{name}: stream closed before the first token", target=name)

    async def _read_whole(
        self,
        runtime: TargetRuntime,
        attempt: Attempt,
        response: UpstreamResponse,
        started: float,
        dialect: Dialect,
    ) -> Primed:
        name = runtime.config.name
        body = await response.aread()
        try:
            whole = dialect.whole(name, body)
        except sse.MalformedFrame as exc:
            raise UpstreamProtocolError(f"{name}: {exc}", target=name) from exc
        return Primed(
            runtime,
            attempt,
            response,
            None,
            body,
            None,
            started,
            self._clock(),
            usage=whole.usage,
            response_id=whole.response_id,
        )
