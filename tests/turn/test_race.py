"""The race to the first token: the commit point, fallback and hedging, with fake
upstreams and a recorder of the turn's events (no sockets, no Prometheus)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import cast

import anyio
import pytest

from router.errors import AllTargetsFailed
from router.policy.base import Candidate, Plan
from router.turn.types import Primed, TurnResult
from router.upstream.body import ClientBody, TargetBody
from tests.turn.chunks import DONE, chunk, content, error, role, tool_call
from tests.turn.fakes import CONFIG, FakeUpstream, ManualClock, Reply, Rig

pytestmark = pytest.mark.anyio

ANSWER = [role(), content("Hi"), content(" there"), DONE]


async def test_the_first_target_that_answers_is_primed_at_its_first_token() -> None:
    rig = Rig(FakeUpstream("a", Reply(ANSWER)), FakeUpstream("b"))
    result = TurnResult(route="chat")
    with anyio.fail_after(5):
        primed = await rig.race(result).run(rig.request())
    assert primed.target.config.name == "a"
    # Everything up to and including the first token, and nothing after it.
    assert primed.head == role() + content("Hi")
    assert primed.framer is not None and primed.framer.pending == b""
    assert (result.attempts, result.fell_back, result.hedged) == (1, False, False)
    assert rig.events.seen == []
    sent = rig.upstreams["a"].requests[0]
    assert sent.body["model"] == "model-a"  # the target's model, not the route's
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers == {"x-request-id": "req-1"}
    assert rig.upstreams["b"].requests == []


async def test_a_tool_call_delta_is_the_commit_point() -> None:
    # After the tool call the upstream goes quiet: a race that waited for content
    # would never return.
    rig = Rig(FakeUpstream("a", Reply([role(), tool_call()], then="hang")), FakeUpstream("b"))
    with anyio.fail_after(1):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "a"
    assert primed.head == role() + tool_call()
    await primed.aclose()


@pytest.mark.parametrize(
    ("a_reply", "cause"),
    [
        (Reply(status=503), "status"),
        (Reply([role(), error()]), "status"),  # an error event before the first token
        (Reply([b"data: {not json\n\n"]), "protocol"),
        (Reply([role(), DONE]), "protocol"),  # ended before any token
        (Reply([role()], then="reset"), "connect"),
    ],
)
async def test_a_failure_before_the_first_token_falls_back_to_the_next_target(
    a_reply: Reply, cause: str
) -> None:
    rig = Rig(FakeUpstream("a", a_reply), FakeUpstream("b", Reply(ANSWER)))
    result = TurnResult(route="chat")
    with anyio.fail_after(5):
        primed = await rig.race(result).run(rig.request())
    assert primed.target.config.name == "b"
    assert primed.head == role() + content("Hi")
    assert (result.attempts, result.fell_back) == (2, True)
    assert rig.events.seen == [("attempt_failed", "a", cause), ("fell_back", "a", "b", cause)]
    assert not rig.budget.try_spend()  # the fallback was charged: no hedge left for now


async def test_a_target_silent_past_its_first_token_deadline_falls_back() -> None:
    config = CONFIG.replace("timeouts: {first_token_s: 2.0}", "timeouts: {first_token_s: 0.05}", 1)
    rig = Rig(FakeUpstream("a", Reply(hang=True)), FakeUpstream("b", Reply(ANSWER)), config=config)
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "b"
    assert rig.events.seen[0] == ("attempt_failed", "a", "timeout")
    assert rig.upstreams["a"].cancelled == 1  # the slow target's request was closed


@pytest.mark.parametrize(("b_ttft_s", "tried"), [(1.0, False), (0.01, True)])
async def test_a_fallback_predicted_past_its_first_token_deadline_is_not_tried(
    b_ttft_s: float, tried: bool
) -> None:
    # On an overloaded fleet a fallback into a target whose measured median is past
    # the deadline times out too, after queueing a request that is then abandoned.
    config = CONFIG.replace("timeouts: {first_token_s: 2.0}", "timeouts: {first_token_s: 0.05}")
    clock = ManualClock(100.0)
    rig = Rig(
        FakeUpstream("a", Reply(hang=True)),
        FakeUpstream("b", Reply(ANSWER)),
        config=config,
        clock=clock,
    )
    for _ in range(3):  # b, measured: three turns at b_ttft_s
        attempt = rig.targets["b"].signals.begin(100)
        clock.now += b_ttft_s
        attempt.first_token()
        attempt.finished(prompt_tokens=100, completion_tokens=5)
        attempt.release()
    with anyio.fail_after(5):
        if tried:
            primed = await rig.race().run(rig.request())
            assert primed.target.config.name == "b"
            assert rig.events.kinds("fallback_skipped") == []
            return
        with pytest.raises(AllTargetsFailed) as caught:
            await rig.race().run(rig.request())
    assert caught.value.status == 504  # what a tried b would have ended in, at once
    assert "b: not tried, its predicted median time to first token 1.0s" in caught.value.message
    assert rig.upstreams["b"].requests == []
    assert rig.events.kinds("fell_back") == []
    assert rig.events.kinds("fallback_skipped") == [("fallback_skipped", "b")]


async def test_a_request_the_target_rejects_as_bad_is_not_retried_elsewhere() -> None:
    bad = b'{"error": {"message": "messages: too long", "type": "invalid_request_error"}}'
    rig = Rig(FakeUpstream("a", Reply(status=400, body=bad)), FakeUpstream("b", Reply(ANSWER)))
    with anyio.fail_after(5), pytest.raises(AllTargetsFailed) as caught:
        await rig.race().run(rig.request())
    assert caught.value.status == 400
    # the target's own words, as the OpenAI error fields only
    assert json.loads(caught.value.to_json()) == {
        "error": {"message": "messages: too long", "type": "invalid_request_error", "code": None}
    }
    assert rig.upstreams["b"].requests == []
    assert rig.events.kinds("fell_back") == []


async def test_when_every_target_fails_the_turn_fails_with_each_reason() -> None:
    rig = Rig(FakeUpstream("a", Reply(status=500)), FakeUpstream("b", Reply(status=503)))
    with anyio.fail_after(5), pytest.raises(AllTargetsFailed) as caught:
        await rig.race().run(rig.request())
    assert caught.value.status == 502
    assert "a: upstream answered 500" in caught.value.message
    assert "b: upstream answered 503" in caught.value.message


async def test_a_late_first_token_is_hedged_and_the_hedge_wins() -> None:
    rig = Rig(FakeUpstream("a", Reply(hang=True)), FakeUpstream("b", Reply(ANSWER)), route="hedged")
    result = TurnResult(route="hedged")
    with anyio.fail_after(5):
        primed = await rig.race(result).run(rig.request())
    assert primed.target.config.name == "b"
    assert (result.attempts, result.hedged, result.fell_back) == (2, True, False)
    assert rig.events.kinds("hedge") == [
        ("hedge", "started"),
        ("hedge", "cancelled"),
        ("hedge", "won"),
    ]
    assert rig.upstreams["a"].cancelled == 1  # the loser's request was closed at once


async def test_the_primary_can_still_win_after_a_hedge_started() -> None:
    # a answers only once the hedge has gone out to b; b never answers.
    b = FakeUpstream("b", Reply([role()], then="hang"))
    rig = Rig(FakeUpstream("a", Reply(ANSWER, gate=b.called)), b, route="hedged")
    result = TurnResult(route="hedged")
    with anyio.fail_after(5):
        primed = await rig.race(result).run(rig.request())
    assert primed.target.config.name == "a"
    assert (result.attempts, result.hedged) == (2, True)
    hedges = [e for _, e in rig.events.kinds("hedge")]
    assert hedges == ["started", "cancelled", "lost"]
    assert b.responses[0].closed  # the hedge's open stream was closed


async def test_with_its_budget_spent_a_route_does_not_hedge() -> None:
    release = anyio.Event()
    a = FakeUpstream("a", Reply(ANSWER, gate=release))
    b = FakeUpstream("b", Reply(ANSWER))
    rig = Rig(a, b, route="hedged")
    rig.budget.max_rate = 0.0
    rig.budget.charge()  # the one hedge a quiet route may spend is gone
    primed = await race_as_a_answers_late(rig, release)
    assert primed.target.config.name == "a"
    assert b.requests == []
    assert rig.events.kinds("hedge") == []


async def race_as_a_answers_late(
    rig: Rig, release: anyio.Event, result: TurnResult | None = None
) -> Primed:
    """Race the rig's turn while `a` (gated on `release`) answers five hedge delays late."""

    async def answer_late() -> None:
        await anyio.sleep(0.1)
        release.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_late)
            primed = await rig.race(result).run(rig.request())
    return primed


@pytest.mark.parametrize(("b_cost", "hedged"), [(0.0001, False), (0.0, True)])
async def test_a_spend_cap_keeps_a_priced_hedge_back_and_lets_a_free_one_go(
    b_cost: float, hedged: bool
) -> None:
    # `max_cost_share: 0.5`: a hedge may add half of what the first attempts cost. The
    # turn's first attempt is expected to cost 0.0001; a hedge to b at as much would
    # double it, a hedge to a free b adds nothing.
    release = anyio.Event()
    a = FakeUpstream("a", Reply(ANSWER, gate=release))
    b = FakeUpstream("b", Reply([role()], then="hang"))
    rig = Rig(a, b, route="hedged-capped")
    rig.plan = Plan((Candidate("a", 0.1, 0.0001, 1.0), Candidate("b", 0.1, b_cost, 0.5)), "x")
    rig.budget.record_turn()  # the turn's slot (`Turn` opens it before the race)
    result = TurnResult(route="hedged-capped")
    primed = await race_as_a_answers_late(rig, release, result)
    assert primed.target.config.name == "a"
    assert result.hedged is hedged
    assert result.hedge_capped is not hedged
    assert len(b.requests) == int(hedged)
    assert [e for _, e in rig.events.kinds("hedge")][:1] == (["started"] if hedged else ["capped"])
    # A refused hedge takes nothing from the count: the route could still hedge.
    assert rig.budget.try_spend() is not hedged


class SlowToPrepare:
    """A body whose preparation for a target takes the router a second (a stall of
    the router's own: a parse, a GC pause, another client's work). It wraps the body
    rather than subclassing it: a compiled build's ClientBody (make compile) cannot
    have interpreted subclasses."""

    def __init__(self, body: ClientBody, clock: ManualClock) -> None:
        self.body = body
        self.rest = body.rest
        self.clock = clock

    def for_target(self, model: str) -> TargetBody:
        self.clock.now += 1.0
        return self.body.for_target(model)


async def test_the_routers_own_stall_before_the_send_is_not_charged_to_the_target() -> None:
    clock = ManualClock(100.0)
    rig = Rig(FakeUpstream("a", Reply(ANSWER)), FakeUpstream("b"), clock=clock)
    request = rig.request()
    request = replace(request, body=cast(ClientBody, SlowToPrepare(request.body, clock)))
    with anyio.fail_after(5):
        primed = await rig.race().run(request)
    assert primed.first_token_at - primed.started_at == 0.0
    primed.attempt.first_token(at=primed.first_token_at)  # as the commit books it
    assert primed.attempt.ttft_s == 0.0  # what the target's TTFT sketch records
    await primed.aclose()


# -- issue 14: reasoning, unary turns, error classes, bounds ------------------------------


async def test_a_reasoning_delta_commits_and_a_route_can_shorten_first_token_s() -> None:
    reasoning = [role(), chunk({"reasoning_content": "Let me think"}), content("Hi"), DONE]
    rig = Rig(FakeUpstream("a", Reply(reasoning)), FakeUpstream("b"), route="reasoning")
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request())
    assert primed.first_kind == "reasoning"
    assert primed.head == role() + chunk({"reasoning_content": "Let me think"})
    # the route's first_token_s (50 ms) overrides the target's 2 s
    rig = Rig(
        FakeUpstream("a", Reply(hang=True)), FakeUpstream("b", Reply(ANSWER)), route="reasoning"
    )
    with anyio.fail_after(1):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "b"


async def test_a_hedge_losers_400_never_cancels_the_primary() -> None:
    bad = b'{"error": {"message": "messages: too long", "type": "invalid_request_error"}}'
    gate = anyio.Event()
    slow = FakeUpstream("a", Reply(ANSWER, gate=gate))
    rig = Rig(slow, FakeUpstream("b", Reply(status=400, body=bad)), route="hedged")

    async def open_gate() -> None:
        await rig.upstreams["b"].called.wait()
        await anyio.sleep(0.05)  # b's 400 is in; a is still working
        gate.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(open_gate)
            primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "a"
    assert slow.cancelled == 0


async def test_a_unary_turn_is_not_hedged_unless_the_route_says_so() -> None:
    body = b'{"choices": [{"message": {"content": "Hi"}}]}'
    for route, hedged in (("hedged", False), ("hedged-unary", True)):
        gate = anyio.Event()
        rig = Rig(
            FakeUpstream("a", Reply(body=body, gate=gate)),
            FakeUpstream("b", Reply(body=body)),
            route=route,
        )
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_open_after, gate, 0.1)
                primed = await rig.race().run(rig.request(stream=False))
        assert (primed.target.config.name == "b") is hedged, route
        assert (len(rig.upstreams["b"].requests) == 1) is hedged, route


async def _open_after(gate: anyio.Event, seconds: float) -> None:
    await anyio.sleep(seconds)
    gate.set()


async def test_a_unary_turn_waits_for_total_s_not_first_token_s() -> None:
    config = CONFIG.replace(
        "timeouts: {first_token_s: 2.0}", "timeouts: {first_token_s: 0.01, total_s: 0.3}", 1
    )
    body = b'{"choices": [{"message": {"content": "Hi"}}]}'
    gate = anyio.Event()
    rig = Rig(FakeUpstream("a", Reply(body=body, gate=gate)), FakeUpstream("b"), config=config)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_open_after, gate, 0.1)  # past first_token_s, within total_s
            primed = await rig.race().run(rig.request(stream=False))
    assert primed.target.config.name == "a"
    # ... and never feeds the TTFT estimators
    assert rig.targets["a"].signals.ttft_sketch.count == 0
    rig = Rig(
        FakeUpstream("a", Reply(hang=True)), FakeUpstream("b", Reply(body=body)), config=config
    )
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request(stream=False))
    assert primed.target.config.name == "b"
    assert rig.targets["a"].signals.ttft_sketch.count == 0  # not even a censored sample


async def test_a_target_that_cannot_serve_the_request_moves_the_turn_on() -> None:
    unknown = (
        b'{"error": {"message": "The model `model-a` does not exist", '
        b'"type": "invalid_request_error", "code": "model_not_found"}}'
    )
    rig = Rig(FakeUpstream("a", Reply(status=404, body=unknown)), FakeUpstream("b", Reply(ANSWER)))
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "b"
    assert rig.targets["a"].signals.breaker.state == "closed"  # not the target's failure
    # when every target refuses, the client gets the 4xx, as its error fields only
    rig = Rig(
        FakeUpstream("a", Reply(status=404, body=unknown)),
        FakeUpstream("b", Reply(status=404, body=unknown)),
    )
    with anyio.fail_after(5), pytest.raises(AllTargetsFailed) as caught:
        await rig.race().run(rig.request())
    assert caught.value.status == 404
    assert json.loads(caught.value.to_json())["error"]["code"] == "model_not_found"


async def test_an_upstream_error_body_reaches_the_client_only_as_redacted_fields() -> None:
    leaky = (
        b'{"error": {"message": "bad request from 10.2.3.4:8000, token sk-live-abcdef123456", '
        b'"type": "invalid_request_error", "code": "bad", "debug": {"trace": "internal"}}}'
    )
    rig = Rig(FakeUpstream("a", Reply(status=400, body=leaky)), FakeUpstream("b"))
    with anyio.fail_after(5), pytest.raises(AllTargetsFailed) as caught:
        await rig.race().run(rig.request())
    error = json.loads(caught.value.to_json())["error"]
    assert set(error) == {"message", "type", "code"}
    assert "10.2.3.4" not in error["message"] and "sk-live" not in error["message"]


async def test_an_event_past_the_bound_before_the_first_token_fails_over() -> None:
    endless = [b"data: " + b"x" * 4096] * 400  # 1.6 MB, never a blank line
    rig = Rig(FakeUpstream("a", Reply(endless)), FakeUpstream("b", Reply(ANSWER)))
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "b"
    assert rig.events.seen[0] == ("attempt_failed", "a", "protocol")


async def test_a_redirect_moves_the_turn_on() -> None:
    rig = Rig(FakeUpstream("a", Reply(status=307)), FakeUpstream("b", Reply(ANSWER)))
    with anyio.fail_after(5):
        primed = await rig.race().run(rig.request())
    assert primed.target.config.name == "b"
