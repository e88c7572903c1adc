"""One speech request raced over a plan: fallback, hedging, the budget (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from router.errors import UpstreamConnectError, UpstreamError, UpstreamStatusError
from router.turn.hedge import HedgeBudget
from router.voice.race import Hedging, Won, race

pytestmark = pytest.mark.anyio


class Targets:
    """Each target answers its name after `delay_s`, or raises its error."""

    def __init__(self, **behaviour: float | UpstreamError | None) -> None:
        self.behaviour = behaviour
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.discarded: list[str] = []

    async def open_at(self, name: str) -> str | None:
        self.started.append(name)
        how = self.behaviour[name]
        if how is None:
            return None  # the breaker says no
        if isinstance(how, UpstreamError):
            raise how
        try:
            await asyncio.sleep(how)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        return name

    async def discard(self, answer: str) -> None:
        self.discarded.append(answer)

    async def run(self, hedging: Hedging | None = None) -> tuple[Won[str] | None, list[str]]:
        failures: list[UpstreamError] = []
        won = await race(
            list(self.behaviour),
            self.open_at,
            hedging=hedging,
            failures=failures,
            discard=self.discard,
        )
        return won, [f.target for f in failures]


def hedging(after_s: float, budget: HedgeBudget | None = None) -> Hedging:
    return Hedging(lambda _a, _b: after_s, 1, budget or HedgeBudget(0.5))


async def test_a_failure_falls_back_and_a_closed_breaker_is_skipped() -> None:
    targets = Targets(a=UpstreamConnectError("a down", target="a"), b=None, c=0.0)
    won, failures = await targets.run()
    assert won is not None and (won.target, won.attempts, won.hedged) == ("c", 3, False)
    assert failures == ["a"]


async def test_a_bad_request_is_not_tried_elsewhere() -> None:
    bad = UpstreamStatusError("a: 400", target="a", upstream_status=400, body=b"{}")
    targets = Targets(a=bad, b=0.0)
    won, failures = await targets.run()
    assert won is None and failures == ["a"] and targets.started == ["a"]


async def test_a_late_target_is_hedged_and_the_loser_cancelled() -> None:
    targets = Targets(a=5.0, b=0.01)
    won, _ = await targets.run(hedging(0.05))
    assert won is not None and (won.target, won.hedged) == ("b", True)
    assert targets.cancelled == ["a"]


async def test_without_hedging_or_budget_a_late_target_is_waited_for() -> None:
    targets = Targets(a=0.2, b=0.0)
    won, _ = await targets.run()
    assert won is not None and won.target == "a" and targets.started == ["a"]
    spent = HedgeBudget(0.01)
    assert spent.try_spend()  # the floor of one, used up
    targets = Targets(a=0.2, b=0.0)
    won, _ = await targets.run(hedging(0.01, spent))
    assert won is not None and won.target == "a" and targets.started == ["a"]
