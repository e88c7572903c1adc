"""The simulator's Responses API and embeddings, read by the official `openai` SDK (so
the shapes are checked by code we did not write)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim

pytestmark = pytest.mark.anyio

ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 5,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def sdk(sim: OpenAISim) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0) as c:
        yield c


async def test_a_stream_has_openais_events_in_order_numbered_and_stored(
    sim: OpenAISim, sdk: openai.AsyncOpenAI
) -> None:
    stream = await sdk.responses.create(model="m", input="hello there", stream=True)
    events = [e async for e in stream]
    assert [e.type for e in events] == ORDER
    assert [e.sequence_number for e in events] == list(range(len(ORDER)))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == "t0 t1 t2 t3 t4 "
    assert done.response.usage is not None and done.response.usage.output_tokens == 5
    stored = await sdk.responses.retrieve(done.response.id)
    assert (stored.id, stored.status, stored.output_text) == (
        done.response.id,
        "completed",
        "t0 t1 t2 t3 t4 ",
    )


async def test_the_sdk_accumulator_reads_a_stream_and_a_follow_up_builds_on_it(
    sdk: openai.AsyncOpenAI,
) -> None:
    async with sdk.responses.stream(model="m", input="hi") as stream:
        first = await stream.get_final_response()
    assert first.status == "completed" and first.output_text == "t0 t1 t2 t3 t4 "
    short = await sdk.responses.create(model="m", input="hi", max_output_tokens=3, stream=True)
    last = [e async for e in short][-1]
    assert last.type == "response.incomplete" and last.response.output_text == "t0 t1 t2 "
    follow = await sdk.responses.create(model="m", input="more", previous_response_id=first.id)
    assert follow.previous_response_id == first.id and follow.status == "completed"
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.responses.create(model="m", input="x", previous_response_id="resp_unknown")
    assert err.value.code == "previous_response_not_found"


async def test_stored_responses_can_be_deleted_and_store_false_keeps_nothing(
    sim: OpenAISim, sdk: openai.AsyncOpenAI
) -> None:
    kept = await sdk.responses.create(model="m", input=[{"role": "user", "content": "a"}])
    items = await sdk.responses.input_items.list(kept.id)
    assert [i.type for i in items.data] == ["message"]
    await sdk.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(kept.id)
    unstored = await sdk.responses.create(model="m", input="b", store=False)
    assert unstored.id not in sim.stored


async def test_a_fault_after_tokens_is_an_error_event_then_response_failed(
    sim: OpenAISim, client: httpx.AsyncClient
) -> None:
    body = {"model": "m", "input": "x", "stream": True}
    r = await client.post(
        f"{sim.base_url}/responses", json=body, headers={"x-sim-fault": "error_event_after=2"}
    )
    events = [json.loads(e.split("data: ", 1)[1]) for e in r.text.split("\n\n") if e]
    assert [e["type"] for e in events][-4:] == [
        "response.output_text.delta",
        "response.output_text.delta",
        "error",
        "response.failed",
    ]
    assert events[-2]["message"] == events[-2]["error"]["message"] == "simulated failure"
    assert events[-1]["response"]["status"] == "failed"


async def test_embeddings_in_a_batch_as_floats_and_as_base64(
    sim: OpenAISim, sdk: openai.AsyncOpenAI
) -> None:
    floats = await sdk.embeddings.create(
        model="m", input=["one", "two", "three"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert len(floats.data[0].embedding) == 256
    assert floats.data[0].embedding != floats.data[1].embedding
    # The SDK asks for base64 by default and decodes it: the same vectors come back.
    default = await sdk.embeddings.create(model="m", input=["one", "two", "three"], dimensions=8)
    sized = await sdk.embeddings.create(
        model="m", input=["one"], dimensions=8, encoding_format="base64"
    )
    raw = sized.data[0].embedding
    assert isinstance(raw, str)
    assert list(struct.unpack("<8f", base64.b64decode(raw))) == default.data[0].embedding
    assert sim.records[-1].body["encoding_format"] == "base64"
    assert floats.usage.prompt_tokens > 0


async def test_embeddings_honour_the_behaviours_dims_and_refuse_bad_input(
    client: httpx.AsyncClient,
) -> None:
    async with OpenAISim(Behaviour(ttft_s=0.001, embedding_dims=4)) as small:
        r = await client.post(f"{small.base_url}/embeddings", json={"model": "m", "input": "a"})
        assert len(r.json()["data"][0]["embedding"]) == 4
        r = await client.post(f"{small.base_url}/embeddings", json={"model": "m", "input": 5})
        assert r.status_code == 400
