"""What do Redis-backed global limits cost a turn? The router with them on versus off.

    .venv/bin/python benchmarks/redis_limits.py --concurrency 16,64 --duration 8 \
        --warmup 2 --rounds 2 --out benchmarks/out/redis_limits.json

Two routers (`firsttoken serve`) in front of the same simulated upstream
(benchmarks/overhead.py's: 50 ms TTFT, 10 ms between tokens, 20 tokens), with the
same targets, each with an `rpm` and `tpm` far above the load so nothing is ever
refused: "off" counts them locally only, "on" also has a `state:` block, so every
turn is counted against a local `redis-server` (no persistence): far below the
limits, as here, on the replica's view of the global counters (no wait; charges
flushed to Redis every 50 ms), with the exact Lua check only while a view is
unknown or stale (at start). The closed-loop load generator (benchmarks/loadgen.py)
runs at each concurrency against off, then on, `--rounds` times, interleaved so
that each delta compares runs seconds apart on a machine whose load may drift.

Reported per point: TTFT p50/p99 as the client sees it, streams/s, the router's
CPU ms per stream; per concurrency the added TTFT (on minus off, median over
rounds) and the throughput ratio; and, from the "on" router's /metrics, its
per-turn fallbacks to local state (a turn whose Redis check passed `timeout_ms`),
the time the router adds before the upstream call (`pre_upstream`, which
contains any wait for Redis), the share of turns decided on the replica's view
and the limit calls sent to Redis per turn.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# overhead.py is a script beside this one, not a package module
from overhead import ROOT, Proc, Target, machine, managed, run_point, start_upstream, wait_http

from router.sim.ports import free_port

MODEL = "bench"
#: the bar from the issue: the Redis path adds at most this much TTFT at p50
BAR_ADDED_P50_MS = 0.5
#: limits far above the load (nothing is refused; every turn is counted)
RPM = 100_000_000
TPM = 10_000_000_000


def start_redis(workdir: Path) -> tuple[Proc, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"]
    proc = Proc("redis", argv, workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if ping.stdout.strip() == "PONG":
            return proc, port
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start:\n{proc.log_tail()}")


def config(ports: Sequence[int], redis_url: str | None, timeout_ms: float) -> str:
    lines = []
    if redis_url is not None:
        lines.append(
            f"state: {{redis_url: '{redis_url}', key_prefix: 'bench:', timeout_ms: {timeout_ms}}}"
        )
    lines.append("targets:")
    for i, port in enumerate(ports):
        lines.append(
            f"  - {{name: sim-{i}, kind: openai, base_url: 'http://127.0.0.1:{port}/v1',"
            f" model: sim-model, expected_ttft_ms: 50, rpm: {RPM}, tpm: {TPM},"
            f" timeouts: {{connect_s: 5, first_token_s: 60, idle_s: 60}}}}"
        )
    names = ", ".join(f"sim-{i}" for i in range(len(ports)))
    route = f"{{name: {MODEL}, targets: [{names}], policy: {{type: round_robin}}}}"
    lines += ["routes:", f"  - {route}"]
    return "\n".join(lines) + "\n"


def start_router(workdir: Path, name: str, text: str) -> Target:
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(text)
    exe = ROOT / ".venv" / "bin" / "firsttoken"
    binary = str(exe) if exe.exists() else shutil.which("firsttoken")
    if binary is None:
        raise SystemExit("firsttoken is not installed (make install)")
    port = free_port()
    argv = [binary, "serve", "--config", str(cfg), "--port", str(port), "--log-level", "warning"]
    proc = Proc(name, argv, workdir, env=dict(os.environ), cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
    return Target(name, [f"http://127.0.0.1:{port}/v1/chat/completions"], proc)


def scrape(target: Target) -> str:
    url = target.urls[0].replace("/v1/chat/completions", "/metrics")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text
    except OSError as exc:  # say why: the router's own last words
        tail = target.proc.log_tail() if target.proc is not None else ""
        raise RuntimeError(f"cannot scrape {target.name} ({exc}):\n{tail}") from exc


def metric(text: str, pattern: str) -> float:
    """Sum of the samples whose line matches `pattern` (a regex up to the value)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(pattern + r"\s+([0-9.e+-]+)$", line)
        if m:
            total += float(m.group(1))
    return total


def pre_upstream(text: str) -> tuple[float, float]:
    """(count, sum seconds) of the router's pre-upstream overhead histogram."""
    base = r'firsttoken_router_overhead_seconds_{}\{{phase="pre_upstream"\}}'
    return metric(text, base.format("count")), metric(text, base.format("sum"))


def run(args: argparse.Namespace) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ft-redis-bench-"))
    info = machine()
    print(f"# redis limits: {info['nproc']} cores, {info['cpu']}; logs in {workdir}", flush=True)
    procs: list[Proc] = []
    points: list[dict[str, Any]] = []
    with managed(procs):
        redis, redis_port = start_redis(workdir)
        procs.append(redis)
        ports = [free_port(), free_port()]
        upstream = start_upstream(workdir, ports, args)
        procs.append(upstream)
        url = f"redis://127.0.0.1:{redis_port}/0"
        off = start_router(workdir, "off", config(ports, None, args.timeout_ms))
        on = start_router(workdir, "on", config(ports, url, args.timeout_ms))
        assert off.proc is not None and on.proc is not None
        procs += [off.proc, on.proc]
        for _ in range(50):  # the "on" router's link comes up with its first heartbeat
            if "firsttoken_shared_state_up 1.0" in scrape(on):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the 'on' router never reached Redis:\n{on.proc.log_tail()}")
        for round_ in range(args.rounds):
            for c in concurrencies:
                for target in (off, on):
                    before = scrape(target)
                    point = run_point(target, c, args, upstream)
                    after = scrape(target)
                    n0, s0 = pre_upstream(before)
                    n1, s1 = pre_upstream(after)
                    fb = r'firsttoken_shared_state_fallbacks_total\{op="limit"\}'
                    dv = r'firsttoken_shared_state_limit_decisions_total\{path="view"\}'
                    dr = r'firsttoken_shared_state_limit_decisions_total\{path="redis"\}'
                    calls = "firsttoken_shared_state_limit_calls_total"
                    point.update(
                        round=round_,
                        pre_upstream_mean_ms=round(1000 * (s1 - s0) / (n1 - n0), 3)
                        if n1 > n0
                        else None,
                        limit_fallbacks=metric(after, fb) - metric(before, fb),
                        decided_on_view=metric(after, dv) - metric(before, dv),
                        decided_by_redis=metric(after, dr) - metric(before, dr),
                        redis_limit_calls=metric(after, calls) - metric(before, calls),
                    )
                    points.append(point)
                    print(
                        f"# {target.name:<3} c={c:<3} round {round_}: p50 {point['ttft_p50_ms']}"
                        f" ms p99 {point['ttft_p99_ms']} ms {point['streams_per_s']} streams/s"
                        f" cpu {point['proxy_cpu_ms_per_stream']} ms/stream pre-upstream"
                        f" {point['pre_upstream_mean_ms']} ms fallbacks"
                        f" {point['limit_fallbacks']:.0f} on view"
                        f" {point['decided_on_view']:.0f} by redis {point['decided_by_redis']:.0f}"
                        f" redis calls {point['redis_limit_calls']:.0f}"
                        f" errors {point['errors']}"
                        f" load {point['loadavg_1m']}",
                        flush=True,
                    )
        redis_ops = subprocess.run(
            ["redis-cli", "-p", str(redis_port), "info", "stats"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    summary = summarize(points, concurrencies)
    result = {
        "machine": info,
        "workload": {
            "ttft_ms": args.ttft_ms,
            "itl_ms": args.itl_ms,
            "tokens": args.tokens,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "timeout_ms": args.timeout_ms,
        },
        "points": points,
        "summary": summary,
        "redis_total_commands": metric(redis_ops.replace(":", " "), "total_commands_processed"),
        "run_time_s": round(time.monotonic() - began, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarize(points: list[dict[str, Any]], concurrencies: list[int]) -> list[dict[str, Any]]:
    rows = []
    for c in concurrencies:
        pairs = [
            (p, q)
            for p in points
            for q in points
            if p["target"] == "off"
            and q["target"] == "on"
            and p["concurrency"] == q["concurrency"] == c
            and p["round"] == q["round"]
            # a window too short (or a machine too busy) for any stream to finish
            and p["ttft_p50_ms"] is not None
            and q["ttft_p50_ms"] is not None
        ]
        added_p50 = _median([q["ttft_p50_ms"] - p["ttft_p50_ms"] for p, q in pairs])
        added_p99 = _median([q["ttft_p99_ms"] - p["ttft_p99_ms"] for p, q in pairs])
        rows.append(
            {
                "concurrency": c,
                "off_ttft_p50_ms": _median([p["ttft_p50_ms"] for p, _ in pairs]),
                "on_ttft_p50_ms": _median([q["ttft_p50_ms"] for _, q in pairs]),
                "added_ttft_p50_ms": added_p50,
                "added_ttft_p99_ms": added_p99,
                "throughput_ratio": _median(
                    [q["streams_per_s"] / p["streams_per_s"] for p, q in pairs]
                ),
                "off_cpu_ms_per_stream": _median([p["proxy_cpu_ms_per_stream"] for p, _ in pairs]),
                "on_cpu_ms_per_stream": _median([q["proxy_cpu_ms_per_stream"] for _, q in pairs]),
                "added_pre_upstream_ms": _median(
                    [
                        q["pre_upstream_mean_ms"] - p["pre_upstream_mean_ms"]
                        for p, q in pairs
                        if q["pre_upstream_mean_ms"] is not None
                        and p["pre_upstream_mean_ms"] is not None
                    ]
                ),
                "limit_fallbacks": sum(q["limit_fallbacks"] for _, q in pairs),
                "decided_on_view": sum(q["decided_on_view"] for _, q in pairs),
                "decided_by_redis": sum(q["decided_by_redis"] for _, q in pairs),
                "redis_limit_calls": sum(q["redis_limit_calls"] for _, q in pairs),
                "meets_bar": added_p50 is not None and added_p50 <= BAR_ADDED_P50_MS,
            }
        )
    return rows


def markdown(summary: list[dict[str, Any]]) -> str:
    head = (
        "| concurrency | TTFT p50 off / on (ms) | added p50 (ms) | added p99 (ms) "
        "| throughput on/off | router CPU off / on (ms/stream) | added pre-upstream (ms) "
        "| fallbacks | decided on view / by Redis | Redis calls |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r['concurrency']} | {r['off_ttft_p50_ms']} / {r['on_ttft_p50_ms']} "
        f"| {r['added_ttft_p50_ms']} | {r['added_ttft_p99_ms']} | {r['throughput_ratio']} "
        f"| {r['off_cpu_ms_per_stream']} / {r['on_cpu_ms_per_stream']} "
        f"| {r['added_pre_upstream_ms']} | {r['limit_fallbacks']:.0f} "
        f"| {r['decided_on_view']:.0f} / {r['decided_by_redis']:.0f} "
        f"| {r['redis_limit_calls']:.0f} |"
        for r in summary
    ]
    return "\n".join([head, *rows])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="16,64")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--timeout-ms", type=float, default=5.0, help="state.timeout_ms")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--out", default="benchmarks/out/redis_limits.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print()
    print(markdown(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
