from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.sim.behaviour import Behaviour
from router.sim.engine import EngineParams
from router.sim.vllm import VllmSim
from tests.sim.conftest import chat_body, hang_up, open_raw_stream, wait_for

pytestmark = pytest.mark.anyio


async def scrape(client: httpx.AsyncClient, sim: VllmSim) -> dict[str, float]:
    """Samples by name, plus `name{reason}` for request_success."""
    r = await client.get(f"{sim.url}/metrics")
    assert r.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            assert s.labels.get("model_name") == "sim-llama"
            key = s.name
            if "finished_reason" in s.labels:
                key = f"{s.name}{{{s.labels['finished_reason']}}}"
            if "le" not in s.labels:
                out[key] = s.value
    return out


async def stream(client: httpx.AsyncClient, sim: VllmSim, content: str, n: int) -> None:
    body = chat_body(content, stream=True, max_tokens=n)
    r = await client.post(f"{sim.base_url}/chat/completions", json=body)
    assert r.text.count('"content":"t') == n


async def test_ttft_grows_with_queue_depth(client: httpx.AsyncClient) -> None:
    params = EngineParams(max_num_seqs=2, step_s=0.01, step_s_per_seq=0.0)
    async with VllmSim(params, Behaviour(tokens=5), model="sim-llama") as sim:
        await asyncio.gather(*(stream(client, sim, f"q{i}", 5) for i in range(8)))
        records = sorted(sim.records, key=lambda r: r.received_at)
        ttfts = [r.first_token_at - r.received_at for r in records if r.first_token_at]
        assert len(ttfts) == 8
        # the first pair runs at once; the last pair waited for three pairs of 5 steps
        assert min(ttfts[-2:]) > max(ttfts[:2]) + 10 * params.step_s
        metrics = await scrape(client, sim)
        assert metrics["vllm:request_queue_time_seconds_count"] == 8
        assert metrics["vllm:request_queue_time_seconds_sum"] > 0.1


async def test_metrics_agree_with_what_it_serves(client: httpx.AsyncClient) -> None:
    params = EngineParams(max_num_seqs=2, step_s=0.01, step_s_per_seq=0.0)
    async with VllmSim(params, Behaviour(tokens=10), model="sim-llama") as sim:
        tasks = [asyncio.create_task(stream(client, sim, f"question {i}", 10)) for i in range(6)]
        await wait_for(lambda: len(sim.engine.running) == 2 and len(sim.engine.waiting) == 4)
        during = await scrape(client, sim)
        assert during["vllm:num_requests_running"] == 2
        assert during["vllm:num_requests_waiting"] == 4
        assert 0 < during["vllm:kv_cache_usage_perc"] <= 1
        await asyncio.gather(*tasks)
        after = await scrape(client, sim)
        assert after["vllm:num_requests_running"] == 0
        assert after["vllm:num_requests_waiting"] == 0
        assert after["vllm:kv_cache_usage_perc"] == 0
        assert after["vllm:generation_tokens_total"] == 60
        assert after["vllm:prompt_tokens_total"] == sum(
            max(1, len(f"question {i}") // 4) for i in range(6)
        )
        assert after["vllm:request_success_total{stop}"] == 6
        assert after["vllm:time_to_first_token_seconds_count"] == 6
        assert after["vllm:inter_token_latency_seconds_count"] == 54
        assert after["vllm:e2e_request_latency_seconds_count"] == 6


async def test_prefix_cache_hit_lowers_ttft(client: httpx.AsyncClient) -> None:
    params = EngineParams(prefill_s_per_token=0.0002, step_s=0.005)
    system = {"role": "system", "content": "s" * 8000}  # 2000 tokens: 0.4 s of prefill
    first = [system, {"role": "user", "content": "hi"}]
    second = [*first, {"role": "assistant", "content": "t0 "}, {"role": "user", "content": "again"}]
    async with VllmSim(params, Behaviour(tokens=1), model="sim-llama") as sim:
        for messages in (first, second):
            body = {"model": "m", "messages": messages, "stream": True}
            await client.post(f"{sim.base_url}/chat/completions", json=body)
        cold, warm = (
            r.first_token_at - r.received_at for r in sim.records if r.first_token_at is not None
        )
        assert warm < cold / 2
        metrics = await scrape(client, sim)
        assert metrics["vllm:prefix_cache_hits_total"] >= 2000
        assert metrics["vllm:prefix_cache_queries_total"] == metrics["vllm:prompt_tokens_total"]


async def test_disconnect_aborts_running_and_waiting(client: httpx.AsyncClient) -> None:
    params = EngineParams(max_num_seqs=1, step_s=0.01)
    async with VllmSim(params, Behaviour(tokens=1000), model="sim-llama") as sim:
        running_r, running_w = await open_raw_stream(sim.port, chat_body("a", stream=True))
        await running_r.readuntil(b'"t0 "')
        _, waiting_w = await open_raw_stream(sim.port, chat_body("b", stream=True))
        await wait_for(lambda: len(sim.engine.waiting) == 1)
        await hang_up(waiting_w)
        await wait_for(lambda: not sim.engine.waiting)
        assert len(sim.engine.running) == 1
        await hang_up(running_w)
        await wait_for(lambda: not sim.engine.running)
        assert sim.engine.kv_used == 0
        assert all(r.cancelled_at is not None for r in sim.records)
        metrics = await scrape(client, sim)
        assert metrics["vllm:request_success_total{abort}"] == 2


async def test_too_long_prompt_is_a_400(client: httpx.AsyncClient) -> None:
    async with VllmSim(EngineParams(max_model_len=100), model="sim-llama") as sim:
        r = await client.post(f"{sim.base_url}/chat/completions", json=chat_body("x" * 1000))
        assert r.status_code == 400
        assert "maximum context length" in r.json()["error"]["message"]
