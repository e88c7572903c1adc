"""Responses and embeddings through litellm, below the router: what a body becomes as
litellm's arguments, what litellm's objects become on the wire, and a `LitellmUpstream`
against the simulators (its stream ends in error, never silently short)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.config import TargetConfig, Timeouts
from router.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from router.upstream.base import UpstreamRequest
from router.upstream.litellm import LitellmUpstream
from router.upstream.litellm_responses import (
    embeddings_kwargs,
    event_frame,
    responses_kwargs,
    responses_usage,
)
from tests.upstream.rawserver import SSE_HEAD, chunked, serving

KEY = "sk-lx-unit-0b5e2c44d1f3"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_clients_fields_never_become_litellms_own_arguments() -> None:
    body = {
        "model": "route",
        "input": "hi",
        "instructions": "be brief",
        "stream": True,
        "api_base": "http://evil.example/v1",
        "api_key": "stolen",
        "mock_response": "x",
        "x_vendor_knob": 1,
    }
    kwargs = responses_kwargs(body)
    assert kwargs["input"] == "hi" and kwargs["instructions"] == "be brief"
    assert not {"api_base", "api_key", "mock_response", "model", "stream"} & set(kwargs)
    # unknown fields travel in the provider's HTTP body, as they would to OpenAI
    assert kwargs["extra_body"] == {
        "api_base": "http://evil.example/v1",
        "api_key": "stolen",
        "mock_response": "x",
        "x_vendor_knob": 1,
    }
    passed, dropped = embeddings_kwargs(
        {"model": "r", "input": ["a"], "encoding_format": "base64", "api_base": "x"}
    )
    assert passed == {"input": ["a"], "encoding_format": "base64"} and dropped == ["api_base"]


def test_usage_is_openais_responses_usage_whatever_litellm_attached() -> None:
    openai_shape = {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3, "text_tokens": None},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 12,
        "cost": 0.01,  # litellm's reckoning, not the provider's
    }
    chat_shape = {
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    want = {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 12,
    }
    assert responses_usage(openai_shape) == want
    assert responses_usage(chat_shape) == want
    assert responses_usage(None) is None


def test_an_event_leaves_as_an_sse_frame_numbered_in_order() -> None:
    event = {"type": "response.completed", "response": {"usage": {"prompt_tokens": 1}}}
    kind, frame = event_frame(event, 9)
    assert kind == "response.completed"
    head, data = frame.split(b"\n", 1)
    assert head == b"event: response.completed" and frame.endswith(b"\n\n")
    payload = json.loads(data.removeprefix(b"data: "))
    assert payload["sequence_number"] == 9
    assert payload["response"]["usage"]["input_tokens"] == 1


@pytest.fixture
async def sim() -> AsyncIterator[OpenAISim]:
    s = OpenAISim(Behaviour(ttft_s=0.0, itl_s=0.001, tokens=4), model="gpt-4.1-mini")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def _upstream(base_url: str) -> LitellmUpstream:
    config = TargetConfig(
        name="lx",
        kind="litellm",
        base_url=base_url,
        model="openai/gpt-4.1-mini",
        timeouts=Timeouts(first_token_s=10.0, idle_s=10.0),
    )
    return LitellmUpstream(config, KEY)


async def _read(up: LitellmUpstream, body: dict[str, Any]) -> list[bytes]:
    response = await up.send(UpstreamRequest("responses", body, stream=True))
    try:
        return [frame async for frame in response.aiter_bytes()]
    finally:
        await response.aclose()


@pytest.mark.anyio
async def test_a_stream_cut_by_the_provider_is_an_error_not_a_short_answer(
    sim: OpenAISim,
) -> None:
    up = _upstream(sim.base_url)
    try:
        frames = await _read(up, {"input": "hi"})
        assert frames[-1].startswith(b"event: response.completed")
        await sim.set_behaviour(
            Behaviour(ttft_s=0.0, tokens=4, fault=Fault("die_after", after_tokens=2))
        )
        got: list[bytes] = []
        response = await up.send(UpstreamRequest("responses", {"input": "hi"}, stream=True))
        with pytest.raises(UpstreamError):
            async for frame in response.aiter_bytes():
                got.append(frame)
        await response.aclose()
        assert any(b"response.output_text.delta" in f for f in got)
        assert not any(b"response.completed" in f for f in got)
    finally:
        await up.aclose()


@pytest.mark.anyio
async def test_a_bridged_target_says_it_stores_no_responses() -> None:
    config = TargetConfig(
        name="claude", kind="litellm", base_url="http://127.0.0.1:9", model="anthropic/claude-x"
    )
    up = LitellmUpstream(config, KEY)
    try:
        assert not up.stores_responses
        for request, status in [
            (UpstreamRequest("responses", {}, False, method="GET", path="/responses/r"), 404),
            (UpstreamRequest("responses", {"input": "x", "conversation": "c"}, stream=True), 400),
        ]:
            with pytest.raises(UpstreamStatusError) as info:
                await up.send(request)  # nothing reaches the (absent) provider
            assert info.value.upstream_status == status
            assert "stores no responses" in json.loads(info.value.body)["error"]["message"]
    finally:
        await up.aclose()


def _event(kind: str, **fields: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (
        kind.encode(),
        json.dumps({"type": kind, **fields}).encode(),
    )


@pytest.mark.anyio
async def test_a_stream_that_ends_cleanly_before_its_last_event_is_an_error() -> None:
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    delta = {"item_id": "m", "output_index": 0, "content_index": 0, "delta": "t0 "}
    body = _event("response.created", response=response, sequence_number=0) + _event(
        "response.output_text.delta", **delta, sequence_number=1
    )  # and then a clean end: no response.completed

    def answer(request: bytes, writer: Any) -> None:
        writer.write(SSE_HEAD + chunked(body))

    async with serving(answer) as server:
        up = _upstream(f"http://127.0.0.1:{server.port}/v1")
        try:
            # litellm notices this itself on its native path; `_events` on every path
            with pytest.raises((UpstreamConnectError, UpstreamProtocolError)):
                await _read(up, {"input": "hi"})
        finally:
            await up.aclose()
