"""LitellmUpstream against the Anthropic simulator: OpenAI bytes out, our errors, no key leaks."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.config import TargetConfig, Timeouts
from router.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.sim.anthropic import AnthropicSim
from router.sim.behaviour import Behaviour
from router.upstream.base import UpstreamRequest
from router.upstream.litellm import LitellmUpstream

KEY = "sk-ant-litellm-test-key-9f8e7d6c5b4a"
MODEL = "anthropic/claude-3-5-haiku-20241022"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "say four words"}],
    "stream_options": {"include_usage": True},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sim() -> AsyncIterator[AnthropicSim]:
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=4), api_key=KEY) as s:
        yield s


def _config(base_url: str, first_token_s: float = 5.0) -> TargetConfig:
    return TargetConfig(
        name="claude",
        kind="litellm",
        base_url=base_url,
        model=MODEL,
        timeouts=Timeouts(first_token_s=first_token_s),
    )


@pytest.fixture
async def upstream(sim: AnthropicSim) -> AsyncIterator[LitellmUpstream]:
    up = LitellmUpstream(_config(sim.base_url), KEY)
    try:
        yield up
    finally:
        await up.aclose()


def _stream(fault: str | None = None, **body: Any) -> UpstreamRequest:
    return UpstreamRequest(
        "chat",
        {**BODY, "stream": True, **body},
        stream=True,
        headers={"x-sim-fault": fault} if fault else {},
    )


def _frames(raw: bytes) -> list[Any]:
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    out = []
    for block in blocks[:-2]:
        assert block.startswith(b"data: "), block
        out.append(json.loads(block.removeprefix(b"data: ")))
    return out


@pytest.mark.anyio
async def test_stream_becomes_openai_chunks_in_order(upstream: LitellmUpstream) -> None:
    resp = await upstream.send(_stream())
    assert resp.status == 200
    chunks = _frames(await resp.aread())
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(x for x in content if x) == "t0 t1 t2 t3"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.anyio
async def test_usage_chunk_only_when_asked(upstream: LitellmUpstream, sim: AnthropicSim) -> None:
    resp = await upstream.send(_stream(stream_options={"include_usage": False}))
    chunks = _frames(await resp.aread())
    assert all(c["choices"] for c in chunks)
    assert "stream_options" not in sim.requests[-1].body  # Anthropic has no such field


@pytest.mark.anyio
async def test_rate_limit_headers_come_through(upstream: LitellmUpstream) -> None:
    resp = await upstream.send(_stream())
    await resp.aclose()
    assert int(resp.headers["anthropic-ratelimit-requests-remaining"]) > 0
    assert "anthropic-ratelimit-tokens-reset" in resp.headers
    assert all(not k.startswith("llm_provider-") for k in resp.headers)


@pytest.mark.anyio
async def test_non_stream_is_one_openai_body(upstream: LitellmUpstream) -> None:
    request = UpstreamRequest("chat", {**BODY, "stream": False}, stream=False)
    body = json.loads(await (await upstream.send(request)).aread())
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "t0 t1 t2 t3"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.anyio
async def test_plumbing_in_the_body_is_not_passed_to_litellm(upstream: LitellmUpstream) -> None:
    # A client must not be able to redirect the call (and our key) elsewhere.
    resp = await upstream.send(_stream(api_base="http://127.0.0.1:9", mock_response="hi"))
    content = [
        c["choices"][0]["delta"].get("content") for c in _frames(await resp.aread()) if c["choices"]
    ]
    assert "".join(x for x in content if x) == "t0 t1 t2 t3"


@pytest.mark.anyio
async def test_429_is_retryable_with_retry_after(upstream: LitellmUpstream) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await upstream.send(_stream("rate_limited;retry_after=3"))
    err = info.value
    assert (err.upstream_status, err.retryable, err.retry_after_s) == (429, True, 3.0)
    assert json.loads(err.body)["error"]["type"] == "rate_limit_error"


@pytest.mark.anyio
async def test_529_keeps_its_status_and_is_retryable(upstream: LitellmUpstream) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await upstream.send(_stream("status=529"))
    assert (info.value.upstream_status, info.value.retryable) == (529, True)
    assert json.loads(info.value.body)["error"]["type"] == "overloaded_error"


@pytest.mark.anyio
async def test_400_is_not_retryable(upstream: LitellmUpstream) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await upstream.send(_stream("status=400;message=max_tokens too large"))
    assert (info.value.upstream_status, info.value.retryable) == (400, False)
    assert json.loads(info.value.body) == {
        "error": {"message": "max_tokens too large", "type": "invalid_request_error", "code": None}
    }


@pytest.mark.anyio
async def test_completions_endpoint_is_refused_clearly(upstream: LitellmUpstream) -> None:
    request = UpstreamRequest("completions", {"prompt": "hi", "stream": True}, stream=True)
    with pytest.raises(UpstreamStatusError) as info:
        await upstream.send(request)
    assert (info.value.upstream_status, info.value.retryable) == (400, False)
    assert json.loads(info.value.body)["error"]["code"] == "unsupported_endpoint"


@pytest.mark.anyio
async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = LitellmUpstream(_config(f"http://127.0.0.1:{port}"), KEY)
    try:
        with pytest.raises(UpstreamConnectError):
            await up.send(_stream())
    finally:
        await up.aclose()


@pytest.mark.anyio
async def test_hang_before_first_token_times_out_and_cancels(sim: AnthropicSim) -> None:
    up = LitellmUpstream(_config(sim.base_url, first_token_s=0.3), KEY)
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await up.send(_stream("hang_before_first_token"))
    finally:
        await up.aclose()
    assert info.value.phase == "first_token"
    assert await sim.wait_cancelled(sim.requests[-1], 1.0) is not None


@pytest.mark.anyio
async def test_malformed_first_frame_is_a_protocol_error(upstream: LitellmUpstream) -> None:
    with pytest.raises(UpstreamProtocolError):
        await upstream.send(_stream("malformed"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("error_event_after=2", UpstreamStatusError),
        ("die_after=2", UpstreamConnectError),
    ],
)
async def test_failure_after_first_token_raises_from_the_body(
    upstream: LitellmUpstream, fault: str, error: type[UpstreamError]
) -> None:
    resp = await upstream.send(_stream(fault))
    got: list[bytes] = []
    with pytest.raises(error) as info:
        async for frame in resp.aiter_bytes():
            got.append(frame)
    assert len(got) == 2 and b'"t0"' in got[0]
    assert info.value.retryable


@pytest.mark.anyio
async def test_aclose_mid_stream_cancels_at_the_provider() -> None:
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.02, tokens=500), api_key=KEY) as sim:
        up = LitellmUpstream(_config(sim.base_url), KEY)
        try:
            resp = await up.send(_stream())
            frames = resp.aiter_bytes()
            await frames.__anext__()
            await frames.__anext__()
            await resp.aclose()
            record = sim.requests[-1]
            assert await sim.wait_cancelled(record, 1.0) is not None
            assert record.tokens_sent < 500
        finally:
            await up.aclose()


@pytest.mark.anyio
async def test_the_key_never_leaks(
    sim: AnthropicSim, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="LiteLLM")
    up = LitellmUpstream(_config(sim.base_url), KEY)
    messages = [repr(up)]
    try:
        for fault in (
            "rate_limited",
            "status=529",
            "status=400",
            "status=500",
            "malformed",
            "error_event_after=1",
            "die_after=1",
        ):
            try:
                resp = await up.send(_stream(fault))
                await resp.aread()
            except UpstreamError as exc:
                messages += [str(exc), repr(exc), exc.to_json().decode()]
                if isinstance(exc, UpstreamStatusError):
                    messages.append(exc.body.decode())
        sim_with_other_key = LitellmUpstream(_config(sim.base_url), KEY + "-wrong")
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await sim_with_other_key.send(_stream())
            assert info.value.upstream_status == 401
            messages.append(str(info.value))
        finally:
            await sim_with_other_key.aclose()
    finally:
        await up.aclose()
    captured = capsys.readouterr()
    assert len(messages) > 10
    for text in (*messages, caplog.text, captured.out, captured.err, repr(sim.requests)):
        assert KEY not in text
