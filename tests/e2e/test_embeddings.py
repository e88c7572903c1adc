"""`/v1/embeddings` and capabilities per target, end to end with the official `openai` SDK:
batches, `encoding_format` passed through, usage priced, fallback and hedging of a
unary request, routes narrowed to the targets that serve an endpoint, and
`/v1/models` saying what each route serves."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour, Fault
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet
from tests.e2e.test_faults import delta, parse_metrics

FAST = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=4, embedding_dims=32)
SLOW = Behaviour(ttft_s=2.0, itl_s=0.002, tokens=4, embedding_dims=32)
PRICE = "price: {input_per_mtok: 1000000}"
ROUTES = """
routes:
  - name: embed
    targets: [a, b]
    policy: {type: ordered}
    exploration: 0
  - name: hedged
    targets: [a, b]
    policy: {type: ordered}
    exploration: 0
    hedge: {after_ms: 50, unary: true, max_rate: 1.0}
  - name: mixed
    targets: [gen, emb]
    exploration: 0
  - name: chat-only
    targets: [gen]
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": FAST, "b": FAST, "gen": FAST, "emb": FAST},
        ROUTES,
        kinds={"gen": "vllm", "emb": "vllm"},
        target_extra={
            "a": PRICE,
            "b": PRICE,
            "emb": "capabilities: [embeddings]\nmetrics_url: http://127.0.0.1:9/metrics",
            # gen's probes (a chat completion each) would blur which requests reached it;
            # emb keeps the vllm default: an embedding engine is never probed
            "gen": "metrics_url: http://127.0.0.1:9/metrics\nprobe: false",
        },
    )
    yield f
    stop_fleet(f)


def sdk(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)


def paths(fleet: Fleet, name: str) -> list[str]:
    return fleet.loop.call(lambda: [r.path for r in fleet.sim(name).records])


def test_a_batch_comes_back_whole_in_order_and_priced(fleet: Fleet) -> None:
    before = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    inputs = [f"sentence number {i}" for i in range(16)]
    answer = sdk(fleet).embeddings.create(model="embed", input=inputs)  # base64, decoded
    assert [d.index for d in answer.data] == list(range(16))
    assert all(len(d.embedding) == 32 for d in answer.data)
    direct = openai.OpenAI(base_url=fleet.sim("a").base_url, api_key="x")
    same = direct.embeddings.create(model="a-model", input=inputs)
    assert [d.embedding for d in answer.data] == [d.embedding for d in same.data]
    after = parse_metrics(httpx.get(f"{fleet.router.url}/metrics").text)
    labels = {"route": "embed", "target": "a"}
    tokens = delta(before, after, "firsttoken_tokens_total", direction="input", **labels)
    assert tokens == answer.usage.prompt_tokens > 0
    assert delta(before, after, "firsttoken_cost_usd_total", **labels) == pytest.approx(tokens)


def test_an_answer_goes_out_with_its_length_not_chunked(fleet: Fleet) -> None:
    # A unary answer is relayed as the target wrote it, framed by Content-Length
    # (chunked framing would cost the router a copy and a write more per answer).
    r = httpx.post(
        f"{fleet.router.base_url}/embeddings",
        json={"model": "embed", "input": ["a", "b", "c"], "encoding_format": "float"},
    )
    assert r.status_code == 200 and len(r.json()["data"]) == 3
    assert "transfer-encoding" not in r.headers
    assert r.headers["content-length"] == str(len(r.content))


def test_encoding_format_and_unknown_fields_pass_through(fleet: Fleet) -> None:
    c = sdk(fleet)
    floats = c.embeddings.create(model="embed", input="x", encoding_format="float", dimensions=8)
    assert len(floats.data[0].embedding) == 8
    raw = c.embeddings.create(
        model="embed", input="x", encoding_format="base64", extra_body={"user": "u"}
    )
    assert isinstance(raw.data[0].embedding, str)
    seen = fleet.loop.call(lambda: fleet.sim("a").records[-1].body)
    assert (seen["encoding_format"], seen["user"], seen["model"]) == ("base64", "u", "a-model")


def test_a_failing_target_falls_back_and_a_slow_one_is_hedged(fleet: Fleet) -> None:
    c = sdk(fleet)
    fleet.set_behaviour("a", Behaviour(fault=Fault("status", 503)))
    r = c.embeddings.with_raw_response.create(model="embed", input=["x", "y"])
    assert r.headers["x-firsttoken-target"] == "b" and len(r.parse().data) == 2
    fleet.set_behaviour("a", SLOW)
    started = time.monotonic()
    r = c.embeddings.with_raw_response.create(model="hedged", input=["x", "y"])
    assert r.headers["x-firsttoken-target"] == "b"
    assert "hedged" in r.headers["x-firsttoken-reason"]
    assert time.monotonic() - started < 1.5


def test_bad_embeddings_bodies_are_400s(fleet: Fleet) -> None:
    url = f"{fleet.router.base_url}/embeddings"
    for body, says in [
        ({"model": "embed"}, "'input'"),
        ({"model": "embed", "input": [{"x": 1}]}, "'input'"),
        ({"model": "embed", "input": "x", "stream": True}, "not streamed"),
    ]:
        r = httpx.post(url, json=body)
        assert r.status_code == 400 and says in r.json()["error"]["message"], body
    assert paths(fleet, "a") == []


# -- capabilities -----------------------------------------------------------------------------


def test_each_request_goes_only_to_targets_that_serve_its_endpoint(fleet: Fleet) -> None:
    c = sdk(fleet)
    for _ in range(3):
        c.embeddings.create(model="mixed", input="x")
        c.chat.completions.create(model="mixed", messages=[{"role": "user", "content": "hi"}])
        c.responses.create(model="mixed", input="hi")
    assert paths(fleet, "emb") == ["/v1/embeddings"] * 3
    assert sorted(set(paths(fleet, "gen"))) == ["/v1/chat/completions", "/v1/responses"]


def test_a_route_that_serves_nothing_for_an_endpoint_is_a_400_naming_both(fleet: Fleet) -> None:
    with sdk(fleet) as c, pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model="chat-only", input="x")
    message = err.value.message
    assert "'chat-only'" in message and "/v1/embeddings" in message
    assert "/v1/chat/completions" in message  # what it does serve
    assert paths(fleet, "gen") == []


def test_models_list_what_each_route_serves_in_openais_shape(fleet: Fleet) -> None:
    models = {m.id: m for m in sdk(fleet).models.list()}
    assert models["embed"].object == "model" and models["embed"].owned_by == "firsttoken"
    served = {name: m.model_dump()["capabilities"] for name, m in models.items()}
    assert served["embed"] == ["chat", "completions", "responses", "embeddings", "moderations"]
    assert served["mixed"] == ["chat", "completions", "responses", "embeddings"]  # vLLM only
    assert served["chat-only"] == ["chat", "completions", "responses"]
