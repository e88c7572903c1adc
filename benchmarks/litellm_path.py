"""What litellm adds to time-to-first-token, directly and through the router.

    .venv/bin/python benchmarks/litellm_path.py [--n 400] [--concurrency 1 16]
        [--skip-direct] [--skip-router] [--profile out.pstats]

The simulators answer at once (TTFT 0, no gap between tokens), so every millisecond
measured is client-side or router overhead plus loopback round trips.

Direct (one process, as the old version of this script): each path timed from the
call to the first content token, against the Anthropic simulator:

    raw       httpx POST /v1/messages, stream, first `content_block_delta` line
    litellm   litellm.acompletion(stream=True) and its first content chunk
    upstream  LitellmUpstream.send (litellm plus re-framing; send returns at the
              first token), i.e. what a turn sees

Through the router (three processes: simulators, `firsttoken serve`, this load
generator): streamed turns at each concurrency, timed to the first content chunk:

    openai direct     the OpenAI-compatible simulator, no router
    openai routed     the same simulator through the router's raw fast path
    anthropic direct  the Anthropic simulator, no router (raw httpx)
    litellm routed    the Anthropic simulator through the router and litellm

"Added" is routed minus direct at the same concurrency. The router is not warmed
up by the app yet (see RESULTS.md): the first litellm turn is reported apart.

--profile profiles whole streams through LitellmUpstream (send and every frame) in
process, and splits the time per request into litellm's phases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from router.config import TargetConfig
from router.sim.anthropic import AnthropicSim
from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from router.upstream.base import UpstreamRequest
from router.upstream.litellm import LitellmUpstream, load_litellm

MODEL = "anthropic/claude-3-5-haiku-20241022"
KEY = "sk-bench"
MESSAGES = [{"role": "user", "content": "hello there"}]
INSTANT = Behaviour(ttft_s=0.0, itl_s=0.0, tokens=8)
ROOT = Path(__file__).resolve().parent.parent


def _summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    return {"mean": statistics.fmean(ms), "p50": q[49], "p90": q[89], "p99": q[98]}


def _row(name: str, ms: list[float]) -> str:
    s = _summary(ms)
    return (
        f"{name:<18} mean {s['mean']:6.2f}  p50 {s['p50']:6.2f}  p90 {s['p90']:6.2f}"
        f"  p99 {s['p99']:6.2f} ms"
    )


# -- direct, in one process -----------------------------------------------------------------


async def _time(fn: Callable[[], Awaitable[None]], n: int) -> list[float]:
    for _ in range(10):
        await fn()  # warm-up: connection pools, litellm's lazy imports
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def direct(n: int) -> None:
    t0 = time.perf_counter()
    litellm = load_litellm()
    print(f"import litellm: {(time.perf_counter() - t0) * 1000:.0f} ms")
    async with AnthropicSim(INSTANT) as sim:
        client = httpx.AsyncClient(base_url=sim.base_url)
        body = {
            "model": MODEL.split("/", 1)[1],
            "max_tokens": 64,
            "messages": MESSAGES,
            "stream": True,
        }

        async def raw() -> None:
            async with client.stream(
                "POST", "/v1/messages", json=body, headers={"x-api-key": KEY}
            ) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("event: content_block_delta"):
                        break

        async def via_litellm() -> None:
            stream: Any = await litellm.acompletion(
                model=MODEL,
                messages=MESSAGES,
                stream=True,
                api_base=sim.base_url,
                api_key=KEY,
                max_tokens=64,
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            await stream.aclose()

        up = _upstream(sim.base_url)
        request = _request()

        async def via_upstream() -> None:
            resp = await up.send(request)
            await resp.aclose()

        warm = time.perf_counter()
        await up.warm_up()
        print(f"LitellmUpstream.warm_up(): {(time.perf_counter() - warm) * 1000:.0f} ms")
        cold = time.perf_counter()
        await via_upstream()
        print(
            f"first LitellmUpstream.send after warm_up: "
            f"{(time.perf_counter() - cold) * 1000:.0f} ms"
        )
        for name, fn in (("raw", raw), ("litellm", via_litellm), ("upstream", via_upstream)):
            print(_row(name, await _time(fn, n)))
        await up.aclose()
        await client.aclose()


def _upstream(base_url: str) -> LitellmUpstream:
    return LitellmUpstream(
        TargetConfig(name="claude", kind="litellm", base_url=base_url, model=MODEL), KEY
    )


def _request() -> UpstreamRequest:
    return UpstreamRequest(
        "chat",
        {"model": MODEL, "messages": MESSAGES, "max_tokens": 64, "stream": True},
        stream=True,
    )


# -- profile: where a whole litellm stream spends its time ---------------------------------

#: (label, function-name substrings) whose cumulative time is reported per request
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("whole stream (send + all frames)", ("litellm_path.py:", "one_stream")),
    ("acompletion() until the stream object", ("dispatch.py:100(acompletion)",)),
    ("  cost calc on return (completion_cost)", ("response_metadata.py:252(update_response",)),
    ("per-chunk chunk_creator", ("streaming_handler.py:1417(chunk_creator)",)),
    ("success handlers at end of stream", ("litellm_logging.py:2194(dispatch_success",)),
    ("  of which completion_cost", ("cost_calculator.py:1422(completion_cost)",)),
    ("our re-framing (litellm_frames)", ("litellm_frames.py",)),
)


async def profile(n: int, path: str) -> None:
    load_litellm()
    async with AnthropicSim(INSTANT) as sim:
        up = _upstream(sim.base_url)
        request = _request()
        await up.warm_up()

        async def one_stream() -> None:
            resp = await up.send(request)
            async for _ in resp.aiter_bytes():
                pass
            await resp.aclose()

        for _ in range(20):
            await one_stream()
        plain = await _time(one_stream, n)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(n):
            await one_stream()
        prof.disable()
        await up.aclose()
    prof.dump_stats(path)
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    print(
        f"\nwhole stream, unprofiled: mean {statistics.fmean(plain):.2f} ms "
        f"(8 tokens, TTFT 0); profiled shares below (cProfile inflates absolute times)"
    )
    whole = None
    for label, needles in PHASES:
        total = 0.0
        for (file, line, func), (_, _, _, cum, _) in stats.items():
            where = f"{os.path.basename(file)}:{line}({func})"
            if any(needle in where for needle in needles) or (
                needles == ("litellm_frames.py",) and file.endswith("litellm_frames.py")
            ):
                total = max(total, cum) if needles != ("litellm_frames.py",) else total + cum
        if label.startswith("whole"):
            total = max(
                cum for (f, _, fn), (_, _, _, cum, _) in stats.items() if fn == "one_stream"
            )
            whole = total
        share = f"{100 * total / whole:5.1f}%" if whole else ""
        print(f"  {label:<42} {total * 1000 / n:7.2f} ms/request {share}")


# -- through the router, three processes ----------------------------------------------------


async def _serve_sims() -> None:
    """Child process: both simulators; prints their base URLs, serves until stdin closes."""
    openai_sim = OpenAISim(INSTANT, model="oai-model")
    anthropic_sim = AnthropicSim(INSTANT)
    await openai_sim.start()
    await anthropic_sim.start()
    print(
        json.dumps({"openai": openai_sim.base_url, "anthropic": anthropic_sim.base_url}), flush=True
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await openai_sim.stop()
    await anthropic_sim.stop()


CONFIG = """
server: {{port: {port}}}
targets:
  - name: oai
    kind: openai
    base_url: {openai}
    model: oai-model
  - name: claude
    kind: litellm
    base_url: {anthropic}
    model: {model}
    api_key_env: BENCH_ANTHROPIC_KEY
routes:
  - name: raw
    targets: [oai]
    exploration: 0
  - name: litellm
    targets: [claude]
    exploration: 0
"""


@contextlib.contextmanager
def _processes() -> Iterator[tuple[dict[str, str], str]]:
    python = sys.executable
    sims = subprocess.Popen(
        [python, __file__, "_sims"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    router = None
    try:
        assert sims.stdout is not None
        urls: dict[str, str] = json.loads(sims.stdout.readline())
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(CONFIG.format(port=port, model=MODEL, **urls))
        env = {**os.environ, "BENCH_ANTHROPIC_KEY": KEY}
        router = subprocess.Popen(
            [
                str(Path(python).parent / "firsttoken"),
                "serve",
                "--config",
                f.name,
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            time.sleep(0.05)
        yield urls, url
    finally:
        if router is not None:
            router.terminate()
            router.wait(10)
        if sims.stdin is not None:
            sims.stdin.close()
        sims.wait(10)


async def _first_token_ms(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    marker: bytes,
) -> float:
    start = time.perf_counter()
    async with client.stream("POST", url, json=body, headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: {resp.status_code} {(await resp.aread())[:200]!r}")
        ms = None
        async for chunk in resp.aiter_raw():  # read to the end: the turn completes
            if ms is None and marker in chunk:
                ms = (time.perf_counter() - start) * 1000
    if ms is None:
        raise RuntimeError(f"{url}: no content")
    return ms


async def _load(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    marker: bytes,
    *,
    n: int,
    concurrency: int,
) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        for _ in range(max(10, concurrency)):
            await _first_token_ms(client, url, body, headers, marker)
        out: list[float] = []

        async def worker(count: int) -> None:
            for _ in range(count):
                out.append(await _first_token_ms(client, url, body, headers, marker))

        share = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(k) for k in share))
        return out


async def routed(n: int, concurrencies: list[int]) -> None:
    with _processes() as (sims, router):
        chat = {"messages": MESSAGES, "max_tokens": 64, "stream": True}
        cold_body = {**chat, "model": "litellm"}
        async with httpx.AsyncClient(timeout=30.0) as client:
            cold = await _first_token_ms(
                client, f"{router}/v1/chat/completions", cold_body, {}, b'"content":"t'
            )
        print(f"first litellm turn through a fresh router (no warm-up in app): {cold:.0f} ms")
        paths: tuple[tuple[str, str, dict[str, Any], dict[str, str], bytes], ...] = (
            (
                "openai direct",
                f"{sims['openai']}/chat/completions",
                {**chat, "model": "oai-model"},
                {},
                b'"content":"t',
            ),
            (
                "openai routed",
                f"{router}/v1/chat/completions",
                {**chat, "model": "raw"},
                {},
                b'"content":"t',
            ),
            (
                "anthropic direct",
                f"{sims['anthropic']}/v1/messages",
                {**chat, "model": MODEL.split("/", 1)[1]},
                {"x-api-key": KEY},
                b"content_block_delta",
            ),
            (
                "litellm routed",
                f"{router}/v1/chat/completions",
                {**chat, "model": "litellm"},
                {},
                b'"content":"t',
            ),
        )
        results: dict[tuple[str, int], list[float]] = {}
        for c in concurrencies:
            print(f"\nconcurrency {c}, {n} streamed turns per path:")
            for name, url, body, headers, marker in paths:
                ms = await _load(url, body, headers, marker, n=n, concurrency=c)
                results[(name, c)] = ms
                print(_row(name, ms))
            for routed_name, direct_name in (
                ("openai routed", "openai direct"),
                ("litellm routed", "anthropic direct"),
            ):
                r = _summary(results[(routed_name, c)])
                d = _summary(results[(direct_name, c)])
                print(
                    f"  added by router, {routed_name.split()[0]:<8} p50 "
                    f"{r['p50'] - d['p50']:6.2f}  p90 {r['p90'] - d['p90']:6.2f} ms"
                )


def main() -> None:
    if sys.argv[1:] == ["_sims"]:
        asyncio.run(_serve_sims())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--skip-direct", action="store_true")
    parser.add_argument("--skip-router", action="store_true")
    parser.add_argument("--profile", default=None, help="write cProfile stats here")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}; {time.strftime('%Y-%m-%d %H:%M')}")
    if not args.skip_direct:
        asyncio.run(direct(args.n))
    if args.profile:
        asyncio.run(profile(min(args.n, 200), args.profile))
    if not args.skip_router:
        asyncio.run(routed(args.n, args.concurrency))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
