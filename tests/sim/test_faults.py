from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import httpx
import pytest

from router.sim.behaviour import Behaviour, Fault, FaultSyntaxError
from router.sim.openai_server import OpenAISim
from tests.sim.conftest import chat_body, hang_up, open_raw_stream, sse_events, wait_for

pytestmark = pytest.mark.anyio

STREAM = chat_body(stream=True)


async def post(
    client: httpx.AsyncClient, sim: OpenAISim, fault: str | None = None, body: object = STREAM
) -> httpx.Response:
    headers = {"x-sim-fault": fault} if fault else {}
    return await client.post(f"{sim.base_url}/chat/completions", json=body, headers=headers)


def test_fault_header_syntax() -> None:
    assert Fault.parse("status=503;retry_after=2") == Fault("status", 503, retry_after_s=2.0)
    assert Fault.parse("die_after=3").after_tokens == 3
    assert Fault.parse("trickle=0.25").trickle_s == 0.25
    assert Fault.parse("rate_limited=4").retry_after_s == 4.0
    for bad in ("explode", "malformed=3", "status=abc", "status;colour=red"):
        with pytest.raises(FaultSyntaxError):
            Fault.parse(bad)


async def test_bad_fault_header_is_a_400(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    assert (await post(client, sim, "explode")).status_code == 400


async def test_status_per_request_and_per_server(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    r = await post(client, sim, "status=503;retry_after=2")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]["type"] == "server_error"
    assert (await post(client, sim)).status_code == 200  # only that request
    await sim.set_fault(Fault("status", 404, message="no such model"))
    r = await post(client, sim)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no such model"
    assert "retry-after" not in r.headers
    assert sim.records[-1].fault == "status"


async def test_a_padded_error_body_is_that_large_and_still_openai_json(
    sim: OpenAISim, client: httpx.AsyncClient
) -> None:
    r = await post(client, sim, "status=500;body_bytes=300000;message=huge")
    assert r.status_code == 500
    assert len(r.content) == 300000
    assert r.json()["error"]["message"] == "huge"
    assert Fault.parse("status=500;body_bytes=52428800").body_bytes == 50 * 2**20


async def test_rate_limited(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    r = await post(client, sim, "rate_limited;retry_after=3")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"] == "3s"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"


async def test_die_after_cuts_without_done(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST",
            f"{sim.base_url}/chat/completions",
            json=STREAM,
            headers={"x-sim-fault": "die_after=2"},
        ) as r:
            async for line in r.aiter_lines():
                seen.append(line)
    assert sum('"content":"t' in line for line in seen) == 2
    assert not any("[DONE]" in line for line in seen)
    record = sim.records[-1]
    assert record.tokens_sent == 2
    assert record.cancelled_at is None  # the server cut it, the client did not leave


async def test_error_event_after(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    events = sse_events((await post(client, sim, "error_event_after=2")).text)
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == ["t0 ", "t1 "]
    assert events[3]["error"]["message"] == "simulated failure"
    assert events[4] == "[DONE]"


async def test_malformed_first_frame(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    r = await post(client, sim, "malformed")
    assert r.status_code == 200
    first = r.text.split("\n\n")[0]
    assert first.startswith("data: ")
    with pytest.raises(ValueError):
        __import__("json").loads(first[6:])


async def test_reset_after_headers(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        async with client.stream(
            "POST",
            f"{sim.base_url}/chat/completions",
            json=STREAM,
            headers={"x-sim-fault": "reset_after_headers"},
        ) as r:
            assert r.status_code == 200
            await r.aread()


async def test_hang_before_first_token_sends_role_then_nothing(sim: OpenAISim) -> None:
    reader, writer = await open_raw_stream(
        sim.port, STREAM, {"x-sim-fault": "hang_before_first_token"}
    )
    head = await reader.readuntil(b'"role":"assistant"')
    assert head.startswith(b"HTTP/1.1 200")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readuntil(b'"t0 "'), 0.2)
    await hang_up(writer)
    await wait_for(lambda: sim.records[-1].cancelled_at is not None)


async def test_hang_before_headers(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            f"{sim.base_url}/chat/completions",
            json=STREAM,
            headers={"x-sim-fault": "hang_before_headers"},
            timeout=0.2,
        )
    await wait_for(lambda: sim.records[-1].cancelled_at is not None)
    assert sim.records[-1].status is None


async def test_trickle_slows_tokens(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    r = await post(client, sim, "trickle=0.05")
    assert len([e for e in sse_events(r.text) if e != "[DONE]"]) == 7
    assert time.monotonic() - started >= 4 * 0.05


async def test_refuse_closes_and_reopens_the_port(
    sim: OpenAISim, client: httpx.AsyncClient
) -> None:
    port = sim.port
    await sim.set_fault(Fault("refuse"))
    with pytest.raises(httpx.ConnectError):
        await post(client, sim)
    await sim.set_behaviour(replace(sim.behaviour, fault=Fault()))
    assert sim.port == port
    assert (await post(client, sim)).status_code == 200


async def test_disconnect_before_first_token_is_noticed_at_once() -> None:
    async with OpenAISim(Behaviour(ttft_s=5.0)) as slow:
        reader, writer = await open_raw_stream(slow.port, STREAM)
        await reader.readuntil(b'"role":"assistant"')
        closed_at = time.monotonic()
        await hang_up(writer)
        await wait_for(lambda: slow.records[-1].cancelled_at is not None)
        record = slow.records[-1]
        assert record.cancelled_at is not None
        # noticed while the handler slept towards a 5 s first token
        assert record.cancelled_at - closed_at < 0.5
        assert record.tokens_sent == 0
        assert record.finished_at is None


async def test_disconnect_mid_stream(sim: OpenAISim) -> None:
    sim.behaviour = Behaviour(ttft_s=0.0, itl_s=0.5, tokens=10)
    reader, writer = await open_raw_stream(sim.port, STREAM)
    await reader.readuntil(b'"t0 "')
    await hang_up(writer)
    await wait_for(lambda: sim.records[-1].cancelled_at is not None)
    assert sim.records[-1].tokens_sent == 1
