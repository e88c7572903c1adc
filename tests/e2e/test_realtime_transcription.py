"""Realtime transcription sessions (`/v1/realtime?intent=transcription`) through the
router, with the official `openai` SDK as the client and Realtime simulators behind
it: the upstream session is opened with the intent and no model, the transcript
events arrive, and the session fails over and migrates with its configuration."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from router.sim.realtime_behaviour import RealtimeFault
from tests.e2e.realtime_stack import KEY, Stack, running_stack
from tests.e2e.test_realtime import admin_targets
from tests.replicas.helpers import wait_until
from tests.sim.test_realtime import silence, tone, until

pytestmark = pytest.mark.anyio
TRANSCRIBE: Any = {
    "type": "transcription",
    "audio": {
        "input": {
            "transcription": {"model": "gpt-live-transcribe"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 100},
        }
    },
}
SPEECH = [tone(20)] * 10 + [silence(20)] * 6


async def transcribe_one_turn(conn: Any) -> list[Any]:
    for chunk in SPEECH:
        await conn.input_audio_buffer.append(audio=chunk)
    return await until(conn, "conversation.item.input_audio_transcription.completed")


async def test_the_sdk_opens_a_transcription_session_on_the_only_realtime_route(
    stack: Stack,
) -> None:
    # As OpenAI's guide says: no model in the URL, the intent, then the session's type.
    async with stack.sdk().realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await until(conn, "session.created")
        assert created[-1].session.type == "transcription"
        await conn.session.update(session=TRANSCRIBE)
        events = await transcribe_one_turn(conn)
    kinds = [e.type for e in events]
    assert "conversation.item.input_audio_transcription.delta" in kinds
    assert "response.created" not in kinds  # a transcript, no answer
    record = stack.a.records[-1]
    assert record.query == {"intent": "transcription"}  # no model upstream
    assert record.session["type"] == "transcription"
    assert record.session["audio"]["input"]["transcription"]["model"] == "gpt-live-transcribe"
    assert not record.responses
    # no answer was asked for: nothing is timed as one; the transcript is timed
    assert stack.metric("firsttoken_realtime_ttfa_seconds_count", route="voice", target="rt-a") == 0
    labels = {"route": "voice", "target": "rt-a"}
    assert stack.metric("firsttoken_realtime_transcript_seconds_count", **labels) == 1
    # transcribing is billed at the target's transcription price, by the minute here
    seconds = events[-1].usage.seconds
    assert stack.metric("firsttoken_realtime_cost_usd_total", **labels) == pytest.approx(
        seconds / 60 * 0.006
    )
    rt_a = stack.router.router.runtime.realtime.targets["rt-a"]
    assert rt_a.transcript.samples == 1  # what the route's policy ranks it on next time
    assert rt_a.signals.ttft_sketch.count == 0
    shown = next(t for t in (await admin_targets(stack))["targets"] if t["name"] == "rt-a")
    assert shown["realtime"]["transcript_samples"] == 1
    assert shown["realtime"]["transcript_ewma_ms"] > 0
    assert shown["price"]["transcription"]["per_minute"] == 0.006


async def test_a_transcription_session_fails_over_and_migrates_with_its_configuration(
    stack: Stack,
) -> None:
    stack.a.set_fault(RealtimeFault("close_before_created"))
    intent = {"intent": "transcription"}
    async with stack.sdk().realtime.connect(model="voice", extra_query=intent) as conn:
        await conn.session.update(session=TRANSCRIBE)
        await transcribe_one_turn(conn)
        assert len(stack.b.records) == 1  # a refused before session.created: b took it
        stack.a.set_fault(RealtimeFault("none"))
        await stack.b.drop(1011)
        await asyncio.sleep(0.05)
        events = await transcribe_one_turn(conn)  # answered on the new upstream
    assert events[-1].transcript
    moved = stack.a.records[-1]
    assert moved.query == {"intent": "transcription"}
    assert moved.session["type"] == "transcription"  # the configuration was replayed
    assert moved.session["audio"]["input"]["transcription"]["model"] == "gpt-live-transcribe"
    assert "conversation.item.create" not in moved.event_types()  # nothing to carry
    assert stack.metric(
        "firsttoken_realtime_migrations_total", route="voice", reason="upstream_closed"
    )


async def test_an_unknown_intent_is_a_400_at_the_upgrade(stack: Stack) -> None:
    url = f"ws://127.0.0.1:{stack.router.port}/v1/realtime?intent=translation"
    with pytest.raises(InvalidStatus) as err:
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}):
            pass
    assert err.value.response.status_code == 400
    assert b"unknown intent 'translation'" in err.value.response.body


async def test_an_ephemeral_key_for_transcription_opens_a_transcription_session(
    stack: Stack,
) -> None:
    async with stack.sdk() as client:
        secret = await client.realtime.client_secrets.create(session=TRANSCRIBE)
    assert secret.session.type == "transcription"
    # A page: the key in a subprotocol, the URL with no model and no intent.
    url = f"ws://127.0.0.1:{stack.router.port}/v1/realtime"
    protocols: Any = ["realtime", f"openai-insecure-api-key.{secret.value}"]
    async with websockets.connect(url, subprotocols=protocols) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        for chunk in SPEECH:
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        kinds: list[str] = []
        async with asyncio.timeout(5):
            while "conversation.item.input_audio_transcription.completed" not in kinds:
                kinds.append(json.loads(await ws.recv())["type"])
    record = stack.a.records[-1]
    assert record.query == {"intent": "transcription"}
    assert record.event_types()[0] == "session.update"  # the key's configuration, first
    assert record.session["audio"]["input"]["transcription"]["model"] == "gpt-live-transcribe"
    # a key made for a conversation is not a transcription session's
    async with stack.sdk() as client:
        plain = await client.realtime.client_secrets.create(
            session={"type": "realtime", "model": "voice"}
        )
    protocols = ["realtime", f"openai-insecure-api-key.{plain.value}"]
    with pytest.raises(InvalidStatus) as err:
        async with websockets.connect(f"{url}?intent=transcription", subprotocols=protocols):
            pass
    assert err.value.response.status_code == 400


LISTEN = "  - {name: listen, targets: [rt-a, rt-b], policy: {type: latency}}"


async def test_transcription_sessions_go_to_the_target_that_transcribes_soonest() -> None:
    async with running_stack(extra_route=LISTEN) as stack:
        stack.a.behaviour = replace(stack.a.behaviour, transcript_s=0.3)  # rt-a first in order
        intent = {"intent": "transcription", "model": "listen"}
        for _ in range(6):
            async with stack.sdk().realtime.connect(extra_query=intent) as conn:
                await conn.session.update(session=TRANSCRIBE)
                await transcribe_one_turn(conn)
        # both were tried (an unmeasured target is explored), then rt-b kept every session
        a, b = list(stack.a.records), list(stack.b.records)
        assert a and len(b) >= 4
        assert all(r.query == {"intent": "transcription"} for r in a + b)
        last_three = sorted(a + b, key=lambda r: r.opened_at)[-3:]
        assert all(r in b for r in last_three)


async def speak_and_fail(conn: Any) -> Any:
    for chunk in SPEECH:
        await conn.input_audio_buffer.append(audio=chunk)
    return (await until(conn, "conversation.item.input_audio_transcription.failed"))[-1]


async def test_a_target_that_fails_every_transcription_is_left_by_its_live_session(
    stack: Stack,
) -> None:
    # rt-a fails each transcription with its own server_error: the event reaches the
    # client as sent, is counted, and counts against rt-a's breaker; at the third
    # (breaker_failures: 3) it opens and the live session moves to rt-b, which
    # transcribes the next turn.
    stack.a.behaviour = replace(stack.a.behaviour, transcript_error="server_error")
    intent = {"intent": "transcription"}
    async with stack.sdk().realtime.connect(model="voice", extra_query=intent) as conn:
        await conn.session.update(session=TRANSCRIBE)
        for _ in range(3):
            failed = await speak_and_fail(conn)
            assert failed.error.type == "server_error"
        assert await wait_until(lambda: bool(stack.b.records), within=5.0)  # moved
        events = await transcribe_one_turn(conn)
    assert events[-1].transcript == "hello from the microphone"
    labels = {"route": "voice", "target": "rt-a"}
    assert (
        stack.metric(
            "firsttoken_realtime_transcription_failures_total", **labels, cause="server_error"
        )
        == 3
    )
    assert (
        stack.metric("firsttoken_realtime_migrations_total", route="voice", reason="breaker_open")
        == 1
    )
    rt_a = stack.router.router.runtime.realtime.targets["rt-a"]
    assert rt_a.signals.breaker.state == "open"
    assert rt_a.transcript.samples == 3  # three censored samples: no transcript by then


async def test_a_transcription_refused_for_its_audio_leaves_the_breaker_alone(
    stack: Stack,
) -> None:
    # The upstream refuses the audio (not its own failure): one client's input must not
    # open a target's breaker for every other session.
    stack.a.behaviour = replace(stack.a.behaviour, transcript_error="invalid_request_error")
    intent = {"intent": "transcription"}
    async with stack.sdk().realtime.connect(model="voice", extra_query=intent) as conn:
        await conn.session.update(session=TRANSCRIBE)
        for _ in range(4):
            failed = await speak_and_fail(conn)
            assert failed.error.type == "invalid_request_error"
    labels = {"route": "voice", "target": "rt-a", "cause": "other"}
    assert stack.metric("firsttoken_realtime_transcription_failures_total", **labels) == 4
    rt_a = stack.router.router.runtime.realtime.targets["rt-a"]
    assert rt_a.signals.breaker.state == "closed"
    assert not stack.b.records
