"""Moving a streamed turn out of a vLLM engine's queue before its first token.

A turn sent to an engine whose batch is full waits there for a running answer to end:
seconds. The plan could not always know: the engine's batch size may be unknown
(learned only once a queue is seen), its gauges lag the router's own count by a scrape
or more, and other clients fill it. Two real CPU engines showed it once or twice per
burst: a third turn on the 2-slot engine, priced as "two running, none waiting", waited
3.5-5.3 s while the 8-slot engine had room.

So the race watches each streamed attempt on a queue-modelled target (every
`CHECK_EVERY_S`). It moves the turn, once, when all of these hold (`move_to`):

- a scrape taken after the attempt started shows requests waiting;
- the attempt has had no first token for longer than a free slot's TTFT at the
  route's quantile (it is not in its prefill);
- the turn is later than the plan predicted for it (elapsed plus that wait): a
  queue the plan priced in (`slo_cost` keeping a turn on a free engine within its
  SLO) is no reason to move;
- another target of the plan is predicted, at that quantile, to answer before the
  median wait for one slot of the queued engine.

The attempt is cancelled (vLLM drops a waiting request at once: no work is lost) and
the turn falls back to that target (`firsttoken_fallbacks_total{cause="queued"}`); the
engine it left stays in the plan as a last resort. It is on for the policies that
predict from the queue (`latency`, `slo_cost`, `weighted`) unless the route sets
`move_queued`; policies that ignore load (`ordered`, `round_robin`, `random`, `p2c`)
keep their turns where they sent them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from router.config import RouteConfig
from router.policy.base import TargetView
from router.policy.predict import (
    DEFAULT_QUANTILE,
    completion_rate,
    erlang_quantile,
    free_slot_ttft_s,
    predict_ttft_s,
)

#: how often a waiting attempt looks at its engine's last scrape
CHECK_EVERY_S = 0.1
#: the policies that predict from the queue: their routes move queued turns by default
PREDICTIVE = frozenset({"latency", "slo_cost", "weighted"})


def moves_queued(route: RouteConfig) -> bool:
    """Whether the route moves a turn out of an engine's queue (`move_queued`)."""
    if route.move_queued is not None:
        return route.move_queued
    return route.policy.type in PREDICTIVE


def route_quantile(route: RouteConfig) -> float:
    """The quantile the route is judged at: its SLO's, else its policy's, else p90."""
    if route.slo is not None:
        return route.slo.quantile
    quantile = getattr(route.policy, "quantile", None)
    return float(quantile) if isinstance(quantile, float) else DEFAULT_QUANTILE


def queued_wait_s(view: TargetView) -> float:
    """Median seconds until the first waiting turn of an engine gets a slot: the first
    departure from its full batch (exponential at the engine's completion rate)."""
    return erlang_quantile(1, 0.5) / completion_rate(view)


def move_to(
    current: TargetView,
    elapsed_s: float,
    others: Sequence[TargetView],
    q: float,
    planned_s: float = 0.0,
) -> int | None:
    """The index in `others` of the target to move a waiting attempt to, or None to
    stay. `elapsed_s`: since the attempt was sent, without a first token; `planned_s`:
    the TTFT the plan predicted for it (a queue the plan priced in is no surprise)."""
    engine = current.engine
    if engine is None or engine.stale or engine.waiting <= 0.0:
        return None
    if engine.age_s >= elapsed_s:
        return None  # the queue was seen before this attempt reached the engine
    if elapsed_s <= free_slot_ttft_s(current, q):
        return None  # it may be in its prefill
    wait = queued_wait_s(current)
    if elapsed_s + wait <= planned_s:
        return None  # waiting as the plan expected (`slo_cost` may accept a queue)
    best: int | None = None
    best_s = wait
    for index, view in enumerate(others):
        if not view.available:
            continue
        predicted = predict_ttft_s(view, q)
        if predicted < best_s:
            best, best_s = index, predicted
    return best


class QueueWatch:
    """Calls `check` every `every_s` on the running loop until it returns True or the
    watch is cancelled (the attempt primed, failed or was moved)."""

    __slots__ = ("_check", "_every", "_handle", "_loop")

    def __init__(self, check: Callable[[], bool], every_s: float = CHECK_EVERY_S) -> None:
        self._check = check
        self._every = every_s
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(every_s, self._tick)

    def _tick(self) -> None:
        self._handle = None
        if not self._check():
            self._handle = self._loop.call_later(self._every, self._tick)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
