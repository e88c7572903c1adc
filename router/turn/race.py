"""Before the commit point: the attempts of one turn racing to the first token.

One attempt runs at first. A retryable failure with nothing else running starts the
next target of the plan (fall back, charged to the route's budget); a hedge delay
passing with no first token starts the fastest remaining target beside the running
ones (hedge), within the route's `max_extra` and budget. The delay is counted from
the start of the latest attempt (see `hedge.hedge_delay_s`), and set once that
attempt's request is written upstream (`Deadlines.after_send`). The first attempt to
produce a token the user sees (content, reasoning, a refusal, audio, a tool or
function call delta, or a finished empty answer) wins, and the turn commits in the
winner's own task at once; every other attempt is then cancelled (its connection
closed, so the upstream sees the cancel) in its own task, beside the winner's relay.
The first attempt and fallbacks run in the turn's task; only a hedge gets a task.

A streamed attempt on a vLLM target that waits in the engine's queue while another
target could answer sooner is moved there, once (`requeue.py`): a fallback whose
cause is `queued`, with the engine it left kept as the last resort.

A bad request ends the race only when no other attempt runs (a hedge's 400 never
cancels a primary). Unary turns are hedged only with `hedge.unary`, bounded by
`total_s` and never feed the TTFT estimators. Before the commit point each SSE event
is parsed as JSON: a malformed frame, or one past `upstream.max_event_bytes`, fails over.
How an event reads (chat chunks, Responses events, an embeddings body) is the
request's `Dialect` (see `prime.py`).

Past 400 lines: the race's state (launch order, running count, scopes, the hedge
timer, the queue watch) is shared by every path through it, and split across modules
each would reach into the others' fields.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal

import anyio

from router.clock import Clock
from router.config import RouteConfig
from router.errors import AllTargetsFailed, UpstreamError, UpstreamQueued
from router.policy.base import TargetView
from router.policy.predict import predict_ttft_s
from router.turn.events import TurnEvents
from router.turn.hedge import HedgeBudget, choose_backup, hedge_delay_s
from router.turn.prime import attempt_to_commit
from router.turn.requeue import QueueWatch, move_to, moves_queued, route_quantile
from router.turn.scopes import Deadlines, cancel_scope
from router.turn.types import Primed, TargetRuntime, TurnRequest, TurnResult

#: how an attempt starts: the plan's first, a fallback after a failure, or a hedge
AttemptKind = Literal["first", "fallback", "hedge"]
#: what a hedged turn does with its winner, in the winner's own task
Commit = Callable[[Primed], Awaitable[object]]


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
        deadlines: Deadlines | None = None,
        costs: Mapping[str, float] | None = None,
    ) -> None:
        self._route = route
        #: the route's hedge spend cap (`hedge.max_cost_share`), with the plan's expected
        #: cost per target to book against it; None when the route has no cap
        self._spend = budget.spend if costs is not None else None
        self._costs: Mapping[str, float] = costs or {}
        self._deadlines = deadlines if deadlines is not None else Deadlines()
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
        #: the cancel scopes of the attempts still running (anyio formats a task's repr
        #: on every cancel: only live ones are cancelled); over once a winner is out.
        #: A dict, in launch order: a set of scopes iterates by object id, so the order
        #: in which two losers were cancelled (and freed their engine slots) depended
        #: on the process's allocation history, not on the run
        self._scopes: dict[anyio.CancelScope, None] = {}
        self._over = False
        self._commit: Commit | None = None
        #: the turn streams (its first token has a deadline of its own)
        self._streamed = True
        #: fallbacks left out as doomed (`_drop_doomed`), for the failure's message
        self._skipped: list[str] = []
        #: (attempts launched, the backup's index then): `_backup_index`, memoised
        self._backup: tuple[int, int] | None = None
        #: a hedged race: where hedges run, the timer that starts the next, the winner
        self._tg: asyncio.TaskGroup | None = None
        self._request: TurnRequest | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._starter: asyncio.Task[None] | None = None
        self._winner: Primed | None = None
        #: set when the race's own task waits for running hedges
        self._wake: anyio.Event | None = None
        #: what `commit` raised (in a child task it would reach the caller in a group)
        self.commit_error: Exception | None = None
        #: the route moves queued turns (`requeue.py`), and the attempt it moved
        self._moves = moves_queued(route)
        self._moved: anyio.CancelScope | None = None

    def hedges(self, request: TurnRequest) -> bool:
        """Whether attempts of this turn may race (so `run` wants a task group)."""
        hedge = self._route.hedge
        return hedge is not None and (request.stream or hedge.unary)

    async def run(
        self,
        request: TurnRequest,
        tg: asyncio.TaskGroup | None = None,
        commit: Commit | None = None,
    ) -> Primed:
        """The winner, or AllTargetsFailed.

        A hedged turn's attempts run in `tg`, and the winner runs `commit` in its own
        task the moment it primes (its first bytes wait for no other task); the others
        are cancelled then and close in theirs, beside the winner's relay. Without
        `tg` the race has its own group and returns once the losers are closed."""
        self._commit = commit if tg is not None else None
        self._streamed = request.stream
        if not self.hedges(request):
            winner = await self._one_by_one(request)
        elif tg is None:
            async with asyncio.TaskGroup() as own:
                winner = await self._hedged(request, own)
        else:
            winner = await self._hedged(request, tg)
        if winner is None:
            raise AllTargetsFailed(self._failure_message(), self._result.failures)
        return winner

    def _decide(self, winner: Primed, others: int, keep: anyio.CancelScope | None) -> None:
        """The race is won: book it and cancel every other attempt (no waiting here)."""
        self._over = True  # from here an attempt that primes closes itself
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _ in range(others):
            self._events.hedge(self._route.name, "cancelled")
        for scope in self._scopes:
            if scope is not keep:
                scope.cancel()
        if self._result.hedged:
            hedge_won = winner.target.config.name != self._order[0].config.name
            self._events.hedge(self._route.name, "won" if hedge_won else "lost")

    async def _one_by_one(self, request: TurnRequest) -> Primed | None:
        """Without hedging only one attempt runs at a time: run it in this task (no
        task group, stream or extra task per turn: the common case is the cheap one)."""
        kind: AttemptKind = "first"
        while (runtime := self._next(kind)) is not None:
            if self._watches(runtime):
                outcome = await self._watched(runtime, request, cancel_scope())
            else:
                outcome = await self._attempt(runtime, request)
            assert outcome is not None  # no race to lose
            self._running -= 1
            if isinstance(outcome, Primed):
                return outcome
            if not self._failed(outcome):
                return None
            kind = "fallback"
        return None

    async def _hedged(self, request: TurnRequest, tg: asyncio.TaskGroup) -> Primed | None:
        """The first attempt, and each fallback, runs in this task; only a hedge gets a
        task of its own (in `tg`), started by a timer when its delay passes. A turn
        whose first attempt primes before that costs no task, stream or cancel scope
        beyond the attempt's own deadline."""
        self._tg, self._request = tg, request
        self._loop = asyncio.get_running_loop()
        try:
            kind: AttemptKind = "first"
            while (runtime := self._next(kind)) is not None:
                outcome = await self._inline(runtime, request)
                if outcome is not None and self._settle(outcome, None):
                    assert self._winner is not None
                    if self._commit is not None:
                        await self._commit(self._winner)
                    return self._winner
                while self._winner is None and self._running > 0:  # hedges still racing
                    self._wake = anyio.Event()
                    await self._wake.wait()
                if self._winner is not None or self._bad_request:
                    break
                kind = "fallback"
            return self._winner
        finally:
            self._over = True
            if self._timer is not None:
                self._timer.cancel()

    async def _inline(
        self, runtime: TargetRuntime, request: TurnRequest
    ) -> Primed | UpstreamError | None:
        """An attempt in this task: its outcome, or None if a hedge won meanwhile."""
        scope = cancel_scope()
        self._scopes[scope] = None
        if self._watches(runtime):
            outcome = await self._watched(runtime, request, scope)
        else:
            outcome = await self._attempt(runtime, request, scope)
        self._scopes.pop(scope, None)
        return outcome

    def _watches(self, runtime: TargetRuntime) -> bool:
        """Whether this attempt may be moved out of its engine's queue: a stream on a
        vLLM target of a route that moves, not moved yet, with somewhere to go."""
        return (
            self._moves
            and self._streamed
            and self._moved is None
            and runtime.config.kind == "vllm"
            and self._launched < len(self._order)
        )

    async def _watched(
        self, runtime: TargetRuntime, request: TurnRequest, scope: anyio.CancelScope
    ) -> Primed | UpstreamError | None:
        """An attempt the queue watch may move: checked every `CHECK_EVERY_S` until it
        primes, fails or is moved (see `requeue.move_to`)."""
        sent = self._clock()
        quantile = route_quantile(self._route)
        planned = self._views.get(runtime.config.name)

        def check() -> bool:
            if self._over or self._running > 1:  # won, or a hedge runs beside it
                return self._over
            if not runtime.signals.engine.queued_since(sent):
                return False  # the common tick: no queue seen since the send, no views made
            rest = self._order[self._launched :]
            others = [r.signals.view() for r in rest]
            expected = 0.0 if planned is None else predict_ttft_s(planned, quantile)
            now = runtime.signals.view()
            index = move_to(now, self._clock() - sent, others, quantile, expected)
            if index is None:
                return False
            runtime.signals.engine.held_a_turn()
            # The chosen target next; the engine left behind, last.
            self._order.insert(self._launched, self._order.pop(self._launched + index))
            self._order.append(runtime)
            self._backup = None
            self._moved = scope
            scope.cancel()
            return True

        watch = QueueWatch(check)
        try:
            return await self._attempt(runtime, request, scope)
        finally:
            watch.cancel()

    def _is_moved(self, scope: anyio.CancelScope) -> bool:
        return scope is self._moved

    def _settle(self, outcome: Primed | UpstreamError, scope: anyio.CancelScope | None) -> bool:
        """Book an attempt's outcome where it happens; whether it won the race."""
        self._running -= 1
        if self._over:
            return False
        if isinstance(outcome, Primed):
            self._winner = outcome
            self._decide(outcome, self._running, keep=scope)
            self._wake_host()
            return True
        if not self._failed(outcome):
            # The request is bad as far as this target can tell; an attempt still
            # running may yet answer it (a hedge's 400 must not cancel it).
            self._bad_request = True
            self._hedge_at = math.inf
            self._arm()
        if self._running == 0:
            self._wake_host()  # to fall back, or to end the race
        return False

    def _wake_host(self) -> None:
        if self._wake is not None:
            self._wake.set()  # the race's task, waiting for the hedges

    def _arm(self) -> None:
        """(Re)set the timer that starts a hedge when `_hedge_at` passes."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._hedge_at != math.inf and not self._over:
            delay = max(self._hedge_at - self._clock(), 0.0)
            self._timer = self._loop.call_later(delay, self._hedge_due)

    def _hedge_due(self) -> None:
        """The timer's callback: anyio works only inside a task, so hand over to one."""
        self._timer = None
        if not self._over and self._loop is not None:
            self._starter = self._loop.create_task(self._start_hedge())

    async def _start_hedge(self) -> None:
        """The hedge delay passed with no first token: start the next target too."""
        if self._over or self._tg is None or self._request is None:
            return
        if self._bad_request:  # not hedged, and not for want of spend
            cost = None
        else:
            cost = self._hedge_cost()
            if cost is None:
                self._events.hedge(self._route.name, "capped")
                self._result.hedge_capped = True
        if cost is None or not self._budget.try_spend():
            self._extra = len(self._order)  # budget spent: no more hedges this turn
            self._hedge_at = math.inf
            return
        runtime = self._next("hedge")
        if runtime is None:
            self._hedge_at = math.inf
            return
        if cost and self._spend is not None:
            self._spend.hedged(cost)
        scope = cancel_scope()
        self._scopes[scope] = None
        self._tg.create_task(self._hedge(runtime, self._request, scope))

    def _hedge_cost(self) -> float | None:
        """The expected cost of the hedge due now (0 without a spend cap), or None if
        the route's `max_cost_share` has no room for it: then no hedge starts, and no
        extra request is taken from the count."""
        if self._spend is None or self._launched >= len(self._order):
            return 0.0
        cost = self._costs.get(self._order[self._backup_index()].config.name, 0.0)
        return cost if self._spend.allows(cost) else None

    async def _hedge(
        self, runtime: TargetRuntime, request: TurnRequest, scope: anyio.CancelScope
    ) -> None:
        outcome = await self._attempt(runtime, request, scope)
        self._scopes.pop(scope, None)
        if outcome is None:  # cancelled: another attempt won
            return
        if self._settle(outcome, scope):
            if self._commit is not None and isinstance(outcome, Primed):
                try:
                    await self._commit(outcome)
                except Exception as exc:
                    self.commit_error = exc
            return
        if isinstance(outcome, Primed):  # primed after the race was won: a loser
            await self._close_loser(outcome)

    @staticmethod
    async def _close_loser(primed: Primed) -> None:
        primed.attempt.cancelled()
        primed.attempt.release()
        await primed.aclose()

    def _failure_message(self) -> str:
        failures = self._result.failures
        if not failures:
            return f"route '{self._route.name}': no attempt could be made"
        parts = "; ".join([*(f.message for f in failures), *self._skipped])
        return f"route '{self._route.name}': all {len(failures)} attempts failed ({parts})"

    async def _attempt(
        self, runtime: TargetRuntime, request: TurnRequest, scope: anyio.CancelScope | None = None
    ) -> Primed | UpstreamError | None:
        """An attempt to its commit point; None if it was cancelled through `scope`
        (the race's handle on it, which also carries its deadline) by a winner."""
        return await attempt_to_commit(
            runtime,
            request,
            first_token_s=self._deadline_s(runtime),
            clock=self._clock,
            max_event=self._max_event,
            deadlines=self._deadlines,
            scope=scope,
            superseded=self._is_over,
            moved=self._is_moved,
        )

    def _is_over(self) -> bool:
        return self._over

    def _failed(self, err: UpstreamError) -> bool:
        """Book a failed attempt; whether another target may still serve the turn."""
        self._result.failures.append(err)
        if not isinstance(err, UpstreamQueued):  # moved: the target did nothing wrong
            self._events.attempt_failed(self._route.name, err)
        return err.retryable  # not retryable: the request itself is bad

    def _next(self, kind: AttemptKind) -> TargetRuntime | None:
        """The next target of the plan, with the books kept for how it starts.

        A fallback takes the plan's order (the policy's choice: cheapest within the
        SLO, say) and is charged to the budget. A hedge is a bet on speed, so it
        takes a remaining target predicted fast (`hedge.choose_backup`): for a
        cost-ordered plan the next in line is often the twin engine queued by the
        same burst."""
        if kind == "fallback" and self._streamed:  # a unary answer has `total_s`
            self._drop_doomed()
        if self._launched >= len(self._order):
            return None
        if kind == "hedge":
            backup = self._backup_index()
            self._order.insert(self._launched, self._order.pop(backup))
        runtime = self._order[self._launched]
        if kind == "first" and self._spend is not None:
            self._spend.first_attempt(self._costs.get(runtime.config.name, 0.0))
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
        now = self._clock()
        if self._started_at is None:
            self._started_at = now
        if self._loop is not None:  # a hedged race: its next hedge, once the send is out
            self._deadlines.after_send(self._schedule_hedge, now)
        return runtime

    def _deadline_s(self, runtime: TargetRuntime) -> float:
        return self._route.first_token_s or runtime.config.timeouts.first_token_s

    def _drop_doomed(self) -> None:
        """Leave out of the fallbacks each measured target whose median TTFT, predicted
        now, is past its deadline: it would more likely than not time out, leaving an
        abandoned request in its queue (overloaded fleets chained 5 s timeouts into a
        504 after 15 s). An unmeasured target is tried: its prediction is only a prior."""
        doomed = []
        for runtime in self._order[self._launched :]:
            view = runtime.signals.view()
            predicted = predict_ttft_s(view, 0.5)
            if view.ttft_samples and predicted > self._deadline_s(runtime):
                doomed.append((runtime, predicted))
        # Only from the rest: a target a turn was moved from is both launched and last.
        dropped = {id(runtime) for runtime, _ in doomed}
        launched = self._order[: self._launched]
        rest = [r for r in self._order[self._launched :] if id(r) not in dropped]
        self._order = launched + rest
        for runtime, predicted in doomed:
            self._events.fallback_skipped(self._route.name, runtime.config.name)
            self._skipped.append(
                f"{runtime.config.name}: not tried, its predicted median time to first token "
                f"{predicted:.1f}s is past its first_token_s {self._deadline_s(runtime):g}s"
            )
        if doomed:
            self._backup = None  # indices moved

    def _backup_index(self) -> int:
        """Where in the plan the target a hedge would start is (`hedge.choose_backup`);
        the views are the plan's snapshot, so it is chosen once per attempt launched."""
        if self._backup is not None and self._backup[0] == self._launched:
            return self._backup[1]
        rest = range(self._launched, len(self._order))
        views = [self._views[self._order[i].config.name] for i in rest]
        primary = self._views[self._order[self._launched - 1].config.name]
        elapsed = 0.0 if self._started_at is None else self._clock() - self._started_at
        route = self._route
        index = self._launched + choose_backup(
            views, route.slo, primary=primary, hedge=route.hedge, elapsed_s=elapsed
        )
        self._backup = (self._launched, index)
        return index

    def _schedule_hedge(self, launched_at: float) -> None:
        """Set when the next hedge is due, counted from the latest attempt's launch at
        `launched_at`. `_next` has it run once the request is written upstream
        (`Deadlines.after_send`): choosing the backup and its delay is planning work
        the first bytes upstream need not wait for. When two attempts launched in one
        step (a fallback after a failure found at once), the later call wins."""
        if self._over or self._bad_request:
            return  # won or failed meanwhile; a bad request starts no more hedges
        hedge = self._route.hedge
        if hedge is None or self._extra >= hedge.max_extra or self._launched >= len(self._order):
            self._hedge_at = math.inf
        else:
            latest = self._views[self._order[self._launched - 1].config.name]
            backup = self._views[self._order[self._backup_index()].config.name]
            started = launched_at if self._started_at is None else self._started_at
            delay = hedge_delay_s(hedge, latest, backup, self._route.slo, launched_at - started)
            self._hedge_at = launched_at + delay
        self._arm()

    # -- one attempt ---------------------------------------------------------------------
