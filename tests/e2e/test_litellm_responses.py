"""`/v1/responses` and `/v1/embeddings` served by `kind: litellm` targets, end to end: the
official `openai` SDK -> router -> litellm -> a simulator on 127.0.0.1.

Two ways litellm reaches a provider, both here: through the provider's own Responses
API (`openai/...` at the OpenAI-compatible simulator: it stores responses, so a
follow-up must land on it), and through its bridge to chat completions
(`anthropic/...` at the Anthropic-protocol simulator: nothing is stored, so a
follow-up is refused rather than answered without its history). Beside them an
OpenAI-compatible target `b` that a policy would otherwise choose.
"""

from __future__ import annotations

import base64
import gc
import json
from collections.abc import Iterator, Mapping

import httpx
import openai
import pytest
from openai.types.responses import ResponseErrorEvent, ResponseFailedEvent

from router.sim.anthropic import AnthropicSim
from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import (
    LITELLM_FIRST_CALL_WARNINGS,
    LoopThread,
    MixedFleet,
    Startable,
    start_mixed_fleet,
    stop_mixed_fleet,
)
from tests.e2e.test_faults import delta, parse_metrics

FAST = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=5, embedding_dims=8)
TEXT = "t0 t1 t2 t3 t4 "
CLAUDE_TEXT = "t0 t1 t2 t3 t4"
KEY = "sk-lx-FTe2e-3c9d1e77aa40-leakcanary"
ENVIRON = {"FT_LX_KEY": KEY, "FT_CLAUDE_KEY": KEY}
#: a litellm call's first cold import is paid by the warm-up, not all of it: a loaded
#: machine needs the slack
TIMEOUTS = "timeouts: {connect_s: 0.5, first_token_s: 1.5, idle_s: 1.0, total_s: 3.0}"
#: $1 per input token, $2 per output token: costs read as token counts
PRICE = "price: {input_per_mtok: 1000000, output_per_mtok: 2000000}"

#: openai-python warns when litellm dumps a base64 embedding (openai/openai-python issue
#: 1039): a warning in production (shown once), an error under pytest's -W error
BASE64_DUMP_WARNING = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
pytestmark = [*LITELLM_FIRST_CALL_WARNINGS, BASE64_DUMP_WARNING]


def config(servers: Mapping[str, Startable]) -> str:
    lx, b, claude = servers["lx"], servers["b"], servers["claude"]
    assert isinstance(lx, OpenAISim) and isinstance(b, OpenAISim)
    assert isinstance(claude, AnthropicSim)
    return f"""
targets:
  - name: lx
    kind: litellm
    model: openai/gpt-4.1-mini
    base_url: {lx.base_url}
    api_key_env: FT_LX_KEY
    {PRICE}
    {TIMEOUTS}
  - name: lxe
    kind: litellm
    model: openai/text-embedding-3-small
    base_url: {lx.base_url}
    api_key_env: FT_LX_KEY
    capabilities: [embeddings]
    price: {{input_per_mtok: 1000000}}
    {TIMEOUTS}
  - name: claude
    kind: litellm
    model: anthropic/claude-3-5-haiku-20241022
    base_url: {claude.base_url}
    api_key_env: FT_CLAUDE_KEY
    {TIMEOUTS}
  - name: b
    kind: openai
    model: b-model
    base_url: {b.base_url}
    {TIMEOUTS}
routes:
  - {{name: ordered, targets: [lx, b], policy: {{type: ordered}}, exploration: 0}}
  - {{name: b-first, targets: [b, lx], policy: {{type: ordered}}, exploration: 0}}
  - {{name: bridged, targets: [claude, b], policy: {{type: ordered}}, exploration: 0}}
  - {{name: embed, targets: [lxe, b], policy: {{type: ordered}}, exploration: 0}}
  - {{name: lx-only, targets: [lx]}}
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[MixedFleet]:
    servers: dict[str, Startable] = {
        "lx": OpenAISim(FAST, model="gpt-4.1-mini"),
        "b": OpenAISim(FAST, model="b-model"),
        "claude": AnthropicSim(FAST, api_key=KEY),
    }
    f = start_mixed_fleet(loop_thread, servers, config, environ=ENVIRON)
    yield f
    stop_mixed_fleet(f)
    gc.collect()


@pytest.fixture
def sdk(fleet: MixedFleet) -> Iterator[openai.OpenAI]:
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
    with openai.OpenAI(
        base_url=fleet.router.base_url, api_key="unused", max_retries=0, http_client=http
    ) as client:
        yield client


def seen(fleet: MixedFleet, name: str, path: str = "/v1/responses") -> list[dict[str, object]]:
    """The bodies a simulator received on `path`."""
    sim = fleet.server(name, OpenAISim)
    return fleet.loop.call(lambda: [r.body for r in sim.records if r.path == path])


def set_behaviour(fleet: MixedFleet, name: str, behaviour: Behaviour) -> None:
    fleet.loop.run(fleet.server(name, OpenAISim).set_behaviour(behaviour))


def metrics(fleet: MixedFleet) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)


def raw_events(fleet: MixedFleet, body: dict[str, object]) -> tuple[httpx.Response, list[bytes]]:
    r = httpx.post(f"{fleet.router.base_url}/responses", json=body, timeout=10)
    return r, [e for e in r.content.split(b"\n\n") if e]


def data_of(event: bytes) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(event.split(b"data: ", 1)[1])
    return parsed


# -- streams and bodies -------------------------------------------------------------------


def test_a_stream_arrives_whole_in_order_numbered_with_its_usage(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    with sdk.responses.with_streaming_response.create(
        model="ordered", input="hello there", stream=True
    ) as response:
        assert response.headers["x-firsttoken-target"] == "lx"
        assert "first token (answer)" in response.headers["x-firsttoken-reason"]
        events = list(response.parse())
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed" and done.response.usage is not None
    assert done.response.usage.output_tokens == 5
    assert done.response.id == events[0].response.id  # type: ignore[union-attr]
    assert seen(fleet, "lx")[-1]["stream"] is True  # a real stream upstream


def test_the_sdks_stream_helper_and_a_unary_answer(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model="ordered", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == TEXT and final.status == "completed"
    unary = sdk.responses.create(model="ordered", input="hi", instructions="be brief")
    assert unary.output_text == TEXT and unary.usage is not None
    assert unary.usage.output_tokens == 5


def test_usage_feeds_tokens_and_cost(fleet: MixedFleet, sdk: openai.OpenAI) -> None:
    before = metrics(fleet)
    sdk.responses.create(model="ordered", input="x" * 40)  # ~10 input tokens
    with sdk.responses.stream(model="ordered", input="x" * 40) as stream:
        stream.get_final_response()
    after = metrics(fleet)
    labels = {"route": "ordered", "target": "lx"}
    assert delta(before, after, "firsttoken_tokens_total", direction="output", **labels) == 10
    assert delta(before, after, "firsttoken_tokens_total", direction="input", **labels) == 20
    assert delta(before, after, "firsttoken_cost_usd_total", **labels) == pytest.approx(40.0)


def test_unknown_fields_reach_the_provider_and_a_clients_plumbing_does_not(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    sdk.responses.create(
        model="ordered",
        input="x",
        extra_body={"x_vendor_knob": {"k": 1}, "api_base": "http://127.0.0.1:9/v1"},
    )
    body = seen(fleet, "lx")[-1]  # it reached lx: `api_base` did not redirect the call
    assert body["x_vendor_knob"] == {"k": 1}


# -- state lives upstream -----------------------------------------------------------------


def test_a_follow_up_lands_on_the_litellm_target_that_stored_its_response(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    first = sdk.responses.create(model="ordered", input="one")  # on lx
    chain = [first.id]
    for i in range(4):  # b-first would choose b; each follow-up stays on lx
        if i % 2:
            with sdk.responses.stream(
                model="b-first", input="more", previous_response_id=chain[-1]
            ) as stream:
                chain.append(stream.get_final_response().id)
        else:
            follow = sdk.responses.create(
                model="b-first", input="more", previous_response_id=chain[-1]
            )
            chain.append(follow.id)
    bodies = seen(fleet, "lx")
    assert len(bodies) == 5 and seen(fleet, "b") == []
    # each follow-up reached the provider with the id it had stored, its own
    assert [b.get("previous_response_id") for b in bodies[1:]] == chain[:4]
    # Something built on nothing goes where the policy says.
    sdk.responses.create(model="b-first", input="fresh")
    assert len(seen(fleet, "b")) == 1


def test_a_stored_responses_own_calls_reach_the_litellm_target_that_made_it(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    made = sdk.responses.create(model="b-first", input="n0")  # on b
    mine = sdk.responses.create(model="ordered", input="n1")  # on lx, through litellm
    lx = fleet.server("lx", OpenAISim)
    at_provider = f"{lx.base_url}/responses/{mine.id}"
    assert httpx.get(at_provider).status_code == 200  # the id is the provider's own
    assert sdk.responses.retrieve(mine.id).output_text == TEXT
    assert [i.type for i in sdk.responses.input_items.list(mine.id).data] == ["message"]
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)  # forgotten by the router as well
    assert sdk.responses.retrieve(made.id).id == made.id
    assert httpx.get(at_provider).status_code == 404  # deleted at the provider


def test_a_conversation_passes_over_a_litellm_target_to_one_that_keeps_conversations(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    # `ordered` tries lx first: litellm serves no Conversations API (400 unsupported_endpoint)
    conversation = sdk.conversations.create(extra_body={"model": "ordered"})
    b = fleet.server("b", OpenAISim)
    assert fleet.loop.call(lambda: conversation.id in b.stored.conversations)
    sdk.responses.create(model="ordered", input="hi", conversation=conversation.id)
    assert len(seen(fleet, "b")) == 1 and seen(fleet, "lx") == []
    calls = fleet.router.router.metrics.registry.get_sample_value
    labels = {"target": "lx", "call": "conversation_create", "outcome": "not_here"}
    assert calls("firsttoken_relayed_calls_total", labels) == 1
    with pytest.raises(openai.BadRequestError) as err:  # a route of litellm targets only
        sdk.conversations.create(extra_body={"model": "lx-only"})
    assert err.value.code == "unsupported_endpoint"


def test_when_the_litellm_owner_is_down_the_follow_up_is_a_503(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    first = sdk.responses.create(model="ordered", input="one")
    set_behaviour(fleet, "lx", Behaviour(fault=Fault("status", 503)))
    with pytest.raises(openai.InternalServerError) as err:
        sdk.responses.create(model="b-first", input="two", previous_response_id=first.id)
    assert err.value.code == "response_state_unavailable"
    assert "stored on target 'lx'" in err.value.message
    assert seen(fleet, "b") == []


def test_a_bridged_provider_answers_but_refuses_to_build_on_a_response(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    with sdk.responses.with_streaming_response.create(
        model="bridged", input="hi", stream=True
    ) as response:
        events = list(response.parse())
    # litellm's bridge numbers almost none of its events; they leave numbered
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == CLAUDE_TEXT
    with sdk.responses.stream(model="bridged", input="hi") as stream:
        first = stream.get_final_response()
    assert first.output_text == CLAUDE_TEXT
    assert sdk.responses.create(model="bridged", input="hi").output_text == CLAUDE_TEXT
    claude = fleet.server("claude", AnthropicSim)
    calls = fleet.loop.call(lambda: len(claude.requests))
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.create(model="bridged", input="and?", previous_response_id=first.id)
    assert "stores no responses" in err.value.message
    assert err.value.code == "unsupported_parameter"
    # neither sent to claude without its history, nor to b, which lacks the state
    assert fleet.loop.call(lambda: len(claude.requests)) == calls
    assert seen(fleet, "b") == []


# -- the commit point ---------------------------------------------------------------------


def test_failures_before_the_first_event_fall_back_invisibly(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    for fault in (Fault("hang_before_first_token"), Fault("status", 503)):
        set_behaviour(fleet, "lx", Behaviour(fault=fault))
        with sdk.responses.with_streaming_response.create(
            model="ordered", input="hi", stream=True
        ) as response:
            assert response.headers["x-firsttoken-target"] == "b", fault
            events = list(response.parse())
        assert [e.type for e in events].count("response.created") == 1
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT


def test_a_failure_after_the_first_event_ends_the_stream_in_the_responses_shape(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    set_behaviour(
        fleet, "lx", Behaviour(ttft_s=0.01, tokens=5, fault=Fault("die_after", after_tokens=2))
    )
    with (
        pytest.raises(openai.APIError) as err,
        sdk.responses.create(model="ordered", input="hi", stream=True) as stream,
    ):
        for _ in stream:
            pass
    assert "interrupted" in err.value.message
    r, events = raw_events(fleet, {"model": "ordered", "input": "hi", "stream": True})
    assert r.headers["x-firsttoken-target"] == "lx"
    error, failed = events[-2:]
    assert error.startswith(b"event: error\n")
    ResponseErrorEvent.model_validate(data_of(error))
    ended = ResponseFailedEvent.model_validate(data_of(failed))
    created = data_of(events[0])["response"]
    assert isinstance(created, dict) and ended.response.id == created["id"]
    assert [data_of(e)["sequence_number"] for e in events] == list(range(len(events)))
    assert seen(fleet, "b") == []


# -- embeddings ---------------------------------------------------------------------------


def test_an_embeddings_batch_through_litellm_comes_back_in_order_and_priced(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    before = metrics(fleet)
    batch = ["one", "two two", "three three three"]
    answer = sdk.embeddings.create(model="embed", input=batch)
    assert [d.index for d in answer.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in answer.data)
    assert answer.usage.prompt_tokens > 0
    after = metrics(fleet)
    labels = {"route": "embed", "target": "lxe"}
    tokens = delta(before, after, "firsttoken_tokens_total", direction="input", **labels)
    assert tokens == answer.usage.prompt_tokens
    assert delta(before, after, "firsttoken_cost_usd_total", **labels) == pytest.approx(tokens)
    assert seen(fleet, "lx", "/v1/embeddings")[-1]["input"] == batch
    assert seen(fleet, "b", "/v1/embeddings") == []


def test_embeddings_pass_encoding_format_and_fall_back_before_answering(
    fleet: MixedFleet,
) -> None:
    r = httpx.post(
        f"{fleet.router.base_url}/embeddings",
        json={"model": "embed", "input": ["a", "b"], "encoding_format": "base64"},
    )
    assert r.status_code == 200 and r.headers["x-firsttoken-target"] == "lxe"
    vectors = [base64.b64decode(d["embedding"]) for d in r.json()["data"]]
    assert [len(v) for v in vectors] == [8 * 4, 8 * 4]  # float32s, as the provider sent them
    set_behaviour(fleet, "lx", Behaviour(fault=Fault("status", 503), embedding_dims=8))
    r = httpx.post(f"{fleet.router.base_url}/embeddings", json={"model": "embed", "input": "a"})
    assert r.status_code == 200 and r.headers["x-firsttoken-target"] == "b"
