"""Ephemeral keys for realtime sessions, end to end: the openai SDK's
`client.realtime.client_secrets.create()` against the router, the key opening a
session from the SDK and from a browser-style client, its configuration applied before
the client's first event and carried across a migration, and every refusal."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from openai import (
    AsyncOpenAI,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
)

from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour
from tests.e2e.harness import start_router, stop_router
from tests.e2e.realtime_stack import (
    ENVIRON,
    KEY,
    LIMITED,
    TEXT_ONLY,
    UPSTREAM_KEY,
    USER,
    Stack,
    config,
)
from tests.e2e.test_realtime import refused
from tests.sim.test_realtime import until

pytestmark = pytest.mark.anyio

SESSION = {
    "type": "realtime",
    "model": "voice",
    "instructions": "Be brief.",
    "output_modalities": ["text"],
}


async def mint(stack: Stack, key: str = KEY, **params: Any) -> Any:
    params.setdefault("session", SESSION)
    async with stack.sdk(key) as client:
        return await client.realtime.client_secrets.create(**params)


async def test_the_sdk_mints_a_key_that_opens_a_configured_session(stack: Stack) -> None:
    before = time.time()
    secret = await mint(stack, expires_after={"anchor": "created_at", "seconds": 120})
    assert secret.value.startswith("ek_") and KEY not in secret.value
    assert before + 119 <= secret.expires_at <= time.time() + 121
    assert secret.session.model == "voice" and secret.session.instructions == "Be brief."
    page = AsyncOpenAI(base_url=stack.router.base_url, api_key=secret.value)
    async with page, page.realtime.connect(model="voice") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.instructions == "Be brief."  # type: ignore[union-attr]
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        events = await until(conn, "response.done")
    kinds = [e.type for e in events]
    assert "session.updated" not in kinds  # the router's own update is not relayed
    assert events[-1].response.status == "completed"
    record = stack.a.records[-1]
    assert record.session["instructions"] == "Be brief."
    assert record.session["output_modalities"] == ["text"]
    assert record.event_types()[0] == "session.update"  # before anything of the client's
    assert record.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_a_browser_opens_its_session_with_the_key_in_a_subprotocol(stack: Stack) -> None:
    secret = await mint(stack)
    url = f"ws://127.0.0.1:{stack.router.port}/v1/realtime"  # the key names the route
    protocols: Any = ["realtime", f"openai-insecure-api-key.{secret.value}"]
    async with websockets.connect(url, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        created = json.loads(await ws.recv())
        assert created["session"]["instructions"] == "Be brief."
        await ws.send(json.dumps({"type": "response.create"}))
        async with asyncio.timeout(5):
            while (event := json.loads(await ws.recv()))["type"] != "response.done":
                pass
    assert event["response"]["status"] == "completed"


async def test_a_migrated_session_keeps_the_keys_configuration(stack: Stack) -> None:
    secret = await mint(stack)
    page = AsyncOpenAI(base_url=stack.router.base_url, api_key=secret.value)
    async with page, page.realtime.connect(model="voice") as conn:
        await conn.response.create()
        await until(conn, "response.done")
        await stack.a.drop(1011)
        await asyncio.sleep(0.05)
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert stack.b.records[-1].session["instructions"] == "Be brief."


async def test_minting_needs_a_key_that_may_use_a_realtime_route(stack: Stack) -> None:
    with pytest.raises(AuthenticationError):
        await mint(stack, key="sk-wrong")
    with pytest.raises(PermissionDeniedError):
        await mint(stack, key=TEXT_ONLY)  # its key may use `chat` only
    with pytest.raises(NotFoundError) as missing:
        await mint(stack, session={"type": "realtime", "model": "chat"})  # not realtime
    assert "realtime routes here: voice" in missing.value.message
    with pytest.raises(BadRequestError) as bad:
        await mint(stack, session={"type": "translation"})
    assert "'realtime' or 'transcription' sessions" in bad.value.message
    with pytest.raises(BadRequestError) as bad:
        await mint(stack, expires_after={"anchor": "created_at", "seconds": 5})
    assert "10 to 7200" in bad.value.message
    # Without session.model: the only realtime route the key may use.
    secret = await mint(stack, session={"type": "realtime"})
    assert secret.session.model == "voice"


async def test_an_ephemeral_key_is_refused_everywhere_but_its_own_sessions(
    stack: Stack,
) -> None:
    secret = await mint(stack)
    async with httpx.AsyncClient() as http:
        chat = await http.post(
            f"{stack.router.base_url}/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {secret.value}"},
        )
    assert chat.status_code == 401 and "realtime sessions only" in chat.json()["error"]["message"]
    other = stack.ws_url.replace("voice", "chat")
    status, body = await refused(other, secret.value)
    assert status == 403 and "route 'voice'" in body["error"]["message"]
    payload, _, mac = secret.value.partition(".")
    status, body = await refused(stack.ws_url, f"{payload}x.{mac}")
    assert status == 401 and "invalid ephemeral key" in body["error"]["message"]


async def test_an_ephemeral_session_counts_against_the_key_that_asked_for_it(
    stack: Stack,
) -> None:
    secret = await mint(stack, key=LIMITED)  # max_sessions: 1
    headers = {"Authorization": f"Bearer {secret.value}"}
    async with websockets.connect(stack.ws_url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        status, body = await refused(stack.ws_url, secret.value)
        assert status == 429 and "'limited'" in body["error"]["message"]


async def test_replicas_with_one_signing_key_accept_each_others_keys() -> None:
    behaviour = RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=60)
    environ = {**ENVIRON, "SIGNING": "a-shared-secret-of-enough-length"}
    async with (
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as a,
        RealtimeSim(behaviour, api_key=UPSTREAM_KEY) as b,
    ):
        shared = config(a, b).replace("auth:\n", "auth:\n  client_secret_key_env: SIGNING\n", 1)
        routers = [await start_router(shared, environ=environ) for _ in range(2)]
        alone = await start_router(config(a, b), environ=ENVIRON)
        try:
            one = Stack(a, b, routers[0])
            secret = await mint(one)
            for router in (routers[1], alone):
                url = f"ws://127.0.0.1:{router.port}/v1/realtime?model=voice"
                headers = {"Authorization": f"Bearer {secret.value}"}
                if router is alone:  # its own random signing key
                    assert (await refused(url, secret.value))[0] == 401
                    continue
                async with websockets.connect(url, additional_headers=headers) as ws:
                    assert json.loads(await ws.recv())["type"] == "session.created"
        finally:
            for router in (*routers, alone):
                await stop_router(router)
