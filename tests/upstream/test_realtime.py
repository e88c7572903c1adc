"""The realtime upstream client against the Realtime simulator, over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest

from router.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeFault
from router.upstream.realtime import Closed, RealtimeUpstream, realtime_url

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sim() -> AsyncIterator[RealtimeSim]:
    async with RealtimeSim(api_key="target-key") as server:
        yield server


@pytest.fixture
async def upstream(sim: RealtimeSim) -> AsyncIterator[RealtimeUpstream]:
    up = RealtimeUpstream(
        name="rt",
        base_url=sim.base_url,
        model="gpt-realtime",
        api_key="target-key",
        headers={"x-team": "voice"},
        connect_s=0.5,
    )
    yield up
    await up.aclose()


def test_urls_map_http_to_ws() -> None:
    assert (
        realtime_url("https://api.openai.com/v1/", "m")
        == "wss://api.openai.com/v1/realtime?model=m"
    )
    assert realtime_url("http://h:1/v1", "m") == "ws://h:1/v1/realtime?model=m"
    assert realtime_url("wss://h/v1", "m") == "wss://h/v1/realtime?model=m"


def test_a_transcription_session_names_its_intent_and_no_model() -> None:
    # OpenAI: a model in the URL makes a conversation session, which refuses the
    # transcription type; the session.update names the transcription model instead.
    url = realtime_url("https://api.openai.com/v1", "gpt-realtime", transcription=True)
    assert url == "wss://api.openai.com/v1/realtime?intent=transcription"


def test_azure_urls_keep_their_query() -> None:
    azure = "https://res.openai.azure.com/openai"
    assert (
        realtime_url(f"{azure}/v1", "my-deployment")
        == "wss://res.openai.azure.com/openai/v1/realtime?model=my-deployment"
    )
    assert (  # the preview shape: the deployment names the model, as the SDK sends it
        realtime_url(f"{azure}?api-version=2025-04-01-preview&deployment=rt", "m")
        == "wss://res.openai.azure.com/openai/realtime?api-version=2025-04-01-preview&deployment=rt"
    )


async def test_connect_returns_after_session_created(
    sim: RealtimeSim, upstream: RealtimeUpstream
) -> None:
    conn = await upstream.connect()
    assert json.loads(conn.created)["type"] == "session.created"
    assert 0 < conn.connect_s < 0.5
    record = sim.records[-1]
    assert record.query == {"model": "gpt-realtime"}
    assert record.headers["authorization"] == "Bearer target-key"
    assert record.headers["x-team"] == "voice"
    assert "permessage-deflate" not in record.headers.get("sec-websocket-extensions", "")
    await conn.send('{"type":"response.create","event_id":"e1"}')
    kinds = []
    while "response.done" not in kinds:
        frame = await conn.receive()
        assert isinstance(frame, str)
        kinds.append(json.loads(frame)["type"])
    assert kinds[0] == "response.created"
    await conn.close()
    await asyncio.sleep(0.05)
    assert record.closed_by == "client" and record.close_code == 1000


async def test_a_server_close_is_a_closed_frame(
    sim: RealtimeSim, upstream: RealtimeUpstream
) -> None:
    conn = await upstream.connect()
    await sim.drop(1011)
    assert await conn.receive() == Closed(1011, "simulated failure")
    with pytest.raises(UpstreamConnectError):
        await conn.send('{"type":"response.create"}')


async def test_a_refused_upgrade_is_a_status_error(
    sim: RealtimeSim, upstream: RealtimeUpstream
) -> None:
    sim.set_fault(RealtimeFault("refuse", status=429))
    with pytest.raises(UpstreamStatusError) as info:
        await upstream.connect()
    assert info.value.upstream_status == 429 and info.value.retryable


async def test_a_wrong_key_is_a_401(sim: RealtimeSim) -> None:
    up = RealtimeUpstream(name="rt", base_url=sim.base_url, model="m", api_key="wrong")
    with pytest.raises(UpstreamStatusError) as info:
        await up.connect()
    await up.aclose()
    assert info.value.upstream_status == 401


async def test_close_before_session_created_is_a_protocol_error(
    sim: RealtimeSim, upstream: RealtimeUpstream
) -> None:
    sim.set_fault(RealtimeFault("close_before_created", code=1011))
    with pytest.raises(UpstreamProtocolError, match="closed with 1011"):
        await upstream.connect()


@pytest.mark.parametrize("kind", ["hang_before_created", "slow_upgrade"])
async def test_no_session_within_connect_s_is_a_timeout(
    sim: RealtimeSim, upstream: RealtimeUpstream, kind: str
) -> None:
    sim.set_fault(RealtimeFault(kind, delay_s=5.0))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout) as info:
        await upstream.connect()
    assert info.value.phase == "connect"
    assert loop.time() - started < 0.9  # connect_s is 0.5: no close handshake after it


async def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = RealtimeUpstream(name="rt", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(UpstreamConnectError):
        await up.connect()
    await up.aclose()
