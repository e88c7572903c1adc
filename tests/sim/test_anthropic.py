"""The Anthropic simulator speaks the Messages API the way Anthropic does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest

from router.sim.anthropic import REDACTED, AnthropicSim
from router.sim.behaviour import Behaviour

KEY = "sk-ant-sim-test-key-0123456789"
BODY: dict[str, Any] = {
    "model": "claude-3-5-haiku-20241022",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "say four words"}],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sim() -> AsyncIterator[AnthropicSim]:
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=4), api_key=KEY) as s:
        yield s


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        out.append((lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))))
    return out


async def _post(
    sim: AnthropicSim, body: dict[str, Any], headers: dict[str, str] | None = None, key: str = KEY
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.base_url) as client:
        return await client.post(
            "/v1/messages", json=body, headers={"x-api-key": key, **(headers or {})}
        )


@pytest.mark.anyio
async def test_stream_sends_anthropics_events_in_order(sim: AnthropicSim) -> None:
    resp = await _post(sim, {**BODY, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _events(resp.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 3
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "t0 t1 t2 t3"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 4


@pytest.mark.anyio
async def test_non_stream_answer_and_max_tokens(sim: AnthropicSim) -> None:
    resp = await _post(sim, {**BODY, "max_tokens": 2})
    body = resp.json()
    assert body["type"] == "message"
    assert body["content"] == [{"type": "text", "text": "t0 t1"}]
    assert body["stop_reason"] == "max_tokens"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.anyio
async def test_rate_limit_headers_on_every_answer(sim: AnthropicSim) -> None:
    resp = await _post(sim, BODY)
    for kind in ("requests", "tokens"):
        assert int(resp.headers[f"anthropic-ratelimit-{kind}-limit"]) > 0
        assert int(resp.headers[f"anthropic-ratelimit-{kind}-remaining"]) > 0
        reset = datetime.fromisoformat(resp.headers[f"anthropic-ratelimit-{kind}-reset"])
        assert reset.tzinfo is not None
    assert resp.headers["request-id"].startswith("req_")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [
        ("rate_limited;retry_after=7", 429, "rate_limit_error"),
        ("status=529", 529, "overloaded_error"),
        ("status=500", 500, "api_error"),
        ("status=400", 400, "invalid_request_error"),
    ],
)
async def test_error_statuses_have_anthropics_body(
    sim: AnthropicSim, fault: str, status: int, kind: str
) -> None:
    resp = await _post(sim, {**BODY, "stream": True}, {"x-sim-fault": fault})
    assert resp.status_code == status
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str)
    if status == 429:
        assert resp.headers["retry-after"] == "7"
        assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"


@pytest.mark.anyio
async def test_error_event_mid_stream(sim: AnthropicSim) -> None:
    resp = await _post(sim, {**BODY, "stream": True}, {"x-sim-fault": "error_event_after=2"})
    events = _events(resp.text)
    assert [n for n, _ in events][-3:] == ["content_block_delta", "content_block_delta", "error"]
    assert events[-1][1]["error"]["type"] == "overloaded_error"


@pytest.mark.anyio
async def test_wrong_key_is_refused_and_keys_are_never_recorded(sim: AnthropicSim) -> None:
    resp = await _post(sim, BODY, key="wrong")
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    await _post(sim, BODY, {"authorization": f"Bearer {KEY}"})
    assert [r.headers["x-api-key"] for r in sim.requests] == [REDACTED, REDACTED]
    assert sim.requests[1].headers["authorization"] == REDACTED
    assert KEY not in repr(sim.requests) and KEY not in repr(sim)


@pytest.mark.anyio
async def test_client_disconnect_is_recorded_as_a_cancel() -> None:
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.05, tokens=100)) as sim:
        async with (
            httpx.AsyncClient(base_url=sim.base_url) as client,
            client.stream("POST", "/v1/messages", json={**BODY, "stream": True}) as resp,
        ):
            async for line in resp.aiter_lines():
                if line.startswith("event: content_block_delta"):
                    break
        record = sim.requests[0]
        cancelled_at = await sim.wait_cancelled(record, 1.0)
        assert cancelled_at is not None
        assert record.completed_at is None
        assert record.tokens_sent < 100


@pytest.mark.anyio
async def test_hang_before_first_token_sends_the_preamble_only() -> None:
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=3)) as sim:
        seen: list[str] = []
        async with (
            httpx.AsyncClient(base_url=sim.base_url) as client,
            client.stream(
                "POST",
                "/v1/messages",
                json={**BODY, "stream": True},
                headers={"x-sim-fault": "hang_before_first_token"},
            ) as resp,
        ):
            assert resp.status_code == 200
            with anyio.move_on_after(0.3):
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        seen.append(line.removeprefix("event: "))
        assert seen == ["message_start", "content_block_start", "ping"]
