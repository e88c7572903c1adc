"""A streamed turn waiting in a vLLM engine's queue moves, before its first token, to a
target predicted to answer sooner: the decision (`move_to`, pure) and the race doing it
on fake upstreams."""

from __future__ import annotations

import math
from dataclasses import replace

import anyio
import pytest

from router.config import parse_config
from router.policy.base import EngineView, TargetView
from router.signals.engine import EngineSample
from router.turn.requeue import move_to, moves_queued, queued_wait_s, route_quantile
from router.turn.types import TurnResult
from tests.policy.views import hosted, vllm
from tests.turn.chunks import DONE, content, role
from tests.turn.fakes import FakeUpstream, Reply, Rig

ANSWER = [role(), content("Hi"), DONE]

# `a` is an engine believed fast (20 ms unloaded); `b` a hosted API at its 500 ms prior.
CONFIG = """
targets:
  - name: a
    kind: vllm
    base_url: http://a.test/v1
    model: model-a
    expected_ttft_ms: 20
    timeouts: {first_token_s: 5.0}
  - name: b
    kind: openai
    base_url: http://b.test/v1
    model: model-b
    timeouts: {first_token_s: 5.0}
routes:
  - {name: chat, targets: [a, b], policy: {type: ordered}, move_queued: true}
  - {name: stays, targets: [a, b], policy: {type: ordered}}
  - {name: fast, targets: [a, b], policy: {type: latency}, slo: {ttft_ms: 300, quantile: 0.95}}
"""

QUEUE = EngineView(waiting=1, running=2, kv_usage=0.5, age_s=0.05, stale=False)


def test_a_turn_moves_when_another_target_beats_the_wait_for_a_slot() -> None:
    # Two running, one waiting, 10 turns/s completed: the head of the queue waits a
    # median ln 2 / 10 s for a slot.
    engine = vllm("small", engine=QUEUE, rate=10.0, p50=0.05, p90=0.06)
    assert queued_wait_s(engine) == pytest.approx(math.log(2) / 10)
    quick, slow = hosted("quick", p90=0.03), hosted("slow", p90=0.2)
    assert move_to(engine, 0.3, [slow, quick], 0.9) == 1  # the fastest that beats the wait
    assert move_to(engine, 0.3, [slow], 0.9) is None  # nothing beats it: stay
    assert move_to(engine, 0.3, [replace(quick, available=False)], 0.9) is None
    # The plan priced this wait in (an SLO it still meets): no surprise, no move.
    assert move_to(engine, 0.3, [slow, quick], 0.9, planned_s=0.4) is None
    assert move_to(engine, 0.3, [slow, quick], 0.9, planned_s=0.3) == 1


def test_a_turn_stays_without_a_queue_seen_since_it_was_sent_or_while_in_its_prefill() -> None:
    quick = hosted("quick", p90=0.03)

    def small(engine: EngineView) -> TargetView:
        return vllm("small", engine=engine, rate=0.5, p50=0.05, p90=0.06)

    queued = small(QUEUE)
    assert move_to(queued, 0.3, [quick], 0.9) == 0
    # no queue in the last scrape
    assert move_to(small(replace(QUEUE, waiting=0.0)), 0.3, [quick], 0.9) is None
    # the scrape that showed the queue is older than the attempt
    assert move_to(small(replace(QUEUE, age_s=0.4)), 0.3, [quick], 0.9) is None
    # stale stats say nothing about this attempt
    assert move_to(small(replace(QUEUE, stale=True)), 0.3, [quick], 0.9) is None
    # not yet past a free slot's TTFT (p90 60 ms): it may be in its prefill
    assert move_to(queued, 0.055, [quick], 0.9) is None


def test_routes_of_predicting_policies_move_queued_turns_unless_they_say_otherwise() -> None:
    config = parse_config(CONFIG)
    routes = {r.name: r for r in config.routes}
    assert moves_queued(routes["chat"])  # said so
    assert not moves_queued(routes["stays"])  # ordered ignores load
    assert moves_queued(routes["fast"])
    assert route_quantile(routes["fast"]) == 0.95  # the SLO's
    assert route_quantile(routes["stays"]) == 0.9


def _queue_seen(rig: Rig) -> None:
    rig.targets["a"].signals.engine_update(EngineSample(waiting=1.0, running=2.0, kv_usage=0.5))


@pytest.mark.anyio
async def test_the_race_moves_a_queued_attempt_and_keeps_the_engine_as_last_resort() -> None:
    a = FakeUpstream("a", Reply([role()], then="hang"))  # headers, then waits in the queue
    rig = Rig(a, FakeUpstream("b", Reply(ANSWER)), config=CONFIG)
    # Planned on a scrape that showed the engine idle: a free slot expected.
    rig.targets["a"].signals.engine_update(EngineSample(waiting=0.0, running=0.0, kv_usage=0.0))
    rig.views = {name: rig.targets[name].signals.view() for name in rig.route.targets}
    result = TurnResult(route="chat")
    async with anyio.create_task_group() as tg:
        won: list[str] = []

        async def run() -> None:
            primed = await rig.race(result).run(rig.request())
            won.append(primed.target.config.name)
            await primed.aclose()

        with anyio.fail_after(5):
            tg.start_soon(run)
            await a.called.wait()
            await anyio.sleep(0.02)
            _queue_seen(rig)  # a scrape after the send shows a queue
    assert won == ["b"]
    assert a.responses[0].closed  # the queued request was dropped at the engine
    assert rig.events.seen == [("fell_back", "a", "b", "queued")]  # no failure booked
    assert (result.attempts, result.fell_back) == (2, True)
    assert [f.cause for f in result.failures] == ["queued"]
    assert rig.targets["a"].signals.breaker.state == "closed"
    # The queue held a turn of ours: the batch was full at the 2 the scrape saw running,
    # learned from this one scrape (the cancelled request leaves no second to confirm it).
    engine = rig.targets["a"].signals.view().engine
    assert engine is not None and engine.capacity == 2.0


@pytest.mark.anyio
async def test_a_route_that_does_not_move_leaves_the_turn_in_the_queue() -> None:
    release = anyio.Event()
    a = FakeUpstream("a", Reply(ANSWER, gate=release))
    b = FakeUpstream("b", Reply(ANSWER))
    rig = Rig(a, b, route="stays", config=CONFIG)
    async with anyio.create_task_group() as tg:
        won: list[str] = []

        async def run() -> None:
            primed = await rig.race().run(rig.request())
            won.append(primed.target.config.name)
            await primed.aclose()

        with anyio.fail_after(5):
            tg.start_soon(run)
            await anyio.sleep(0.02)
            _queue_seen(rig)
            await anyio.sleep(0.4)  # four checks' worth
            release.set()
    assert won == ["a"]
    assert b.requests == []
