"""One turn: plan -> attempt / hedge / fall back -> commit -> relay -> record.

The commit point: nothing reaches the client until a target has produced the first
token the user sees: content, reasoning, a refusal, audio, a tool or function call
delta, or a finished empty answer. Before it, any failure moves the turn to the next
target of the plan and a late first token starts the next one as a hedge; the first
to produce a token wins and every other attempt's connection is closed at once.
After it, bytes are relayed as they arrive (framed per the SSE spec, each event
bounded), and a failure ends the stream with an OpenAI-style error event. A stream
that committed on reasoning is watched (a bytes search) for its first answer token,
so both figures are reported. A stream that ended at `[DONE]` hands its connection
back to the pool.

The turn is the only place that knows policy, signals and upstreams together; the
race to the first token lives in `race.py`, the relay after it here (its pace guard
in `pace.py`). It never sees ASGI (it writes to a `Sink`) and never imports
Prometheus (it reports to `TurnEvents`, as things happen and once at its end).

Past 400 lines: the commit, the relay after it and the turn's accounting read and
write one result and one primed attempt; split, each part would reach into the
others' fields.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import anyio

from router.clock import Clock
from router.config import RouteConfig
from router.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from router.policy.base import Plan, TargetView
from router.turn import sse
from router.turn.dialect import CHAT, Dialect
from router.turn.events import TurnEvents
from router.turn.hedge import HedgeBudget
from router.turn.model_name import ModelRename
from router.turn.pace import PaceGuard
from router.turn.race import Race
from router.turn.scopes import Deadlines
from router.turn.sink import FirstByteClock, Header, Sink
from router.turn.types import Primed, TargetRuntime, TurnRequest, TurnResult

log = logging.getLogger("firsttoken.turn")

EVENT_STREAM = b"text/event-stream"


def _ms(seconds: float) -> str:
    """Seconds as whole milliseconds, as `f"{ms:.0f}"` writes them (half to even), for
    a third of its cost; an infinite or NaN prediction as that formats it."""
    ms = seconds * 1000
    return str(round(ms)) if -1e15 < ms < 1e15 else f"{ms:.0f}"


class Turn:
    """Runs one request against a plan. Made per request by the runtime.

    `arrived` is when the request reached the router (on `clock`): the turn reports
    its time to first token and duration as the client sees them, from there.
    """

    def __init__(
        self,
        *,
        route: RouteConfig,
        plan: Plan,
        views: Mapping[str, TargetView],
        targets: Mapping[str, TargetRuntime],
        budget: HedgeBudget,
        events: TurnEvents,
        clock: Clock,
        arrived: float,
        max_event_bytes: int = 1024 * 1024,
        deadlines: Deadlines | None = None,
    ) -> None:
        self._route = route
        self._deadlines = deadlines  # the attempts' (the router's, for all its turns)
        self._max_event = max_event_bytes
        self._plan = plan
        self._views = views
        self._targets = targets
        self._budget = budget
        self._events = events
        self._clock = clock
        self._arrived = arrived
        self.result = TurnResult(route=route.name, reason=plan.reason)
        self._prompt_estimate = 0
        self._rename: ModelRename | None = None  # response_model: route
        self._dialect: Dialect = CHAT
        self._streamed = True  # the request's `stream`, known once `_run` starts
        #: an error event came mid-stream (the relay then ends with the stream)
        self._errored = False
        #: SSE events relayed so far (the relay's loop leaves its count here)
        self._events_seen = 1

    # -- after the commit point ---------------------------------------------------------

    def headers(self, primed: Primed, content_type: bytes) -> list[Header]:
        """The answer's headers: the explanation (`x-firsttoken-reason`) is built here,
        once per turn, in one f-string per part (float formatting is most of its cost)."""
        result = self.result
        name = primed.target.config.name
        reason = self._plan.reason
        if result.fell_back:
            reason += "; fell back"
        if result.hedged:
            reason += "; hedged"
        elif result.hedge_capped:
            reason += "; hedge held back by max_cost_share"
        for c in self._plan.candidates:
            if c.name == name:
                reason += f"; winner pred {_ms(c.predicted_ttft_s)}ms ${c.expected_cost_usd:.6f}"
                break
        kind = primed.first_kind
        if kind is not None:
            ms = _ms(primed.first_token_at - self._arrived)
            answered = (
                f"first answer {ms}ms" if kind in ("answer", "finish") else "first answer pending"
            )
            reason += f"; first token ({kind}) {ms}ms, {answered}"
        self.result.reason = reason
        safe = reason.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
        headers = [
            (b"content-type", content_type),
            (b"x-firsttoken-target", name.encode("ascii", "replace")),
            (b"x-firsttoken-attempts", str(result.attempts).encode()),
            (b"x-firsttoken-reason", safe[:512]),
        ]
        if content_type == EVENT_STREAM:  # a unary answer is not an event stream
            headers.insert(1, (b"cache-control", b"no-cache"))
        return headers

    async def run(self, request: TurnRequest, sink: Sink) -> TurnResult:
        """Race, commit, relay, record. Raises AllTargetsFailed before the commit point."""
        timed = FirstByteClock(sink, self._clock)  # TTFT as the client sees it
        cancelled = False
        try:
            return await self._run(request, timed)
        except anyio.get_cancelled_exc_class():
            cancelled = True
            raise
        finally:
            self._record(timed.started_at, cancelled=cancelled)

    def _record(self, started_at: float | None, *, cancelled: bool) -> None:
        r = self.result
        if r.target is None:
            self._events.turn_unanswered(r.route, cancelled=cancelled)
            return
        self._events.turn_done(
            r.route,
            r.target,
            r.outcome,
            ttft_s=None if started_at is None else started_at - self._arrived,
            first_answer_s=r.first_answer_s,
            duration_s=self._clock() - self._arrived,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            cost_usd=r.cost_usd,
            cached_tokens=r.cached_tokens,
            reasoning_tokens=r.reasoning_tokens,
            streamed=self._streamed,
        )

    def _costs(self) -> dict[str, float] | None:
        """The plan's expected cost per target, when the route caps hedges' spend."""
        if self._budget.spend is None:
            return None
        return {c.name: c.expected_cost_usd for c in self._plan.candidates}

    async def _run(self, request: TurnRequest, sink: Sink) -> TurnResult:
        self._budget.record_turn()
        self._prompt_estimate = request.routing.prompt_tokens
        self._dialect = request.dialect
        self._streamed = request.stream
        order = [self._targets[name] for name in self._plan.order]
        race = Race(
            route=self._route,
            order=order,
            views=self._views,
            budget=self._budget,
            events=self._events,
            clock=self._clock,
            result=self.result,
            max_event_bytes=self._max_event,
            deadlines=self._deadlines,
            costs=self._costs(),
        )
        if not race.hedges(request):
            return await self._commit(request, await race.run(request), sink)

        # The attempts race in a group that outlives the commit: the winner commits
        # and relays in its own task the moment it primes (no hand-over to this one),
        # and the losers close beside it. asyncio's group: anyio's exit costs a cancel
        # scope and a checkpoint even when nothing was spawned (8 us against 0.75).
        async def commit(primed: Primed) -> TurnResult:
            return await self._commit(request, primed, sink)

        failure: Exception | None = None
        async with asyncio.TaskGroup() as tg:
            try:
                await race.run(request, tg, commit)
            except Exception as exc:  # raised as itself (not in a group) once they close
                failure = exc
        failure = failure or race.commit_error
        if failure is not None:
            try:
                raise failure
            finally:
                failure = None  # no cycle through this frame (it holds the request)
        return self.result

    async def _commit(self, request: TurnRequest, primed: Primed, sink: Sink) -> TurnResult:
        """Write the winner's head at once, then relay the rest and book the turn."""
        result = self.result
        result.target = primed.target.config.name
        result.response_id = primed.response_id
        if request.on_commit is not None:
            request.on_commit(result.target, primed.response_id)
        if request.stream:  # a unary answer has no first token of its own
            result.ttft_s = primed.first_token_at - primed.started_at
            result.first_kind = primed.first_kind
            if primed.first_kind in ("answer", "finish"):
                result.first_answer_s = primed.first_token_at - self._arrived
        if result.hedged and result.target != self._plan.order[0]:
            result.outcome = "hedged_won"
        elif result.hedged:
            result.outcome = "hedged_lost"
        else:
            result.outcome = "fell_back" if result.fell_back else "ok"
        if self._route.response_model == "route":
            self._rename = ModelRename.learn(primed.head, self._route.name)
        head = self._rename(primed.head) if self._rename else primed.head
        try:
            if request.stream:
                try:
                    await sink.start(200, self.headers(primed, EVENT_STREAM))
                    await sink.write(head)
                finally:  # the sample after the write: its bookkeeping is not in the TTFT
                    primed.attempt.first_token(
                        answer=primed.first_kind in ("answer", "finish"), at=primed.first_token_at
                    )
                self._events.overhead_observed(
                    "first_token_relay", self._clock() - primed.first_token_at
                )
                last = await self._relay(primed, request, sink)
            else:
                # Its length, so the server writes the body as it is (not re-framed
                # chunked, a copy and a write more: embeddings answers are large).
                length = (b"content-length", str(len(head)).encode())
                await sink.start(200, [*self.headers(primed, b"application/json"), length])
                self._account(primed, primed.usage, estimated_completion=0)
                primed.attempt.finished(result.prompt_tokens, result.completion_tokens)
                last = head
            # The last bytes go with the response's end: one write (and one ASGI
            # message) rather than two.
            await sink.finish(last)
        except anyio.get_cancelled_exc_class():
            result.outcome = "client_cancelled"
            primed.attempt.cancelled()
            raise
        finally:
            primed.attempt.release()
            await primed.aclose()
        return result

    async def _relay(self, primed: Primed, request: TurnRequest, sink: Sink) -> bytes:
        """Relay the stream after its head; return the block that ended it (at its end
        marker), unwritten, for the response's end to carry."""
        name = primed.target.config.name
        try:
            last, done = await self._pump(primed, request, sink)
        except UpstreamError as err:
            await self._interrupted(primed, sink, err, self._events_seen)
            return b""
        except sse.EventTooLarge as exc:
            too_large = UpstreamProtocolError(f"{name}: {exc}", target=name)
            await self._interrupted(primed, sink, too_large, self._events_seen)
            return b""
        await self._ended(primed, sink, done, self._events_seen)
        return last

    async def _pump(self, primed: Primed, request: TurnRequest, sink: Sink) -> tuple[bytes, bool]:
        """The relay's loop: each block of complete events to the client as it comes.
        Returns the block that ended the stream and whether it held the end marker; the
        events seen so far are in `_events_seen`, also when it raises."""
        assert primed.chunks is not None and primed.framer is not None
        config = primed.target.config
        dialect = self._dialect
        events_seen = 1
        answered = primed.first_kind in ("answer", "finish")
        done, last = False, b""
        guard = PaceGuard.for_target(config, self._views.get(config.name))
        # The whole stream's deadline, checked at each chunk (a cancel scope costs more
        # than a turn's chunks do); a silent upstream meets its idle timeout first.
        deadline_at = primed.started_at + config.timeouts.total_s
        # Per chunk: no coroutine besides the read and the write, and `__anext__` rather
        # than `anext(chunks, None)` (no wrapper per chunk); a block with no marker in it
        # (most of them) costs a bytes count and the dialect's searches, nothing more.
        read, framer, write = primed.chunks.__anext__, primed.framer, sink.write
        scan, clock = dialect.scan, self._clock
        try:
            block = framer.feed(b"")  # complete events that came with the first token
            while True:
                if block:
                    answer_at = None  # the first answer after reasoning: booked after its write
                    if not answered and dialect.first_answer_in(block):
                        answered = True
                        answer_at = clock()
                    events_seen += block.count(b"data:")
                    found = scan(block)
                    if found is not sse.NOTHING:  # usage, an error or the end: act on it
                        if answer_at is not None:  # before an error event fails the attempt
                            self._first_answer(primed, answer_at)
                        block, done, events_seen = self._act(
                            primed, block, found, request.client_wants_usage, events_seen
                        )
                    if done:
                        last = self._rename(block) if self._rename and block else block
                        break
                    try:
                        if block:
                            await write(self._rename(block) if self._rename else block)
                    finally:  # (booking twice is harmless: the attempt books once)
                        if answer_at is not None:
                            self._first_answer(primed, answer_at)
                asked = clock() if guard is not None else 0.0
                try:
                    chunk = await read()
                except StopAsyncIteration:
                    break
                now = clock()
                if now > deadline_at:
                    total_s, name = config.timeouts.total_s, config.name
                    raise UpstreamTimeout(
                        f"{name}: stream exceeded total_s={total_s:g}s", target=name, phase="total"
                    )
                # the guard only when this wait was slow or the last ones were
                if (
                    guard is not None
                    and (guard.slow or now - asked > guard.max_wait_s)
                    and guard.observe(now - asked)
                ):
                    self._degraded(primed, now - asked)
                block = framer.feed(chunk)
        finally:
            self._events_seen = events_seen
        return last, done

    async def _ended(self, primed: Primed, sink: Sink, done: bool, events_seen: int) -> None:
        """The upstream's stream ended (at its end marker if `done`): book the turn."""
        if not done and not self._errored:
            name = primed.target.config.name
            cut_short = UpstreamProtocolError(
                f"{name}: stream ended without {self._dialect.end_marker}", target=name
            )
            await self._interrupted(primed, sink, cut_short, events_seen)
            return
        if self.result.outcome != "error":
            primed.ended = True  # at [DONE]: the connection may serve the next turn
        self._account(primed, primed.usage, estimated_completion=events_seen)
        primed.attempt.finished(self.result.prompt_tokens, self.result.completion_tokens)

    def _first_answer(self, primed: Primed, at: float) -> None:
        """The first answer token after reasoning (or a refusal, or audio) came at `at`
        (booked once it is on its way to the client, as the first token is)."""
        primed.attempt.first_answer(at=at)
        self.result.first_answer_s = at - self._arrived

    def _act(
        self, primed: Primed, block: bytes, found: sse.Scan, keep_usage: bool, events_seen: int
    ) -> tuple[bytes, bool, int]:
        """One block of complete events that holds a marker (`found`): act on it. Returns
        what to write, whether the stream is done, and the events seen so far."""
        dialect = self._dialect
        if found.has_usage:
            kept = []
            for event in sse.split_events(block):
                usage, usage_only = dialect.usage_of(event)
                if usage is not None:
                    primed.usage = usage
                    if usage_only and not keep_usage:
                        events_seen -= 1
                        continue
                kept.append(event)
            block = b"".join(kept)
        if found.has_error and not self._errored:
            self._errored = True
            name = primed.target.config.name
            err = UpstreamProtocolError(f"{name}: error event mid-stream", target=name)
            primed.attempt.failed(err)
            self._events.attempt_failed(self._route.name, err)
            self.result.failures.append(err)
            self.result.outcome = "error"
        return block, found.has_done or (found.has_error and dialect.error_ends), events_seen

    def _degraded(self, primed: Primed, waited_s: float) -> None:
        name = primed.target.config.name
        log.warning("target %s slowed to %.0f ms between tokens mid-stream", name, waited_s * 1000)
        primed.target.signals.degraded(waited_s)
        self._events.stream_degraded(self._route.name, name)

    async def _interrupted(
        self, primed: Primed, sink: Sink, err: UpstreamError, events: int
    ) -> None:
        """After the commit point a failure cannot be hidden: say so, end cleanly."""
        log.warning("turn on route %s: %s after the first token", self._route.name, err.message)
        primed.attempt.failed(err)
        self._events.attempt_failed(self._route.name, err)
        self.result.outcome = "error"
        self.result.failures.append(err)
        self._account(primed, primed.usage, estimated_completion=events)
        message = f"the upstream stream was interrupted: {err.message}"
        sequence = primed.head.count(b"data:") + events - 1  # Responses number their events
        await sink.write(self._dialect.interrupted(message, primed.head, sequence))

    def _account(
        self, primed: Primed, usage: Mapping[str, Any] | None, estimated_completion: int
    ) -> None:
        result = self.result
        tokens = self._dialect.tokens(usage) if usage is not None else None
        prompt = tokens.prompt if tokens else None
        completion = tokens.completion if tokens else None
        result.prompt_tokens = prompt if prompt is not None else self._prompt_estimate
        result.completion_tokens = completion if completion is not None else estimated_completion
        result.cached_tokens = tokens.cached if tokens else 0
        result.reasoning_tokens = tokens.reasoning if tokens else 0
        price = primed.target.config.price
        result.cost_usd = price.cost(
            result.prompt_tokens, result.completion_tokens, result.cached_tokens
        )
