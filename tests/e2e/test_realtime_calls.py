"""WebRTC calls through the router (`client.realtime.calls`), with the official
`openai` SDK as the client and Realtime simulators behind it: the offer goes to the
route's target with the target's model, fails over before the call exists, comes back
as OpenAI's answer, and the call's actions go to the target that holds it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import (
    AsyncOpenAI,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
)
from websockets.exceptions import InvalidStatus

from router.sim.realtime_behaviour import RealtimeFault
from tests.e2e.realtime_stack import KEY, LIMITED, UPSTREAM_KEY, Stack, running_stack
from tests.e2e.test_realtime import HEARD_ROUTE
from tests.sim.test_realtime import until

pytestmark = pytest.mark.anyio
OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
SESSION: Any = {"type": "realtime", "model": "voice", "instructions": "be brief"}


async def test_the_sdk_creates_a_call_and_hangs_it_up_on_the_target_that_holds_it(
    stack: Stack,
) -> None:
    async with stack.sdk() as client:
        answer = await client.realtime.calls.create(sdp=OFFER, session=SESSION)
        assert answer.response.status_code == 201
        assert answer.response.headers["content-type"].startswith("application/sdp")
        assert answer.content.startswith(b"v=0")
        location = answer.response.headers["location"]
        call_id = location.rsplit("/", 1)[-1]
        assert location == f"/v1/realtime/calls/{call_id}"
        assert answer.response.headers["x-firsttoken-target"] == "rt-a"
        await client.realtime.calls.hangup(call_id)
    record = stack.a.calls.records[-1]
    assert record.id == call_id
    assert record.sdp == OFFER
    assert record.content_type == "multipart/form-data"
    # the target's own model and key; the rest of the configuration as the client sent it
    assert record.session == {**SESSION, "model": "gpt-realtime"}
    assert record.headers["authorization"] == "Bearer sk-upstream"
    assert record.actions == [("hangup", {})]
    labels = {"target": "rt-a", "call": "realtime_call", "outcome": "ok"}
    assert stack.metric("firsttoken_relayed_calls_total", **labels) == 2


async def test_a_refused_offer_moves_to_the_next_target_before_the_call_exists(
    stack: Stack,
) -> None:
    stack.a.set_fault(RealtimeFault("refuse", status=503))
    async with stack.sdk() as client:
        answer = await client.realtime.calls.create(sdp=OFFER, session=SESSION)
        call_id = answer.response.headers["location"].rsplit("/", 1)[-1]
        assert answer.response.headers["x-firsttoken-target"] == "rt-b"
        await client.realtime.calls.accept(call_id, type="realtime", model="voice")
    assert not stack.a.calls.records
    # the call's model is the target's own there too
    assert stack.b.calls.records[-1].actions == [
        ("accept", {"type": "realtime", "model": "gpt-realtime"})
    ]
    failed = {"target": "rt-a", "call": "realtime_call", "outcome": "failed"}
    assert stack.metric("firsttoken_relayed_calls_total", **failed) == 1


async def test_an_offer_the_target_rejects_comes_back_and_is_not_tried_elsewhere(
    stack: Stack,
) -> None:
    async with stack.sdk() as client:
        with pytest.raises(BadRequestError) as err:
            await client.realtime.calls.create(sdp="not sdp", session=SESSION)
    assert err.value.code == "invalid_offer"
    assert not stack.b.calls.records


async def test_a_form_with_the_route_in_the_query_and_a_bare_offer_with_an_ephemeral_key(
    stack: Stack,
) -> None:
    url = f"{stack.router.base_url}/realtime/calls"
    async with httpx.AsyncClient() as http:
        form = {"sdp": OFFER, "session": json.dumps({"type": "realtime"})}
        answer = await http.post(
            url + "?model=voice",
            files={k: (None, v) for k, v in form.items()},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 201, answer.text
        assert stack.a.calls.records[-1].session["model"] == "gpt-realtime"
        async with stack.sdk() as client:
            secret = await client.realtime.client_secrets.create(session=SESSION)
        answer = await http.post(
            url,
            content=OFFER,
            headers={"authorization": f"Bearer {secret.value}", "content-type": "application/sdp"},
        )
        assert answer.status_code == 201, answer.text
    record = stack.a.calls.records[-1]
    assert record.content_type == "multipart/form-data"  # passed on in the SDK's shape
    assert record.session["instructions"] == "be brief"  # the key's configuration
    assert record.session["model"] == "gpt-realtime"


async def test_calls_the_router_cannot_keep_or_find(stack: Stack) -> None:
    async with stack.sdk(LIMITED) as client:
        with pytest.raises(PermissionDeniedError) as denied:
            await client.realtime.calls.create(sdp=OFFER, session=SESSION)
    assert "session limits" in denied.value.message
    async with stack.sdk() as client:
        with pytest.raises(NotFoundError):
            await client.realtime.calls.hangup("rtc_never_made")
        with pytest.raises(BadRequestError) as bad:
            await client.realtime.calls.create(sdp="", session=SESSION)
    assert "'sdp' is required" in bad.value.message
    async with httpx.AsyncClient() as http:
        bare = await http.post(
            f"{stack.router.base_url}/realtime/calls?model=voice",
            content=b"  ",
            headers={"authorization": f"Bearer {KEY}", "content-type": "application/sdp"},
        )
        deep = await http.post(  # a session nested past the request decoder's limit
            f"{stack.router.base_url}/realtime/calls?model=voice",
            files={"sdp": (None, OFFER), "session": (None, '{"a":' * 20_000)},
            headers={"authorization": f"Bearer {KEY}"},
        )
    assert bare.status_code == 400 and "'sdp' is required" in bare.json()["error"]["message"]
    assert deep.status_code == 400, deep.text
    assert "the form's 'session' field" in deep.json()["error"]["message"]
    assert not stack.a.calls.records and not stack.b.calls.records


async def test_a_calls_sideband_joins_it_on_the_target_that_holds_it(stack: Stack) -> None:
    stack.a.set_fault(RealtimeFault("refuse", status=503))
    async with stack.sdk() as client:
        answer = await client.realtime.calls.create(sdp=OFFER, session=SESSION)
        call_id = answer.response.headers["location"].rsplit("/", 1)[-1]
        stack.a.set_fault(RealtimeFault("none"))  # rt-a first again: the call is on rt-b
        async with client.realtime.connect(call_id=call_id) as conn:
            created = await until(conn, "session.created")
            assert created[-1].session.model == "gpt-realtime"
            await conn.session.update(session={"type": "realtime", "instructions": "shorter"})
            await until(conn, "session.updated")
        with pytest.raises(InvalidStatus) as gone:
            async with client.realtime.connect(call_id="rtc_never_made") as conn:
                await until(conn, "session.created")
    record = stack.b.records[0]
    assert record.query == {"call_id": call_id}  # joined, not a new session: no model
    assert record.session["instructions"] == "shorter"
    # the call no one placed was looked for at both targets (the route's policy order)
    never = {"call_id": "rtc_never_made"}
    assert [r.query for r in stack.a.records] == [never]
    assert [r.query for r in stack.b.records] == [{"call_id": call_id}, never]
    assert gone.value.response.status_code == 404
    assert (
        b"no target of the route 'voice' knows the call 'rtc_never_made'"
        in gone.value.response.body
    )


async def test_a_sideband_to_a_call_placed_elsewhere_finds_its_target(stack: Stack) -> None:
    # An incoming SIP call the app's server joins at once, before any action: the router
    # never saw it, so the route's targets are asked in its policy's order (rt-a: 404,
    # not a failure), and where the session opens the call is remembered.
    async with AsyncOpenAI(base_url=stack.b.base_url, api_key=UPSTREAM_KEY) as direct:
        placed = await direct.realtime.calls.create(sdp=OFFER, session=SESSION)
    call_id = placed.response.headers["location"].rsplit("/", 1)[-1]
    async with stack.sdk() as client:
        for _ in range(2):
            async with client.realtime.connect(call_id=call_id) as conn:
                created = await until(conn, "session.created")
                assert created[-1].session.type == "realtime"
    assert [r.query for r in stack.b.records] == [{"call_id": call_id}] * 2
    assert len(stack.a.records) == 1  # asked once; the second went straight to rt-b
    rt_a = stack.router.router.runtime.realtime.targets["rt-a"]
    assert rt_a.signals.breaker.state == "closed"


async def test_an_action_on_a_call_placed_elsewhere_finds_its_target(stack: Stack) -> None:
    # an incoming SIP call: the provider placed it (here rt-b, asked directly) and told
    # the app by webhook; the router never saw it
    async with AsyncOpenAI(base_url=stack.b.base_url, api_key=UPSTREAM_KEY) as direct:
        placed = await direct.realtime.calls.create(sdp=OFFER, session=SESSION)
    call_id = placed.response.headers["location"].rsplit("/", 1)[-1]
    async with stack.sdk() as client:
        await client.realtime.calls.accept(call_id, type="realtime", model="voice")
        async with client.realtime.connect(call_id=call_id) as conn:  # remembered: rt-b
            await until(conn, "session.created")
    found = stack.b.calls.find(call_id)
    assert found is not None and found.actions[0][0] == "accept"
    assert stack.b.records[-1].query == {"call_id": call_id}
    assert not stack.a.records
    not_here = {"target": "rt-a", "call": "realtime_call", "outcome": "not_here"}
    assert stack.metric("firsttoken_relayed_calls_total", **not_here) == 1
    # searching is not deciding: no routing decision booked for the route
    decided = sum(
        sample.value
        for family in stack.router.router.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "firsttoken_decisions_total" and sample.labels["route"] == "voice"
    )
    assert decided == 0


async def test_a_sideband_search_that_could_not_ask_every_target_is_not_a_404(
    stack: Stack,
) -> None:
    # The call may be on rt-b, whose breaker is open: "unknown" would be a guess.
    rt_b = stack.router.router.runtime.realtime.targets["rt-b"]
    for _ in range(3):
        rt_b.signals.breaker.record_failure()
    async with stack.sdk() as client:
        with pytest.raises(InvalidStatus) as err:
            async with client.realtime.connect(call_id="rtc_elsewhere") as conn:
                await until(conn, "session.created")
        # ... and so is an action on it (asked of rt-a only; no SDK retry, which would
        # wait long enough for the breaker to let a probe through)
        with pytest.raises(InternalServerError) as action:
            await client.with_options(max_retries=0).realtime.calls.accept(
                "rtc_elsewhere", type="realtime", model="voice"
            )
    assert err.value.response.status_code == 503
    assert b"circuit breakers open: rt-b" in err.value.response.body
    assert [r.query for r in stack.a.records] == [{"call_id": "rtc_elsewhere"}]
    assert action.value.status_code == 503
    assert "rt-b: its circuit breaker is open" in action.value.message
    assert not stack.b.calls.records


async def test_a_calls_sideband_asks_for_no_transcription_of_the_routers_own() -> None:
    # `migrate.transcribe` is for sessions the router may move; a call stays with its
    # media, and the browser would see what the router asked for on its data channel
    async with running_stack(HEARD_ROUTE) as stack, stack.sdk() as client:
        session: Any = {**SESSION, "model": "heard"}
        answer = await client.realtime.calls.create(sdp=OFFER, session=session)
        call_id = answer.response.headers["location"].rsplit("/", 1)[-1]
        async with client.realtime.connect(call_id=call_id) as conn:
            await until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "instructions": "shorter"})
            await until(conn, "session.updated")
    record = stack.a.records[0]
    assert record.query == {"call_id": call_id}
    assert record.session["instructions"] == "shorter"
    heard = record.session.get("audio", {}).get("input", {})
    assert heard.get("transcription") is None
