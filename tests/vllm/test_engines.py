"""The two real vLLM engines serve: streaming chat, load metrics, capacity, disconnect."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from openai import OpenAI

from router.signals.engine import parse_metrics
from tests.vllm.engines import Engine, VllmEngines, metric_value

# The first test also pays for building the model and starting both engines.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(480)]

# Nearly as much as --max-model-len (`engines.MAX_MODEL_LEN`) leaves after the short prompt:
# seconds of decoding (see there).
LONG_TOKENS = 4000
LOAD_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_count",
)


def _engine(engines: VllmEngines, name: str) -> Engine:
    return engines.small if name == "small" else engines.large


def _metrics(engine: Engine) -> str:
    response = httpx.get(f"{engine.base_url}/metrics", timeout=5.0)
    response.raise_for_status()
    return response.text


def _wait_for(
    engine: Engine, want: dict[str, float], timeout_s: float, every_s: float = 0.02
) -> float:
    """Poll /metrics until every gauge in ``want`` has its value; return the seconds it took."""
    began = time.monotonic()
    seen: dict[str, float | None] = {}
    while time.monotonic() - began < timeout_s:
        text = _metrics(engine)
        seen = {name: metric_value(text, name) for name in want}
        if all(seen[name] == value for name, value in want.items()):
            return time.monotonic() - began
        time.sleep(every_s)
    raise AssertionError(f"{engine.spec.name}: wanted {want} within {timeout_s} s, last {seen}")


def _chat_body(max_tokens: int, content: str = "Say something.") -> dict[str, object]:
    return {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }


def _content_deltas(response: httpx.Response) -> Iterator[str]:
    """Non-empty ``delta.content`` strings of an OpenAI SSE stream, as they arrive."""
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        for choice in chunk.get("choices", []):
            text = choice.get("delta", {}).get("content")
            if text:
                yield text


@pytest.mark.parametrize("name", ["small", "large"])
def test_openai_sdk_streams_a_chat_completion(vllm_engines: VllmEngines, name: str) -> None:
    engine = _engine(vllm_engines, name)
    with OpenAI(base_url=engine.openai_base_url, api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=vllm_engines.model_name,
            messages=[{"role": "user", "content": "Hello, tiny model."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        contents: list[str] = []
        finish_reasons: list[str] = []
        completion_tokens: int | None = None
        with stream:
            for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta.content:
                        contents.append(choice.delta.content)
                    if choice.finish_reason:
                        finish_reasons.append(choice.finish_reason)
                if chunk.usage is not None:
                    completion_tokens = chunk.usage.completion_tokens
    # Random weights: gibberish, and some tokens decode to nothing, so chunks <= tokens.
    assert 1 <= len(contents) <= 16
    assert "".join(contents)
    assert finish_reasons == ["length"]
    assert completion_tokens == 16


@pytest.mark.parametrize("name", ["small", "large"])
def test_metrics_expose_the_load_signals(vllm_engines: VllmEngines, name: str) -> None:
    engine = _engine(vllm_engines, name)
    with httpx.stream(
        "POST", f"{engine.openai_base_url}/chat/completions", json=_chat_body(4), timeout=30.0
    ) as response:
        response.raise_for_status()
        assert list(_content_deltas(response))
    text = _metrics(engine)
    values = {metric: metric_value(text, metric) for metric in LOAD_METRICS}
    assert all(value is not None for value in values.values()), values
    assert values["vllm:num_requests_running"] == 0
    assert values["vllm:num_requests_waiting"] == 0
    usage = values["vllm:kv_cache_usage_perc"]
    assert usage is not None
    assert 0.0 <= usage <= 1.0
    ttft_count = values["vllm:time_to_first_token_seconds_count"]
    assert ttft_count is not None
    assert ttft_count >= 1
    # the router's parser reads the engine's decode pace off the real page: a gap per
    # token after the first (four tokens asked, three gaps at least in this test)
    sample = parse_metrics(text)
    assert sample.itl_count is not None and sample.itl_count >= 3
    assert sample.itl_sum is not None and 0.0 < sample.itl_sum / sample.itl_count < 5.0


def test_small_engine_runs_two_and_queues_the_rest(vllm_engines: VllmEngines) -> None:
    """``--max-num-seqs 2``: four concurrent streams show as 2 running and 2 waiting."""
    engine = vllm_engines.small
    stop = threading.Event()
    errors: list[Exception] = []

    def hold_stream(index: int) -> None:
        try:
            with httpx.stream(
                "POST",
                f"{engine.openai_base_url}/chat/completions",
                json=_chat_body(LONG_TOKENS, f"Stream number {index}."),
                timeout=60.0,
            ) as response:
                response.raise_for_status()
                for _ in response.iter_lines():
                    if stop.is_set():
                        return
        except Exception as exc:  # reported by the main thread's assertion
            errors.append(exc)

    threads = [threading.Thread(target=hold_stream, args=(i,), daemon=True) for i in range(4)]
    with ExitStack() as cleanup:
        for thread in threads:
            cleanup.callback(thread.join, 30.0)
        cleanup.callback(stop.set)
        for thread in threads:
            thread.start()
        try:
            _wait_for(
                engine,
                {"vllm:num_requests_running": 2, "vllm:num_requests_waiting": 2},
                timeout_s=15.0,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the streams' errors: {errors}") from exc
    assert not errors
    _wait_for(
        engine, {"vllm:num_requests_running": 0, "vllm:num_requests_waiting": 0}, timeout_s=5.0
    )


def test_client_disconnect_frees_the_engine_within_a_second(
    vllm_engines: VllmEngines, vllm_report: list[str]
) -> None:
    """Closing a stream mid-flight aborts the request: ``num_requests_running`` drops to 0."""
    engine = vllm_engines.large
    _wait_for(engine, {"vllm:num_requests_running": 0}, timeout_s=5.0)
    with (
        httpx.Client(timeout=60.0) as client,
        client.stream(
            "POST", f"{engine.openai_base_url}/chat/completions", json=_chat_body(LONG_TOKENS)
        ) as response,
    ):
        response.raise_for_status()
        deltas = _content_deltas(response)  # keep it: a collected generator closes the stream
        next(deltas)
        # The gauge can lag the stream on a busy 2-core box, so wait for it to show 1.
        _wait_for(engine, {"vllm:num_requests_running": 1}, timeout_s=10.0)
        closed_at = time.monotonic()
        # Leaving the block closes the response; the pool holds no other connection.
    took = _wait_for(engine, {"vllm:num_requests_running": 0}, timeout_s=5.0)
    since_close = time.monotonic() - closed_at
    vllm_report.append(f"disconnect -> num_requests_running 0 seen after {took * 1000:.0f} ms")
    assert took < 1.0, f"num_requests_running fell {took:.3f} s after the disconnect"
    assert since_close < 1.5
