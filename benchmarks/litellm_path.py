"""What litellm adds to time-to-first-token: litellm path vs raw HTTP, same simulator.

    .venv/bin/python benchmarks/litellm_path.py [--n 300] [--profile out.pstats]

The Anthropic simulator answers at once (TTFT 0), so every millisecond measured
is client-side overhead plus one loopback round trip. Three paths, each timed
from the call to the first content token:

    raw       httpx POST /v1/messages, stream, first `content_block_delta` line
    litellm   litellm.acompletion(stream=True) and its first content chunk
    upstream  LitellmUpstream.send (litellm plus re-framing; send returns at the
              first token), i.e. what a turn sees

With --profile, one extra run of `upstream` calls is written as cProfile stats and
the top functions by cumulative time are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from router.config import TargetConfig
from router.sim.anthropic import AnthropicSim
from router.sim.behaviour import Behaviour
from router.upstream.base import UpstreamRequest
from router.upstream.litellm import LitellmUpstream, load_litellm

MODEL = "anthropic/claude-3-5-haiku-20241022"
KEY = "sk-bench"
MESSAGES = [{"role": "user", "content": "hello there"}]


async def _time(fn: Callable[[], Awaitable[None]], n: int) -> list[float]:
    for _ in range(10):
        await fn()  # warm-up: connection pools, litellm's lazy imports
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100)
    mean = statistics.fmean(ms)
    return f"{name:<9} mean {mean:6.2f}  p50 {q[49]:6.2f}  p90 {q[89]:6.2f}  p99 {q[98]:6.2f} ms"


async def main(n: int, profile: str | None) -> None:
    t0 = time.perf_counter()
    litellm = load_litellm()
    print(f"import litellm: {(time.perf_counter() - t0) * 1000:.0f} ms")
    async with AnthropicSim(Behaviour(ttft_s=0.0, itl_s=0.0, tokens=8)) as sim:
        client = httpx.AsyncClient(base_url=sim.base_url)
        body = {"model": MODEL.split("/", 1)[1], "max_tokens": 64, "messages": MESSAGES,
                "stream": True}

        async def raw() -> None:
            async with client.stream("POST", "/v1/messages", json=body,
                                     headers={"x-api-key": KEY}) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("event: content_block_delta"):
                        break

        async def via_litellm() -> None:
            stream: Any = await litellm.acompletion(
                model=MODEL, messages=MESSAGES, stream=True, api_base=sim.base_url,
                api_key=KEY, max_tokens=64)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            await stream.aclose()

        up = LitellmUpstream(TargetConfig(name="claude", kind="litellm", base_url=sim.base_url,
                                          model=MODEL), KEY)
        request = UpstreamRequest("chat", {"model": MODEL, "messages": MESSAGES,
                                           "max_tokens": 64, "stream": True}, stream=True)

        async def via_upstream() -> None:
            resp = await up.send(request)
            await resp.aclose()

        cold = time.perf_counter()
        await via_upstream()
        print(f"first LitellmUpstream.send (cold): {(time.perf_counter() - cold) * 1000:.0f} ms")
        for name, fn in (("raw", raw), ("litellm", via_litellm), ("upstream", via_upstream)):
            print(_row(name, await _time(fn, n)))

        if profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(n):
                await via_upstream()
            prof.disable()
            prof.dump_stats(profile)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        await up.aclose()
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--profile", default=None, help="write cProfile stats here")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.profile))
