"""Simulator backends as in-process upstreams: the router's seam without sockets."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from router.errors import UpstreamStatusError
from router.sim.behaviour import Behaviour
from router.sim.engine import EngineParams
from router.sim.hosted import DRAW_KEY_HEADER, HostedBackend, HostedParams, keyed_draw
from router.sim.inproc import AttemptRecord, InProcessUpstream
from router.sim.virtual import VirtualTimeLoop
from router.sim.vllm import VllmBackend
from router.upstream.base import UpstreamRequest


def body(n: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def run(main: Any) -> Any:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def test_an_engine_streams_openai_chunks_after_its_latency() -> None:
    async def main() -> tuple[bytes, list[AttemptRecord], float]:
        loop = asyncio.get_running_loop()
        backend = VllmBackend(EngineParams(step_s=0.02, prefill_s_per_token=0.0), "m", loop.time)
        await backend.start()
        records: list[AttemptRecord] = []
        up = InProcessUpstream(
            "gpu", backend, clock=loop.time, latency_s=0.03, on_attempt=records.append
        )
        response = await up.send(UpstreamRequest("chat", body(5), True, {DRAW_KEY_HEADER: "7"}))
        chunks = [c async for c in response.aiter_bytes()]
        await response.aclose()
        await backend.stop()
        return b"".join(chunks), records, loop.time()

    data, records, _ = run(main())
    events = [e[6:] for e in data.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads if p["choices"])
    assert text == "t0 t1 t2 t3 t4 "
    assert payloads[-1]["usage"]["completion_tokens"] == 5
    (record,) = records
    assert (record.target, record.key, record.tokens_sent, record.cancelled) == (
        "gpu",
        "7",
        5,
        False,
    )
    assert record.first_token_at == pytest.approx(0.02 + 0.03)  # one step, then the latency


def test_closing_early_cancels_the_engines_sequence() -> None:
    async def main() -> tuple[int, list[AttemptRecord]]:
        loop = asyncio.get_running_loop()
        backend = VllmBackend(EngineParams(step_s=0.02), "m", loop.time)
        await backend.start()
        records: list[AttemptRecord] = []
        up = InProcessUpstream("gpu", backend, clock=loop.time, on_attempt=records.append)
        response = await up.send(UpstreamRequest("chat", body(50), True, {}))
        stream = response.aiter_bytes()
        await anext(stream)
        await response.aclose()
        running = len(backend.engine.running)
        await backend.stop()
        return running, records

    running, records = run(main())
    assert running == 0
    assert records[0].cancelled and records[0].tokens_sent == 1


def test_a_rate_limited_api_raises_the_routers_429() -> None:
    async def main() -> UpstreamStatusError:
        loop = asyncio.get_running_loop()
        backend = HostedBackend(HostedParams(rpm=1), random.Random(1), loop.time)
        up = InProcessUpstream("api", backend, clock=loop.time)
        first = await up.send(UpstreamRequest("chat", body(), True, {}))
        await first.aclose()
        with pytest.raises(UpstreamStatusError) as caught:
            await up.send(UpstreamRequest("chat", body(), True, {}))
        return caught.value

    err = run(main())
    assert err.upstream_status == 429 and err.retryable
    assert err.retry_after_s == 60.0  # Retry-After in whole seconds, as the HTTP client reads it
    assert err.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_keyed_request_gets_its_own_draw_whatever_came_before() -> None:
    params = HostedParams(ttft_median_s=0.3, ttft_sigma=0.5, stall_probability=0.3, stall_s=2.0)

    async def first_tokens(keys: list[str]) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        backend = HostedBackend(params, random.Random(0), loop.time, salt="fleet:api")
        up = InProcessUpstream("api", backend, clock=loop.time, behaviour=Behaviour(tokens=3))
        out: dict[str, float] = {}
        for key in keys:
            start = loop.time()
            response = await up.send(UpstreamRequest("chat", body(3), True, {DRAW_KEY_HEADER: key}))
            await anext(response.aiter_bytes())
            out[key] = loop.time() - start
            await response.aclose()
        return out

    keys = [str(i) for i in range(20)]
    forward = run(first_tokens(keys))
    backward = run(first_tokens(keys[::-1]))
    assert forward == pytest.approx(backward)
    for key, seen in forward.items():
        assert seen == pytest.approx(keyed_draw(params, "fleet:api", key)[0])
    assert any(keyed_draw(params, "fleet:api", k)[1] for k in keys)  # some stalled
