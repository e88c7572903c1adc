"""Provider shapes end to end: the official `openai` SDK -> the router -> a replay of what
a real provider sends (tests/providers/recordings/*.yaml, served byte for byte by
router/sim/replay.py): OpenAI, Azure OpenAI, Groq, OpenRouter, vLLM and DeepSeek
reasoning, Anthropic with thinking through litellm, CRLF and CR-only framing, a vLLM
error frame after the first token, and `/v1/responses` streams: OpenAI's (text, a
reasoning model's function call, an error before any token) and vLLM's (reasoning text,
its fields in pydantic's order)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.sim.replay import ReplayServer, load_recording
from tests.e2e.harness import (
    LITELLM_FIRST_CALL_WARNINGS,
    LoopThread,
    MixedFleet,
    Startable,
    start_mixed_fleet,
    stop_mixed_fleet,
)

RECORDINGS = Path(__file__).parent / "recordings"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello"}
]
KEY = "sk-provider-key-8c1f0e2d"
#: a key mounted from a Kubernetes secret made from a file: a trailing newline
ENVIRON = {"PROVIDER_KEY": KEY + "\n", "ORG_ID": " org-42 "}

pytestmark = LITELLM_FIRST_CALL_WARNINGS


def replay(name: str) -> ReplayServer:
    return ReplayServer(load_recording(RECORDINGS / f"{name}.yaml"))


def target(name: str, server: Startable, extra: str = "", kind: str = "openai") -> str:
    assert isinstance(server, ReplayServer)
    base = server.base_url if kind != "litellm" else server.base_url.removesuffix("/v1")
    lines = [
        f"  - name: {name}",
        f"    kind: {kind}",
        f"    base_url: {base}",
        f"    model: {name}-model",
        "    api_key_env: PROVIDER_KEY",
        "    timeouts: {first_token_s: 2.0, idle_s: 2.0, total_s: 5.0}",
    ]
    lines += [f"    {line}" for line in extra.strip().splitlines()]
    return "\n".join(lines)


def route(name: str, targets: list[str], extra: str = "") -> str:
    lines = [
        f"  - name: {name}",
        f"    targets: [{', '.join(targets)}]",
        "    policy: {type: ordered}",
        "    exploration: 0",
    ]
    lines += [f"    {line}" for line in extra.strip().splitlines()]
    return "\n".join(lines)


Config = Callable[[Mapping[str, Startable]], str]


@pytest.fixture
def run(
    loop_thread: LoopThread,
) -> Iterator[Callable[[dict[str, ReplayServer], Config], MixedFleet]]:
    fleets: list[MixedFleet] = []

    def start(servers: dict[str, ReplayServer], config: Config) -> MixedFleet:
        fleet = start_mixed_fleet(loop_thread, dict(servers), config, environ=ENVIRON)
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        stop_mixed_fleet(fleet)
    gc.collect()


def sdk(fleet: MixedFleet) -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.router.base_url, api_key="client", max_retries=0)


def stream(fleet: MixedFleet, model: str, **kwargs: Any) -> tuple[list[Any], httpx.Headers]:
    with sdk(fleet) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, stream=True, **kwargs
        )
        return list(raw.parse()), raw.headers


def text_of(chunks: list[Any], field: str = "content") -> str:
    out = []
    for chunk in chunks:
        for choice in chunk.choices:
            value = getattr(choice.delta, field, None)
            if value is None and choice.delta.model_extra:
                value = choice.delta.model_extra.get(field)
            out.append(value or "")
    return "".join(out)


def metric(fleet: MixedFleet, name: str, **labels: str) -> float:
    text = httpx.get(f"{fleet.router.url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and set(labels.items()) <= set(s.labels.items()):
                total += s.value
    return total


def single(name: str, route_extra: str = "", target_extra: str = "") -> Config:
    def config(servers: Mapping[str, Startable]) -> str:
        return (
            f"targets:\n{target(name, servers[name], target_extra)}\n"
            f"routes:\n{route('chat', [name], route_extra)}\n"
        )

    return config


def test_openai_usage_chunk_reaches_only_a_client_that_asked(run: Any) -> None:
    fleet = run({"oai": replay("openai_usage")}, single("oai"))
    chunks, headers = stream(fleet, "chat", stream_options={"include_usage": True})
    assert text_of(chunks) == "The capital of France is Paris."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert "first token (answer)" in headers["x-firsttoken-reason"]
    chunks, _ = stream(fleet, "chat")
    assert all(c.usage is None for c in chunks)
    assert metric(fleet, "firsttoken_tokens_total", target="oai", direction="output") == 16
    # two turns, one connection: the first stream ended at [DONE] and gave it back
    assert metric(fleet, "firsttoken_upstream_connections_total", target="oai", kind="new") == 1


def test_openai_tool_call_deltas_arrive_whole(run: Any) -> None:
    fleet = run({"oai": replay("openai_tool_call")}, single("oai"))
    chunks, _ = stream(fleet, "chat")
    calls = [
        c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls
    ]
    assert calls[0][0].function.name == "get_weather"
    assert "".join(c[0].function.arguments or "" for c in calls) == '{"location":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_refusal_commits_as_the_first_token(run: Any) -> None:
    fleet = run({"oai": replay("openai_refusal")}, single("oai"))
    chunks, headers = stream(fleet, "chat")
    assert text_of(chunks, "refusal") == "I'm sorry, I can't assist with that request."
    assert "first token (refusal)" in headers["x-firsttoken-reason"]


def test_azure_deployment_url_api_version_and_api_key_header(run: Any) -> None:
    def config(servers: Mapping[str, Startable]) -> str:
        azure = servers["azure"]
        assert isinstance(azure, ReplayServer)
        base = azure.base_url.removesuffix("/v1")
        url = f"{base}/openai/deployments/gpt-4o?api-version=2024-10-21"
        extra = "auth_header: api-key\nheaders_env: {OpenAI-Organization: ORG_ID}"
        return (
            "targets:\n"
            + target("azure", azure, extra).replace(
                f"base_url: {azure.base_url}", f"base_url: {url}"
            )
            + f"\nroutes:\n{route('chat', ['azure'])}\n"
        )

    server = replay("azure_openai")
    fleet = run({"azure": server}, config)
    chunks, _ = stream(fleet, "chat", stream_options={"include_usage": True})
    assert text_of(chunks) == "Hello from Azure"
    assert chunks[-1].usage.total_tokens == 15
    seen = server.requests[0]
    assert seen.line == (
        "POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 HTTP/1.1"
    )
    assert seen.headers["api-key"] == KEY  # the env value's newline stripped
    assert "authorization" not in seen.headers
    assert seen.headers["openai-organization"] == "org-42"


def test_groq_refuses_n_above_1_so_the_turn_moves_on_and_x_groq_usage_counts(run: Any) -> None:
    def config(servers: Mapping[str, Startable]) -> str:
        return (
            f"targets:\n{target('groq', servers['groq'])}\n{target('oai', servers['oai'])}\n"
            f"routes:\n{route('chat', ['groq', 'oai'])}\n"
        )

    fleet = run({"groq": replay("groq"), "oai": replay("openai_usage")}, config)
    chunks, headers = stream(fleet, "chat", n=2)
    assert headers["x-firsttoken-target"] == "oai"
    assert text_of(chunks) == "The capital of France is Paris."
    assert (
        metric(
            fleet,
            "firsttoken_target_rejections_total",
            target="groq",
            reason="unsupported_parameter",
        )
        == 1
    )
    assert fleet.router.router.runtime.signals["groq"].breaker.state == "closed"
    chunks, headers = stream(fleet, "chat")
    assert headers["x-firsttoken-target"] == "groq"
    assert text_of(chunks) == "Fast inference."
    assert metric(fleet, "firsttoken_tokens_total", target="groq", direction="output") == 3


def test_openrouter_comments_then_reasoning_then_content(run: Any) -> None:
    fleet = run({"or": replay("openrouter")}, single("or"))
    chunks, headers = stream(fleet, "chat")
    assert text_of(chunks, "reasoning") == "The user asks for a greeting."
    assert text_of(chunks) == "Hello!"
    assert "first token (reasoning)" in headers["x-firsttoken-reason"]


def test_vllm_reasoning_longer_than_first_token_s_is_not_a_timeout(run: Any) -> None:
    # 7 reasoning deltas 60 ms apart: the answer starts ~0.45 s in, past first_token_s
    fleet = run(
        {"vllm": replay("vllm_reasoning")}, single("vllm", route_extra="first_token_s: 0.25")
    )
    chunks, headers = stream(fleet, "chat")
    assert text_of(chunks, "reasoning_content").startswith("Okay, the user wants")
    assert text_of(chunks) == "\n\nParis."
    assert "first answer pending" in headers["x-firsttoken-reason"]
    token_s = metric(fleet, "firsttoken_ttft_seconds_sum", route="chat")
    answer_s = metric(fleet, "firsttoken_time_to_first_answer_seconds_sum", route="chat")
    assert metric(fleet, "firsttoken_time_to_first_answer_seconds_count", route="chat") == 1
    assert token_s < 0.25 < answer_s
    assert metric(fleet, "firsttoken_upstream_errors_total") == 0


def test_deepseek_reasoning_content_with_null_content(run: Any) -> None:
    fleet = run({"ds": replay("deepseek_reasoning")}, single("ds"))
    chunks, _ = stream(fleet, "chat", stream_options={"include_usage": True})
    assert text_of(chunks, "reasoning_content") == "Hmm, 9.11 vs 9.8."
    assert text_of(chunks) == "9.8 is larger."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 25


def test_anthropic_thinking_through_litellm_streams_reasoning_first(run: Any) -> None:
    def config(servers: Mapping[str, Startable]) -> str:
        claude = target("claude", servers["claude"], kind="litellm").replace(
            "model: claude-model", "model: anthropic/claude-3-7-sonnet-20250219"
        )
        return f"targets:\n{claude}\nroutes:\n{route('chat', ['claude'])}\n"

    server = replay("anthropic_thinking")
    fleet = run({"claude": server}, config)
    chunks, headers = stream(fleet, "chat")
    assert "27 * 400 = 10800" in text_of(chunks, "reasoning_content")
    assert text_of(chunks) == "27 * 453 = 12,231"
    assert "first token (reasoning)" in headers["x-firsttoken-reason"]
    assert server.requests[0].line.startswith("POST /v1/messages")
    assert server.requests[0].headers["x-api-key"] == KEY


@pytest.mark.parametrize("name", ["crlf_split", "cr_only"])
def test_crlf_split_across_reads_and_cr_only_line_ends(run: Any, name: str) -> None:
    fleet = run({"odd": replay(name)}, single("odd"))
    chunks, _ = stream(fleet, "chat")
    assert (
        text_of(chunks) == {"crlf_split": "Split across reads", "cr_only": "Carriage returns"}[name]
    )
    assert metric(fleet, "firsttoken_requests_total", outcome="ok") == 1


def test_a_vllm_error_frame_after_the_first_token_ends_the_stream_with_an_error(
    run: Any,
) -> None:
    fleet = run({"vllm": replay("vllm_error_after_first_token")}, single("vllm"))
    seen = []
    with sdk(fleet) as client, pytest.raises(openai.APIError, match="longer than the maximum"):
        for chunk in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True):
            seen.append(chunk)
    assert text_of(seen) == "Once upon"
    assert metric(fleet, "firsttoken_requests_total", outcome="error") == 1


# -- /v1/responses ------------------------------------------------------------------------


def test_openai_responses_stream_arrives_whole_with_usage_and_no_done(run: Any) -> None:
    server = replay("openai_responses_text")
    fleet = run({"oai": server}, single("oai"))
    with sdk(fleet) as client:
        with client.responses.with_streaming_response.create(
            model="chat", input="hello", stream=True
        ) as response:
            assert response.headers["x-firsttoken-target"] == "oai"
            assert "first token (answer)" in response.headers["x-firsttoken-reason"]
            events = list(response.parse())
        with client.responses.stream(model="chat", input="hello") as helper:
            final = helper.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "The capital of France is Paris."
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert final.output_text == text and final.usage is not None
    assert final.usage.output_tokens == 8
    assert server.requests[0].line.startswith("POST /v1/responses ")
    assert server.requests[0].body["model"] == "oai-model"
    # Two turns of 8 output tokens: the usage of each response.completed, read once.
    assert metric(fleet, "firsttoken_tokens_total", target="oai", direction="output") == 16
    assert metric(fleet, "firsttoken_requests_total", target="oai", outcome="ok") == 2


def test_openai_responses_reasoning_then_a_function_call_commits_on_its_arguments(
    run: Any,
) -> None:
    # response.created, in_progress, a reasoning item added and done (no delta: hidden
    # reasoning), the call's item added, then its arguments: the first token is the first
    # arguments delta, six writes 30 ms apart in.
    fleet = run({"o4": replay("openai_responses_reasoning_tool")}, single("o4"))
    with (
        sdk(fleet) as client,
        client.responses.with_streaming_response.create(
            model="chat", input="weather in Lyon?", stream=True
        ) as response,
    ):
        assert "first token (answer)" in response.headers["x-firsttoken-reason"]
        events = list(response.parse())
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == '{"city":"Lyon"}'
    done = events[-1]
    assert done.type == "response.completed" and done.response.usage is not None
    assert done.response.usage.output_tokens_details.reasoning_tokens == 192
    ttft = metric(fleet, "firsttoken_ttft_seconds_sum", route="chat")
    assert metric(fleet, "firsttoken_ttft_seconds_count", route="chat") == 1
    assert ttft >= 5 * 0.03  # not at response.created or any *.added event
    # Reasoning tokens are inside output_tokens: counted once.
    assert metric(fleet, "firsttoken_tokens_total", target="o4", direction="output") == 211


def test_openai_responses_error_before_any_token_moves_the_turn_on(run: Any) -> None:
    def config(servers: Mapping[str, Startable]) -> str:
        return (
            f"targets:\n{target('bad', servers['bad'])}\n{target('good', servers['good'])}\n"
            f"routes:\n{route('chat', ['bad', 'good'])}\n"
        )

    bad = replay("openai_responses_error_before_token")
    fleet = run({"bad": bad, "good": replay("openai_responses_text")}, config)
    with (
        sdk(fleet) as client,
        client.responses.with_streaming_response.create(
            model="chat", input="hello", stream=True
        ) as response,
    ):
        assert response.headers["x-firsttoken-target"] == "good"
        events: list[Any] = list(response.parse())
    types = [e.type for e in events]
    # The client sees one response, good's: nothing of bad's (created, error, failed).
    assert "error" not in types and "response.failed" not in types
    assert types.count("response.created") == 1
    assert events[0].response.id == events[-1].response.id
    assert events[-1].response.id.startswith("resp_6915a3c0")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert len(bad.requests) == 1
    assert metric(fleet, "firsttoken_requests_total", target="good", outcome="fell_back") == 1
    # the error event's code (server_error) counts as the target's 5xx
    assert metric(fleet, "firsttoken_upstream_errors_total", target="bad", status_class="5xx") == 1


def test_vllm_responses_reasoning_then_text_and_follow_ups_pinned_on_either_shape(
    run: Any,
) -> None:
    # vLLM writes `type` last and its response's id first; OpenAI the other way round:
    # the router must read each response's id to pin its follow-ups, whatever the order.
    # (`kind: openai`: the replay answers every path, so no engine /metrics to scrape.)
    def config(servers: Mapping[str, Startable]) -> str:
        return (
            f"targets:\n{target('vllm', servers['vllm'])}\n{target('oai', servers['oai'])}\n"
            f"routes:\n{route('chat', ['vllm', 'oai']).replace('ordered', 'round_robin')}\n"
        )

    servers = {"vllm": replay("vllm_responses_reasoning"), "oai": replay("openai_responses_text")}
    fleet = run(servers, config)
    answered: dict[str, str] = {}
    with sdk(fleet) as client:
        for _ in range(2):  # round robin: one fresh turn on each
            with client.responses.with_streaming_response.create(
                model="chat", input="hi", stream=True
            ) as response:
                target_name = response.headers["x-firsttoken-target"]
                reason = response.headers["x-firsttoken-reason"]
                events = list(response.parse())
            done = events[-1]
            assert done.type == "response.completed"
            answered[target_name] = done.response.id
            if target_name == "vllm":
                assert "first token (reasoning)" in reason
                thinking = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
                assert "".join(thinking) == "Okay, the user greets me."
                assert done.response.output_text == "Hello! How can I help?"
        # Each follow-up goes where its previous response is stored, twice in a row
        # (round robin alone would send one of each two to the other target).
        for target_name, response_id in [item for item in answered.items() for _ in (1, 2)]:
            followed = client.responses.with_raw_response.create(
                model="chat", input="and then?", previous_response_id=response_id, stream=True
            )
            assert followed.headers["x-firsttoken-target"] == target_name
            list(followed.parse())
    assert set(answered) == {"vllm", "oai"}
    assert answered["vllm"] == "resp_9b2f6c1e8d4a4f0e9c7b5a3d2e1f0a9b"
    for server in servers.values():
        follow_ups = [r for r in server.requests if r.body.get("previous_response_id")]
        assert follow_ups and all(
            r.body["previous_response_id"] in answered.values() for r in follow_ups
        )
    # vLLM's reasoning tokens are inside its output tokens (13), counted once
    vllm_turns = len(servers["vllm"].requests)
    assert metric(fleet, "firsttoken_tokens_total", target="vllm", direction="output") == (
        13 * vllm_turns
    )
