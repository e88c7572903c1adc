from __future__ import annotations

import httpx
import pytest

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.wire import completion_text
from tests.sim.conftest import chat_body, sse_events

pytestmark = pytest.mark.anyio


async def test_stream_is_shaped_like_openai(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True}, model="my-model")
    r = await client.post(f"{sim.base_url}/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    role, *content, finish, usage, done = events
    assert role["object"] == "chat.completion.chunk"
    assert role["model"] == "my-model"
    assert role["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [c["choices"][0]["delta"]["content"] for c in content] == [f"t{i} " for i in range(5)]
    assert len({e["id"] for e in events[:-1]}) == 1
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}
    assert done == "[DONE]"


async def test_no_usage_chunk_unless_asked(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    r = await client.post(f"{sim.base_url}/chat/completions", json=chat_body(stream=True))
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_caps_the_answer_with_length(
    sim: OpenAISim, client: httpx.AsyncClient, field: str
) -> None:
    body = chat_body()
    body[field] = 3
    r = await client.post(f"{sim.base_url}/chat/completions", json=body)
    data = r.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "t0 t1 t2 "}
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


async def test_completions_endpoint_uses_text(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    body = {
        "model": "m",
        "prompt": "x" * 40,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await client.post(f"{sim.base_url}/completions", json=body)
    events = sse_events(r.text)
    assert {e["object"] for e in events[:-1]} == {"text_completion"}
    assert "".join(e["choices"][0]["text"] for e in events[:-2]) == completion_text(5)
    assert events[-2]["usage"]["prompt_tokens"] == 10
    unary = await client.post(f"{sim.base_url}/completions", json={"model": "m", "prompt": "hi"})
    assert unary.json()["choices"][0]["text"] == completion_text(5)
    assert unary.json()["object"] == "text_completion"


async def test_models_health_and_bad_requests(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{sim.url}/health")).status_code == 200
    models = (await client.get(f"{sim.base_url}/models")).json()
    assert models["data"][0]["id"] == "sim-model"
    r = await client.post(f"{sim.base_url}/chat/completions", json={"model": "m"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


async def test_records_what_it_saw(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    body = chat_body(stream=True)
    await client.post(
        f"{sim.base_url}/chat/completions", json=body, headers={"X-Request-Id": "abc"}
    )
    (record,) = sim.records
    assert record.body == body
    assert record.headers["x-request-id"] == "abc"
    assert record.tokens_sent == 5
    assert record.first_token_at is not None and record.finished_at is not None
    assert record.received_at < record.first_token_at <= record.finished_at
    assert record.cancelled_at is None
    assert record.status == 200


async def test_behaviour_changes_at_runtime(sim: OpenAISim, client: httpx.AsyncClient) -> None:
    from dataclasses import replace

    sim.behaviour = replace(sim.behaviour, tokens=2)
    r = await client.post(f"{sim.base_url}/chat/completions", json=chat_body())
    assert r.json()["choices"][0]["message"]["content"] == "t0 t1 "


async def test_a_reply_is_streamed_word_by_word(client: httpx.AsyncClient) -> None:
    reply = "there are three people in the room"
    async with OpenAISim(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=7, reply=reply)) as sim:
        answer = await client.post(f"{sim.base_url}/chat/completions", json=chat_body(stream=True))
    deltas = [
        e["choices"][0]["delta"].get("content", "")
        for e in sse_events(answer.text)
        if isinstance(e, dict) and e["choices"]
    ]
    assert "".join(deltas) == reply + " "
    assert deltas[1:8] == [w + " " for w in reply.split()]
