"""Hosted providers end to end: the `openai` SDK -> router -> litellm -> an Anthropic-protocol
simulator, with an OpenAI-compatible simulator as the second target of the same route.

What a user would notice: the Anthropic target's answer arrives intact as OpenAI chunks;
failures before its first token fail over to the OpenAI-compatible target across kinds,
invisibly; a bad request is not retried elsewhere; usage and cost are right; and the
upstream API keys never show up anywhere the router writes.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

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

MODEL = "anthropic/claude-3-5-haiku-20241022"
#: distinctive, so a grep for them cannot match anything by accident
ANTHROPIC_KEY = "sk-ant-FTe2e-7d41c0ffee93b2a8-leakcanary"
OPENAI_KEY = "sk-oai-FTe2e-5be11ad0a77f04c2-leakcanary"
ENVIRON = {"FT_ANTHROPIC_KEY": ANTHROPIC_KEY, "FT_OPENAI_KEY": OPENAI_KEY}
TOKENS = 8
CLAUDE = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=TOKENS)
OAI = Behaviour(ttft_s=0.01, itl_s=0.002, tokens=TOKENS)
CLAUDE_TEXT = "".join(f"t{i}" if i == 0 else f" t{i}" for i in range(TOKENS))
OAI_TEXT = "".join(f"t{i} " for i in range(TOKENS))
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]
#: $ per million tokens, as in the YAML below
CLAUDE_IN, CLAUDE_OUT = 0.8, 4.0

pytestmark = LITELLM_FIRST_CALL_WARNINGS


def config(servers: Mapping[str, Startable]) -> str:
    claude = servers["claude"]
    oai = servers["oai"]
    assert isinstance(claude, AnthropicSim) and isinstance(oai, OpenAISim)
    return f"""
signals: {{breaker_failures: 1000}}  # the leak test drives many failing turns in a row
targets:
  - name: claude
    kind: litellm
    model: {MODEL}
    base_url: {claude.base_url}
    api_key_env: FT_ANTHROPIC_KEY
    price: {{input_per_mtok: {CLAUDE_IN}, output_per_mtok: {CLAUDE_OUT}}}
    timeouts: {{first_token_s: 0.5, total_s: 2.0}}
  - name: oai
    kind: openai
    model: oai-model
    base_url: {oai.base_url}
    api_key_env: FT_OPENAI_KEY
    price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
    timeouts: {{first_token_s: 1.0, total_s: 2.0}}
routes:
  - name: chat
    targets: [claude, oai]
    policy: {{type: ordered}}
    exploration: 0
  - name: claude-only
    targets: [claude]
    policy: {{type: ordered}}
    exploration: 0
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[MixedFleet]:
    servers: dict[str, Startable] = {
        "claude": AnthropicSim(CLAUDE, api_key=ANTHROPIC_KEY),
        "oai": OpenAISim(OAI, model="oai-model"),
    }
    f = start_mixed_fleet(loop_thread, servers, config, environ=ENVIRON)
    yield f
    stop_mixed_fleet(f)
    gc.collect()


@pytest.fixture
def sdk(fleet: MixedFleet) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fleet.router.base_url, api_key="client-key", max_retries=0) as c:
        yield c


def claude_sim(fleet: MixedFleet) -> AnthropicSim:
    return fleet.server("claude", AnthropicSim)


def oai_sim(fleet: MixedFleet) -> OpenAISim:
    return fleet.server("oai", OpenAISim)


def set_claude(fleet: MixedFleet, behaviour: Behaviour) -> None:
    sim = claude_sim(fleet)

    def assign() -> None:
        sim.behaviour = behaviour

    fleet.loop.call(assign)


def claude_requests(fleet: MixedFleet) -> int:
    sim = claude_sim(fleet)
    return fleet.loop.call(lambda: len(sim.requests))


def oai_requests(fleet: MixedFleet) -> int:
    sim = oai_sim(fleet)
    return fleet.loop.call(lambda: len(sim.records))


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


# -- the happy path -----------------------------------------------------------------------


def test_sdk_streams_from_the_anthropic_target_intact(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    with sdk.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True, max_tokens=64
    ) as response:
        headers = response.headers
        chunks = list(response.parse())
    assert (headers["x-firsttoken-target"], headers["x-firsttoken-attempts"]) == ("claude", "1")
    text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(text) == CLAUDE_TEXT
    assert len(text) == TOKENS  # one chunk per token: relayed, not buffered
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for, not passed on
    seen = claude_sim(fleet).requests[-1]
    assert seen.body["model"] == MODEL.split("/", 1)[1]
    assert seen.body["stream"] is True


def test_unary_answer_from_the_anthropic_target(fleet: MixedFleet, sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, max_tokens=64
    )
    completion = raw.parse()
    assert raw.headers["x-firsttoken-target"] == "claude"
    assert completion.choices[0].message.content == CLAUDE_TEXT
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (2, TOKENS)


# -- failures before the first token fail over across kinds ------------------------------

FAILOVER = [
    Fault("status", status=429, retry_after_s=1),
    Fault("rate_limited", retry_after_s=1),
    Fault("status", status=529),
    Fault("status", status=500),
    Fault("hang_before_first_token"),
    Fault("hang_before_headers"),
    Fault("reset_after_headers"),
]


@pytest.mark.parametrize(
    "fault", FAILOVER, ids=[f"{f.kind}{f.status if f.kind == 'status' else ''}" for f in FAILOVER]
)
def test_failure_before_first_token_fails_over_to_the_openai_target(
    fleet: MixedFleet, sdk: openai.OpenAI, fault: Fault
) -> None:
    set_claude(fleet, replace(CLAUDE, fault=fault))
    with sdk.chat.completions.with_streaming_response.create(
        model="chat", messages=MESSAGES, stream=True, max_tokens=64
    ) as response:
        headers = response.headers
        text = [
            c.choices[0].delta.content
            for c in response.parse()
            if c.choices and c.choices[0].delta.content
        ]
    assert (headers["x-firsttoken-target"], headers["x-firsttoken-attempts"]) == ("oai", "2")
    assert "fell back" in headers["x-firsttoken-reason"]
    assert "".join(text) == OAI_TEXT
    assert claude_requests(fleet) == 1


def test_a_refused_connection_fails_over(fleet: MixedFleet, sdk: openai.OpenAI) -> None:
    fleet.loop.run(claude_sim(fleet).stop())
    completion = sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=64)
    assert completion.choices[0].message.content == OAI_TEXT


def test_a_bad_request_is_not_failed_over(fleet: MixedFleet, sdk: openai.OpenAI) -> None:
    set_claude(
        fleet, replace(CLAUDE, fault=Fault("status", status=400, message="max_tokens: too large"))
    )
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="chat", messages=MESSAGES, stream=True, max_tokens=64)
    assert "max_tokens: too large" in caught.value.message
    assert oai_requests(fleet) == 0


def test_failure_after_the_first_token_is_an_error_event_not_a_switch(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    set_claude(fleet, replace(CLAUDE, fault=Fault("die_after", after_tokens=3)))
    got: list[str] = []
    with pytest.raises(openai.APIError):
        for c in sdk.chat.completions.create(
            model="chat", messages=MESSAGES, stream=True, max_tokens=64
        ):
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    assert "".join(got) == "t0 t1 t2"
    assert oai_requests(fleet) == 0


def test_legacy_completions_skip_the_litellm_target(fleet: MixedFleet, sdk: openai.OpenAI) -> None:
    raw = sdk.completions.with_raw_response.create(model="chat", prompt="hi")
    assert raw.headers["x-firsttoken-target"] == "oai"
    assert raw.parse().choices[0].text == OAI_TEXT
    assert claude_requests(fleet) == 0


# -- usage and cost ------------------------------------------------------------------------


def test_usage_reaches_the_client_and_cost_matches_the_yaml_price(
    fleet: MixedFleet, sdk: openai.OpenAI
) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
            max_tokens=64,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    # the simulator counts words: "hello there" in, TOKENS out
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        2,
        TOKENS,
        2 + TOKENS,
    )
    sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=64)  # unary
    with httpx.Client(base_url=fleet.router.url) as h:
        text = h.get("/metrics").text
    labels = {"route": "chat", "target": "claude"}
    inp = metric(text, "firsttoken_tokens_total", direction="input", **labels)
    out = metric(text, "firsttoken_tokens_total", direction="output", **labels)
    assert (inp, out) == (2 * 2, 2 * TOKENS)
    cost = metric(text, "firsttoken_cost_usd_total", **labels)
    assert cost == pytest.approx((inp * CLAUDE_IN + out * CLAUDE_OUT) / 1e6, rel=1e-9)


# -- the upstream API keys never leak -------------------------------------------------------

LEAK_FAULTS = [
    None,
    Fault("status", status=401, message=f"invalid x-api-key {ANTHROPIC_KEY}"),
    Fault("status", status=400, message=f"bad request for key {ANTHROPIC_KEY}"),
    Fault("status", status=529, message=f"overloaded for {ANTHROPIC_KEY}"),
    Fault("status", status=500, message=f"internal error, key={ANTHROPIC_KEY}"),
    Fault("hang_before_first_token"),
    Fault("malformed"),
    Fault("error_event_after", after_tokens=2, message=f"overloaded {ANTHROPIC_KEY}"),
    Fault("die_after", after_tokens=2),
    Fault("rate_limited", retry_after_s=0.2, message=f"slow down {ANTHROPIC_KEY}"),
]


def _drive(h: httpx.Client, route: str, stream: bool, out: list[str]) -> None:
    body: dict[str, Any] = {"model": route, "messages": MESSAGES, "max_tokens": 64}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    response = h.post("/v1/chat/completions", json=body)
    out.append(f"{response.status_code} {response.headers!r} {response.text}")


def test_api_keys_never_leak(
    fleet: MixedFleet, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore", "firsttoken"):
        caplog.set_level(logging.DEBUG, logger=name)
    seen: list[str] = []
    with httpx.Client(base_url=fleet.router.url, timeout=5.0) as h:
        # a wrong key at the provider: the simulator answers 401 on its own
        sim = claude_sim(fleet)
        fleet.loop.call(lambda: setattr(sim, "_api_key", "a-different-key"))
        _drive(h, "claude-only", True, seen)
        _drive(h, "chat", False, seen)
        # A 401 from a target means the router's key for it is wrong: the target's
        # fault. Alone it is a 502; with a second target the turn fails over.
        assert seen[-2].startswith("502 ") and seen[-1].startswith("200 ")
        fleet.loop.call(lambda: setattr(sim, "_api_key", ANTHROPIC_KEY))
        # the faults (the 429 last: it holds the target back until its window resets)
        for fault in LEAK_FAULTS:
            set_claude(fleet, CLAUDE if fault is None else replace(CLAUDE, fault=fault))
            for route in ("chat", "claude-only"):
                for stream in (True, False):
                    _drive(h, route, stream, seen)
        # the OpenAI-compatible target failing too: 502 after both attempts
        fleet.loop.run(
            oai_sim(fleet).set_behaviour(replace(OAI, fault=Fault("status", status=500)))
        )
        _drive(h, "chat", True, seen)
        seen.append(h.get("/metrics").text)
        seen.append(json.dumps(h.get("/admin/targets").json()))
    statuses = {s.split(" ", 1)[0] for s in seen[:-2]}
    assert {"200", "400", "502", "503"} <= statuses, statuses  # failing turns were driven
    # the keys did reach the providers (the simulator checks its own)
    assert any(s.startswith("200 ") for s in seen)
    captured = capfd.readouterr()
    everything = "\n".join(
        [*seen, caplog.text, captured.out, captured.err, *(repr(r.args) for r in caplog.records)]
    )
    for key in (ANTHROPIC_KEY, OPENAI_KEY):
        assert key not in everything
        assert key[8:28] not in everything  # no partial echo either
