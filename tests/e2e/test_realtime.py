"""/v1/realtime end to end: real clients (the openai SDK, `websockets` as a browser
would use it) -> the router under uvicorn -> Realtime simulators, over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from tests.e2e.harness import start_router, stop_router
from tests.e2e.realtime_stack import (
    ENVIRON,
    KEY,
    LIMITED,
    MINUTES,
    TEXT_ONLY,
    UPSTREAM_KEY,
    USER,
    Stack,
    config,
    running_stack,
)
from tests.sim.conftest import wait_for
from tests.sim.test_realtime import silence, tone, until

pytestmark = pytest.mark.anyio


async def raw_until(ws: Any, kind: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while not seen or seen[-1]["type"] != kind:
            seen.append(json.loads(await ws.recv()))
    return seen


async def admin_targets(stack: Stack) -> dict[str, Any]:
    def get() -> Any:
        return httpx.get(
            f"{stack.router.url}/admin/targets", headers={"authorization": "Bearer sk-admin"}
        ).json()

    return dict(await asyncio.to_thread(get))


# -- sessions through the router ---------------------------------------------------------


async def test_openai_sdk_text_session(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        asked = time.monotonic()  # before the sim's rate_limits.updated
        await conn.response.create()
        events = await until(conn, "response.done")
        admin = await admin_targets(stack)
        read_after_s = time.monotonic() - asked
    kinds = [e.type for e in events]
    assert kinds[0] == "session.created" and kinds[-1] == "response.done"
    assert kinds.index("response.created") < kinds.index("response.output_text.delta")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "You said: hello"
    assert events[-1].response.status == "completed"
    record = stack.a.records[-1]
    assert record.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # never the client's
    rt_a = next(t for t in admin["targets"] if t["name"] == "rt-a")
    assert rt_a["kind"] == "realtime" and rt_a["in_flight"] == 1 and rt_a["ttft_samples"] == 0
    assert rt_a["realtime"]["sessions"] == 1 and rt_a["realtime"]["connect_ms"] > 0
    assert rt_a["price"]["audio_output"] == 64 and admin["realtime_sessions_open"] == 1
    # rate_limits.updated: half the tokens left, refilling over 1.5 s. The router's
    # headroom is back to at most this by the time it was read (a loaded machine can
    # take over a second to get there; a quiet one reads about 0.55).
    assert rt_a["ratelimit_headroom"] <= min(0.5 + 0.5 * read_after_s / 1.5, 0.999)
    labels = {"route": "voice", "target": "rt-a"}
    assert stack.metric("firsttoken_realtime_responses_total", status="completed", **labels) == 1
    assert stack.metric("firsttoken_realtime_cost_usd_total", **labels) > 0
    assert stack.metric("firsttoken_realtime_tokens_total", kind="text_output", **labels) == 4


async def test_openai_sdk_audio_session_with_server_vad(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
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
        for chunk in [tone(20)] * 10 + [silence(20)] * 6:
            await conn.input_audio_buffer.append(audio=chunk)
        events = await until(conn, "response.done")
    kinds = [e.type for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.committed",
        "response.created",
        "response.output_audio.delta",
        "response.done",
    ]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    audio = [e for e in events if e.type == "response.output_audio.delta"]
    assert len(audio) == 3
    ttfa = stack.metric("firsttoken_realtime_ttfa_seconds_count", route="voice", target="rt-a")
    assert ttfa == 1
    labels = {"route": "voice", "target": "rt-a"}
    assert stack.metric("firsttoken_realtime_tokens_total", kind="audio_output", **labels) == 1


async def test_browser_subprotocol_auth(stack: Stack) -> None:
    protocols: Any = ["realtime", f"openai-insecure-api-key.{KEY}"]
    async with websockets.connect(stack.ws_url, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "response.create"}))
        assert (await raw_until(ws, "response.done"))[-1]["response"]["status"] == "completed"
    headers = stack.a.records[-1].headers
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "sec-websocket-protocol" not in headers


# -- refusals at the upgrade --------------------------------------------------------------


async def refused(url: str, key: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=headers):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def test_refusals_are_http_errors_in_openai_shape(stack: Stack) -> None:
    url = stack.ws_url
    status, body = await refused(url, "wrong-key")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert (await refused(url, TEXT_ONLY))[0] == 403
    status, body = await refused(url.replace("voice", "nope"), KEY)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert (await refused(url.replace("voice", "chat"), KEY))[0] == 404  # a text route
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {LIMITED}"}):
        status, body = await refused(url, LIMITED)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    for name in ("rt-a", "rt-b"):
        stack.router.router.runtime.signals[name].breaker.open_for(60)
    status, body = await refused(url, KEY)
    assert status == 503 and body["error"]["code"] == "no_target_available"


# -- failover before session.created -----------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        RealtimeFault("refuse", status=503),
        RealtimeFault("close_before_created", code=1011),
        RealtimeFault("slow_upgrade", delay_s=3.0),  # rt-a's connect_s is 0.5
    ],
    ids=lambda f: f.kind,
)
async def test_failover_before_session_created(stack: Stack, fault: RealtimeFault) -> None:
    stack.a.set_fault(fault)
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[0].type == "session.created" and events[-1].response.status == "completed"
    assert len(stack.b.records) == 1 and stack.b.records[0].responses
    assert stack.b.records[0].headers["x-team"] == "voice"
    assert (
        stack.metric(
            "firsttoken_realtime_session_attempt_failures_total",
            route="voice",
            target="rt-a",
            status_class={"refuse": "5xx", "close_before_created": "protocol"}.get(
                fault.kind, "timeout"
            ),
        )
        == 1
    )


# -- migration ---------------------------------------------------------------------------


async def converse_then(stack: Stack, fail: str) -> list[Any]:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        await until(conn, "response.done")
        await (stack.a.drop(1011) if fail == "1011" else stack.a.expire())
        await asyncio.sleep(0.05)
        await conn.response.create()
        return await until(conn, "response.done")


@pytest.mark.parametrize("fail", ["1011", "session_expired"])
async def test_migration_carries_the_conversation(stack: Stack, fail: str) -> None:
    events = await converse_then(stack, fail)
    assert events[-1].response.status == "completed"
    assert "error" not in [e.type for e in events]
    # after a failure the failed target goes last; an expired session may stay on it
    moved = stack.b.records[-1] if fail == "1011" else stack.a.records[-1]
    assert moved is not stack.a.records[0]
    assert moved.item_texts()[:2] == [("user", "hello"), ("assistant", "You said: hello")]
    assert moved.session["instructions"] == "be brief"
    assert moved.responses and moved.responses[-1].status == "completed"
    reason = "upstream_closed" if fail == "1011" else "session_expired"
    assert stack.metric("firsttoken_realtime_migrations_total", route="voice", reason=reason) == 1


# -- barge-in, disconnect ----------------------------------------------------------------


async def test_barge_in_passes_through(stack: Stack) -> None:
    stack.a.set_fault(RealtimeFault("stall_before_audio"))
    async with websockets.connect(
        stack.ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        await raw_until(ws, "response.created")
        await ws.send(json.dumps({"type": "response.cancel", "event_id": "cancel-1"}))
        done = (await raw_until(ws, "response.done"))[-1]
        truncate = {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": 0,
            "audio_end_ms": 10,
        }
        await ws.send(json.dumps(truncate))
        await raw_until(ws, "error")  # the simulator's answer: no such assistant audio
    assert done["response"]["status"] == "cancelled"
    record = stack.a.records[-1]
    assert len(record.cancels) == 1 and record.cancels[0].response_id is not None
    assert record.truncates[0]["item_id"] == "x"


async def test_client_disconnect_closes_the_upstream_at_once(stack: Stack) -> None:
    ws = await websockets.connect(
        stack.ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}
    )
    await ws.recv()
    record = stack.a.records[-1]
    left = time.monotonic()
    ws.transport.abort()  # gone without a close frame
    for _ in range(2000):
        if record.closed_at is not None:
            break
        await asyncio.sleep(0.001)
    assert record.closed_at is not None
    # measured here: a few milliseconds on loopback (goal 50 ms); bound loosely for CI
    assert record.closed_at - left < 0.5
    assert record.closed_by == "client" and record.close_code == 1000  # a close frame, not a drop


# -- bad input ---------------------------------------------------------------------------


async def session(stack: Stack) -> Any:
    ws = await websockets.connect(
        stack.ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=None
    )
    assert json.loads(await ws.recv())["type"] == "session.created"
    return ws


async def closed_with(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    events = []
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(5):
            while True:
                events.append(json.loads(await ws.recv()))
    return events, info.value.rcvd.code if info.value.rcvd else None


@pytest.mark.parametrize("frame", [b"\x00binary", "not json", '["a list"]'])
async def test_binary_or_non_json_gets_an_error_then_1003(stack: Stack, frame: str | bytes) -> None:
    ws = await session(stack)
    await ws.send(frame)
    events, code = await closed_with(ws)
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "invalid_event"
    assert code == 1003
    await wait_for(lambda: stack.a.records[-1].closed_by is not None)  # the upstream's close
    assert stack.a.records[-1].closed_by == "client" and stack.a.records[-1].bad_frames == 0


async def test_a_frame_over_16_mib_closes_1009(stack: Stack) -> None:
    ws = await session(stack)
    big = '{"type":"input_audio_buffer.append","audio":"' + "A" * (16 * 2**20) + '"}'
    with pytest.raises(ConnectionClosed) as info:
        await ws.send(big)  # the router may close before the whole frame is sent
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    ended = {"route": "voice", "end": "client_closed"}  # by uvicorn, not by the upstream
    await wait_for(lambda: stack.metric("firsttoken_realtime_sessions_ended_total", **ended) > 0)
    assert stack.metric("firsttoken_realtime_sessions_ended_total", **ended) == 1


async def test_unknown_event_types_pass_through(stack: Stack) -> None:
    ws = await session(stack)
    await ws.send(json.dumps({"type": "some.future.event", "event_id": "e7"}))
    events = await raw_until(ws, "error")  # the simulator's own answer, relayed
    await ws.close()
    assert events[-1]["error"]["event_id"] == "e7"
    assert stack.a.records[-1].event_types() == ["some.future.event"]


@pytest.mark.parametrize(
    "session_field",
    ["[" * 50_000 + "]" * 50_000, '{"instructions": NaN}'],
    ids=["nested-too-deep", "not-a-number"],
)
async def test_a_session_update_the_router_cannot_read_passes_and_the_session_goes_on(
    stack: Stack, session_field: str
) -> None:
    ws = await session(stack)
    await ws.send('{"type":"session.update","session":' + session_field + "}")
    await ws.send(json.dumps({"type": "response.create"}))
    done = (await raw_until(ws, "response.done"))[-1]
    assert done["response"]["status"] == "completed"
    assert stack.a.records[-1].event_types()[-1] == "response.create"
    await stack.a.drop(1011)  # a migration replays only what the router could read
    await asyncio.sleep(0.05)
    await ws.send(json.dumps({"type": "response.create"}))
    done = (await raw_until(ws, "response.done"))[-1]
    await ws.close()
    assert done["response"]["status"] == "completed"
    replayed = stack.b.records[-1].event_types()
    assert "session.update" not in replayed and replayed[-1] == "response.create"


async def test_an_idle_session_is_closed_with_an_error(stack: Stack) -> None:
    text = config(stack.a, stack.b).replace("session: {idle_s: 5}", "session: {idle_s: 0.2}")
    router = await start_router(text, environ=ENVIRON)
    try:
        url = f"ws://127.0.0.1:{router.port}/v1/realtime?model=voice"
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {KEY}"}
        ) as ws:
            await ws.recv()
            events, code = await closed_with(ws)
    finally:
        await stop_router(router)
    assert events[-1]["error"]["code"] == "session_idle_timeout" and code == 1000


async def test_a_live_session_moves_even_when_every_breaker_is_open(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await until(conn, "session.created")
        for name in ("rt-a", "rt-b"):  # as after many sessions failed at once
            stack.router.router.runtime.signals[name].breaker.open_for(60)
        await stack.a.drop(1011)
        await asyncio.sleep(0.05)
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert stack.b.records[-1].responses


# -- Azure OpenAI ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "query"),
    [
        ("/openai/v1", "/openai/v1/realtime", {"model": "my-rt"}),
        (
            "/openai?api-version=2025-04-01-preview&deployment=my-rt",
            "/openai/realtime",
            {"api-version": "2025-04-01-preview", "deployment": "my-rt"},
        ),
    ],
    ids=["ga", "preview"],
)
async def test_an_azure_target_gets_its_key_as_api_key(
    base: str, path: str, query: dict[str, str]
) -> None:
    async with RealtimeSim(RealtimeBehaviour(ttfa_s=0.01), api_key=UPSTREAM_KEY) as azure:
        text = f"""
auth:
  keys: [{{name: voice, key_env: KEY_VOICE}}]
targets:
  - {{name: azure-rt, kind: realtime, base_url: 'http://127.0.0.1:{azure.port}{base}',
      model: my-rt, api_key_env: UPSTREAM, auth_header: api-key,
      headers: {{x-team: voice}}, headers_env: {{x-ms-client-request-id: REQUEST_ID}}}}
routes:
  - {{name: voice, targets: [azure-rt]}}
"""
        environ = {**ENVIRON, "UPSTREAM": f" {UPSTREAM_KEY}\n", "REQUEST_ID": "req-42"}
        router = await start_router(text, environ=environ)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key=KEY)
            async with client.realtime.connect(model="voice") as conn:
                await conn.response.create()
                events = await until(conn, "response.done")
        finally:
            await stop_router(router)
    assert events[-1].response.status == "completed"
    record = azure.records[-1]
    assert record.path == path and record.query == query
    assert record.headers["api-key"] == UPSTREAM_KEY and "authorization" not in record.headers
    assert record.headers["x-team"] == "voice"
    assert record.headers["x-ms-client-request-id"] == "req-42"


# -- connect time is a routing signal ----------------------------------------------------


async def test_a_target_slow_to_connect_loses_sessions_under_latency() -> None:
    behaviour = RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=20)
    async with (
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as slow,
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as fast,
    ):
        slow.set_fault(RealtimeFault("slow_upgrade", delay_s=0.3))  # then a normal session
        target = "kind: realtime, model: m, api_key_env: UPSTREAM, expected_ttft_ms: 50"
        text = f"""
targets:
  - {{name: slow, {target}, base_url: '{slow.base_url}'}}
  - {{name: fast, {target}, base_url: '{fast.base_url}'}}
routes:
  - {{name: voice, targets: [slow, fast], policy: {{type: latency}}, exploration: 0}}
"""
        router = await start_router(text, environ=ENVIRON)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused")
            for _ in range(6):
                async with client.realtime.connect(model="voice") as conn:
                    await conn.response.create()
                    await until(conn, "response.done")
            connect = router.router.metrics.registry.get_sample_value(
                "firsttoken_realtime_connect_seconds_sum", {"target": "slow"}
            )
        finally:
            await stop_router(router)
    # the first session may go to either (nothing is known yet); after that, connect time
    # tells two targets equally quick to answer apart
    assert len(slow.records) <= 1 and len(fast.records) >= 5
    assert connect is None or connect >= 0.3  # exported as firsttoken_realtime_connect_seconds


# -- a key's session-minutes -------------------------------------------------------------


async def test_a_key_past_its_session_minutes_is_closed_then_refused(stack: Stack) -> None:
    events: list[Any] = []
    started = time.monotonic()
    async with stack.sdk(MINUTES).realtime.connect(model="voice") as conn:  # 0.6 s a key
        await conn.response.create()
        await until(conn, "response.done")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                while True:
                    events.append(await conn.recv())
    assert time.monotonic() - started >= 0.6
    assert events[-1].type == "error" and events[-1].error.code == "session_minutes_exceeded"
    assert "session-minutes" in events[-1].error.message
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with pytest.raises(InvalidStatus) as refused_:
        async with stack.sdk(MINUTES).realtime.connect(model="voice") as conn:
            await conn.recv()
    response = refused_.value.response
    assert response.status_code == 429
    error = json.loads(response.body or b"{}")["error"]
    assert error["type"] == "rate_limit_error" and "session-minutes" in error["message"]
    # 0.6 s in any hour, all of it spent: back when the whole session leaves the window
    assert 3590 <= int(response.headers["retry-after"]) <= 3600
    ended = {"route": "voice", "end": "session_minutes"}
    assert stack.metric("firsttoken_realtime_sessions_ended_total", **ended) == 1


HEARD_ROUTE = (
    "  - {name: heard, targets: [rt-a, rt-b], policy: {type: ordered},"
    " migrate: {transcribe: whisper-1}}"
)


async def test_a_route_transcribes_for_its_own_copy_so_spoken_turns_migrate() -> None:
    # The client asks for no input transcripts. `migrate.transcribe` has each upstream
    # transcribe anyway, out of the client's sight, so the caller's spoken turn is in the
    # router's copy and reaches the next target when the first dies.
    vad = {"type": "server_vad", "silence_duration_ms": 100}
    async with (
        running_stack(HEARD_ROUTE) as stack,
        stack.sdk().realtime.connect(model="heard") as conn,
    ):
        created = await conn.recv()
        update = {"type": "realtime", "audio": {"input": {"turn_detection": vad}}}
        await conn.session.update(session=update)  # type: ignore[arg-type]
        for chunk in [tone(20)] * 10 + [silence(20)] * 6:
            await conn.input_audio_buffer.append(audio=chunk)
        first = await until(conn, "response.done")
        await stack.a.drop(1011)
        await asyncio.sleep(0.05)
        await conn.response.create()
        second = await until(conn, "response.done")
    kinds = [e.type for e in first + second]
    assert second[-1].response.status == "completed"
    assert not [k for k in kinds if "input_audio_transcription" in k]  # not asked, not shown
    updated = next(e for e in first if e.type == "session.updated")
    assert created.type == "session.created"
    assert created.session.audio.input.transcription is None  # type: ignore[union-attr]
    assert updated.session.audio.input.transcription is None
    # each upstream was asked to transcribe, the client's settings beside it
    for record in (stack.a.records[0], stack.b.records[-1]):
        heard = record.session["audio"]["input"]
        assert heard["transcription"] == {"model": "whisper-1"}
        assert heard["turn_detection"]["silence_duration_ms"] == 100
    said = RealtimeBehaviour().transcript
    assert stack.b.records[-1].item_texts()[0] == ("user", said)
