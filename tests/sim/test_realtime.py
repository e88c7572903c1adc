"""The Realtime simulator, driven by the official openai SDK and raw `websockets`."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault

pytestmark = pytest.mark.anyio


def tone(ms: int, amplitude: float = 0.3) -> str:
    """`ms` of a 440 Hz tone, 24 kHz PCM16, base64."""
    n = ms * 24
    samples = (round(amplitude * 32767 * math.sin(2 * math.pi * 440 * i / 24000)) for i in range(n))
    return base64.b64encode(struct.pack(f"<{n}h", *samples)).decode()


def silence(ms: int) -> str:
    return base64.b64encode(bytes(ms * 48)).decode()


@pytest.fixture
async def sim() -> AsyncIterator[RealtimeSim]:
    async with RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=100)) as server:
        yield server


async def until(conn: AsyncRealtimeConnection, kind: str) -> list[Any]:
    """Events up to and including the first of type `kind`."""
    seen = []
    async with asyncio.timeout(5):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return seen
    raise AssertionError(f"closed before {kind}")


async def test_text_session_with_the_openai_sdk(sim: RealtimeSim) -> None:
    client = AsyncOpenAI(base_url=sim.base_url, api_key="k")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await until(conn, "session.updated")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi there"}],
            }
        )
        await conn.response.create()
        events = await until(conn, "response.done")
    kinds = [e.type for e in events]
    assert kinds.index("response.created") < kinds.index("response.output_text.delta")
    assert kinds[-1] == "response.done"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: hi there"
    done = events[-1].response
    assert done.status == "completed"
    assert done.usage.output_token_details.text_tokens == math.ceil(len(text) / 4)
    record = sim.records[-1]
    assert record.query["model"] == "gpt-realtime"
    assert record.item_texts() == [("user", "hi there"), ("assistant", "You said: hi there")]


async def test_server_vad_commits_speech_and_answers_in_audio(sim: RealtimeSim) -> None:
    client = AsyncOpenAI(base_url=sim.base_url, api_key="k")
    async with client.realtime.connect(model="m") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 100},
                    }
                },
            }
        )
        for chunk in [silence(20)] * 3 + [tone(20)] * 10 + [silence(20)] * 6:
            await conn.input_audio_buffer.append(audio=chunk)
        events = await until(conn, "response.done")
    kinds = [e.type for e in events]
    for expected in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    ):
        assert expected in kinds
    started = next(e for e in events if e.type == "input_audio_buffer.speech_started")
    assert started.audio_start_ms == 0  # 60 ms in, moved back by the 300 ms prefix padding
    audio = [e for e in events if e.type == "response.output_audio.delta"]
    assert len(audio) == 5 and len(base64.b64decode(audio[0].delta)) == 960
    usage = events[-1].response.usage
    assert usage.input_token_details.audio_tokens == 4  # 0.36 s committed, 10 tokens/s
    assert sim.records[-1].item_texts()[0] == ("user", "hello from the microphone")


async def test_cancel_ends_the_response_and_is_recorded(sim: RealtimeSim) -> None:
    sim.set_fault(RealtimeFault("stall_before_audio"))
    client = AsyncOpenAI(base_url=sim.base_url, api_key="k")
    async with client.realtime.connect(model="m") as conn:
        await conn.response.create()
        await until(conn, "response.created")
        await conn.response.cancel()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "cancelled"
    assert events[-1].response.status_details.reason == "client_cancelled"
    record = sim.records[-1]
    assert [c.response_id for c in record.cancels] == [record.responses[0].id]


async def test_item_ids_are_unique_across_sessions_and_servers(sim: RealtimeSim) -> None:
    # A migrated conversation keeps the ids its first upstream gave; the next upstream's
    # own ids must not meet them (a per-session counter did: `item_id_conflict`).
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
    ids = []
    async with RealtimeSim() as other:
        for server in (sim, other, sim):
            client = AsyncOpenAI(base_url=server.base_url, api_key="k")
            async with client.realtime.connect(model="m") as conn:
                await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
                ids.append((await until(conn, "conversation.item.added"))[-1].item.id)
    assert len(set(ids)) == 3, ids


async def test_an_out_of_band_response_is_cancelled_by_its_id_only(sim: RealtimeSim) -> None:
    # As OpenAI's: a bare response.cancel means the conversation's in-progress response,
    # so an out-of-band one (none running in the conversation) is cancelled by its id.
    sim.set_fault(RealtimeFault("stall_before_audio"))
    client = AsyncOpenAI(base_url=sim.base_url, api_key="k")
    async with client.realtime.connect(model="m") as conn:
        await conn.response.create(response={"conversation": "none"})
        aside = (await until(conn, "response.created"))[-1].response.id
        await conn.response.cancel()
        refused = (await until(conn, "error"))[-1].error
        await conn.response.cancel(response_id=aside)
        done = (await until(conn, "response.done"))[-1].response
    assert refused.code == "response_cancel_not_active"
    assert done.id == aside and done.status == "cancelled"
    assert [c.response_id for c in sim.records[-1].cancels] == [None, aside]


async def test_refused_upgrade_is_an_http_error(sim: RealtimeSim) -> None:
    sim.set_fault(RealtimeFault("refuse", status=503))
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(sim.ws_url + "?model=m"):
            pass
    assert info.value.response.status_code == 503
    assert json.loads(info.value.response.body)["error"]["code"] == "simulated_refusal"


async def test_close_before_session_created(sim: RealtimeSim) -> None:
    sim.set_fault(RealtimeFault("close_before_created", code=1011))
    async with websockets.connect(sim.ws_url) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


async def test_die_mid_response_closes_1011(sim: RealtimeSim) -> None:
    sim.set_fault(RealtimeFault("die_mid_response", after_deltas=2))
    async with websockets.connect(sim.ws_url) as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        kinds = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                kinds.append(json.loads(await ws.recv())["type"])
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert kinds.count("response.output_audio.delta") == 1  # audio, transcript, then the cut
    assert sim.records[-1].closed_by == "server"


async def test_session_expiry_sends_session_expired_then_1001() -> None:
    behaviour = RealtimeBehaviour(session_max_s=0.05)
    async with RealtimeSim(behaviour) as sim, websockets.connect(sim.ws_url) as ws:
        events = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                events.append(json.loads(await ws.recv()))
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "session_expired"
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_browser_subprotocol_auth_and_unknown_events() -> None:
    async with RealtimeSim(api_key="secret") as sim:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(sim.ws_url, subprotocols=["realtime"]):  # type: ignore[list-item]
                pass
        protocols: Any = ["realtime", "openai-insecure-api-key.secret"]
        async with websockets.connect(sim.ws_url, subprotocols=protocols) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(json.dumps({"type": "made.up", "event_id": "e1"}))
            error = json.loads(await ws.recv())
            await ws.send(b"\x00binary")
            binary_error = json.loads(await ws.recv())
        await asyncio.sleep(0.05)
    assert error["error"]["code"] == "invalid_value" and error["error"]["event_id"] == "e1"
    assert binary_error["type"] == "error"
    record = sim.records[-1]
    assert record.event_types() == ["made.up"] and record.bad_frames == 1
    assert record.closed_by == "client" and record.close_code == 1000


async def test_function_call_when_a_tool_is_named(sim: RealtimeSim) -> None:
    tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    async with websockets.connect(sim.ws_url) as ws:
        await ws.send(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "tools": [tool]}})
        )
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "weather in Oslo?"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        events: list[dict[str, Any]] = []
        while not events or events[-1]["type"] != "response.done":
            events.append(json.loads(await ws.recv()))
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["name"] == "weather" and json.loads(done["arguments"]) == {
        "text": "weather in Oslo?"
    }
    assert events[-1]["response"]["output"][0]["type"] == "function_call"
