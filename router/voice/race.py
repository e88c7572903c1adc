"""One speech request raced over a route's plan: fall back, and hedge a late target.

The speech twin of `router.turn.race`, for a request whose answer is one object (a
transcript, or a TTS stream that produced its first audio bytes):

- the plan's first target is tried; a retryable failure before its answer moves to
  the next at once (a fallback, charged to the route's hedge budget); a failure
  that says the request itself is bad ends the race with it once nothing else is
  running;
- with the route's `hedge:`, a target with no answer after the hedge delay (fixed,
  or adaptive on its predicted time to answer: `router.turn.hedge.hedge_delay_s`)
  gets the next target started beside it, at most `max_extra` of them and within
  the route's budget; the first answer wins and the others are cancelled at once
  (each upstream sees its connection close).

`open_at(name)` opens one attempt and returns its answer, None when the target
would not take it (breaker, local limits: skipped, not a failure), or raises an
`UpstreamError`. An answer that lost a tie is handed to `discard`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from router.errors import UpstreamError
from router.turn.hedge import HedgeBudget

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Hedging:
    """When to start the next target beside a late one (seconds after it started)."""

    delay_s: Callable[[str, str], float]
    max_extra: int
    budget: HedgeBudget


@dataclass(frozen=True, slots=True)
class Won(Generic[T]):
    answer: T
    target: str
    #: targets tried, the winner included
    attempts: int
    hedged: bool


async def race(
    order: Sequence[str],
    open_at: Callable[[str], Awaitable[T | None]],
    *,
    hedging: Hedging | None,
    failures: list[UpstreamError],
    discard: Callable[[T], Awaitable[None]],
) -> Won[T] | None:
    """The first answer among `order`'s targets; None when none answered (the reasons
    are in `failures`)."""
    waiting = list(order)
    running: dict[asyncio.Future[T | None], tuple[str, float]] = {}
    loop = asyncio.get_running_loop()
    tried = extra = 0
    stop = False  # a request the targets call bad: no more targets

    def launch() -> None:
        nonlocal tried
        name = waiting.pop(0)
        running[asyncio.ensure_future(open_at(name))] = (name, loop.time())
        tried += 1

    if hedging is not None:
        hedging.budget.record_turn()
    try:
        while True:
            if not running:
                if stop or not waiting:
                    return None
                if tried and hedging is not None:
                    hedging.budget.charge()  # a fallback is never refused, but counted
                launch()
            timeout = _next_hedge_s(hedging, running, waiting, extra, loop.time())
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                if hedging is not None and hedging.budget.try_spend():
                    extra += 1
                    launch()
                else:
                    hedging = None  # no budget: this request falls back only
                continue
            for task in done:
                name, _ = running.pop(task)
                exc = task.exception()
                if exc is None:
                    answer = task.result()
                    if answer is not None:
                        return Won(answer, name, tried, extra > 0)
                elif isinstance(exc, UpstreamError):
                    failures.append(exc)
                    stop = stop or not exc.retryable
                else:
                    try:
                        raise exc
                    finally:
                        exc = None  # no cycle through this frame
    finally:
        await _cancel(running, discard)


def _next_hedge_s(
    hedging: Hedging | None,
    running: dict[asyncio.Future[T | None], tuple[str, float]],
    waiting: list[str],
    extra: int,
    now: float,
) -> float | None:
    if hedging is None or not waiting or extra >= hedging.max_extra:
        return None
    name, started = max(running.values(), key=lambda r: r[1])  # the newest attempt
    return max(started + hedging.delay_s(name, waiting[0]) - now, 0.0)


async def _cancel(
    running: dict[asyncio.Future[T | None], tuple[str, float]],
    discard: Callable[[T], Awaitable[None]],
) -> None:
    """Cancel the attempts still running; an answer that came in meanwhile is discarded."""
    for task in running:
        task.cancel()
    for task in running:
        try:
            answer = await task
        except (asyncio.CancelledError, UpstreamError):
            continue
        if answer is not None:
            await discard(answer)
