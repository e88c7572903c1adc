"""What does the router add to a Realtime session? Direct vs FirstToken vs LiteLLM.

    .venv/bin/python benchmarks/realtime.py --concurrency 1,16,64 --duration 10 \
        --warmup 3 --peers litellm --out benchmarks/out/realtime.json

Sessions stream audio in real time both ways (`benchmarks/realtime_load.py`: a
20 ms frame of 24 kHz PCM16 appended every 20 ms, each session's clock at its own
phase as real microphones are (`--lockstep-appends`: all at once); a `response.create` every 2 s
answered by 1 s of audio in 20 ms frames, paced in real time, after a 50 ms time
to first audio) at each concurrency, direct to the simulator, through the router
(`firsttoken serve`) and through the LiteLLM proxy's `/v1/realtime` (its own venv,
`.venv-litellm-proxy`, `litellm[proxy]==1.106.2`). Every party is its own
process: the upstream (two `RealtimeSim` ports and a control port in one uvloop
process), the proxy, and the load generator.

Reported per point: TTFA p50/p99 (send of `response.create` to the first audio
delta, at the client), added TTFA (proxy minus direct), frames relayed per
second (both directions, counted at the client) and the proxy's CPU per relayed
frame (utime+stime of its process tree from /proc over the measured window).
Then, through the router only, migration: `--rounds` times the upstream closes
every session with 1011, every client sends `response.create` at once, and the
time from the close to the first audio delta of the answer (on a new upstream
session) is one sample. Bars (issue 18): added TTFA p50 <= 1 ms and p99 <= 5 ms
at 64 sessions, <= 100 us router CPU per frame, migration <= 1 s at p99.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
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
import gctrace
from overhead import (
    PEERS_DIR,
    ROOT,
    Proc,
    Target,
    cpu_seconds,
    managed,
    percentile,
    process_tree,
    wait_http,
)

from router.sim.ports import free_port

HERE = Path(__file__).resolve().parent
LOAD = HERE / "realtime_load.py"
ROUTE = "bench-rt"
LITELLM_KEY = "sk-firsttoken-bench"
BAR_ADDED_P50_MS = 1.0
BAR_ADDED_P99_MS = 5.0
BAR_CPU_US_PER_FRAME = 100.0
BAR_MIGRATION_P99_S = 1.0


# -- the parties -----------------------------------------------------------------------


def start_upstream(workdir: Path, ports: Sequence[int], control: int, ttfa_ms: float) -> Proc:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_upstream",
        "--ports",
        ",".join(map(str, ports)),
        "--control",
        str(control),
        "--ttfa-ms",
        str(ttfa_ms),
    ]
    proc = Proc("upstream", argv, workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return proc


def router_config(ports: Sequence[int], gc: str | None = None) -> str:
    lines = [gctrace.server_yaml(gc) + "targets:"]
    for i, port in enumerate(ports):
        lines.append(
            f"  - {{name: rt-{i}, kind: realtime, base_url: 'http://127.0.0.1:{port}/v1',"
            f" model: gpt-realtime, expected_ttft_ms: 50, timeouts: {{connect_s: 5}}}}"
        )
    names = ", ".join(f"rt-{i}" for i in range(len(ports)))
    lines += [
        "routes:",
        f"  - {{name: {ROUTE}, targets: [{names}], policy: {{type: ordered}}}}",
        "",
    ]
    return "\n".join(lines)


def start_firsttoken(
    workdir: Path, ports: Sequence[int], gc: str | None = None, gc_trace: bool = False
) -> Target:
    cfg = workdir / "firsttoken.yaml"
    cfg.write_text(router_config(ports, gc))
    binary = ROOT / ".venv" / "bin" / "firsttoken"
    port = free_port()
    argv = [
        str(binary),
        "serve",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    trace = workdir / "firsttoken.gc.jsonl" if gc_trace else None
    env = {**os.environ, **(gctrace.env(trace) if trace else {})}
    proc = Proc("firsttoken", argv, workdir, env=env, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
    url = f"ws://127.0.0.1:{port}/v1/realtime?model={ROUTE}"
    return Target("firsttoken", [url], proc, gc_trace=trace)


def start_floor(workdir: Path, ports: Sequence[int]) -> Target:
    """`realtime_floor.py`: the router's stack relaying with nothing of the router."""
    port = free_port()
    upstream = f"ws://127.0.0.1:{ports[0]}/v1/realtime"
    argv = [sys.executable, str(HERE / "realtime_floor.py"), "--upstream", upstream]
    proc = Proc("floor", [*argv, "--port", str(port)], workdir, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return Target("floor", [f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"], proc)


def start_litellm(workdir: Path, ports: Sequence[int], venv: Path) -> Target:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} not found: python3 -m venv {venv} && "
            f"{venv}/bin/pip install 'litellm[proxy]==1.106.2'"
        )
    text = (PEERS_DIR / "litellm-realtime.yaml").read_text()
    text = text.replace("@UPSTREAM_0@", f"http://127.0.0.1:{ports[0]}/v1")
    cfg = workdir / "litellm-realtime.yaml"
    cfg.write_text(text)
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "NO_DOCS": "True",
    }
    argv = [str(binary), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc("litellm", argv, workdir, env=env, cwd=workdir)
    wait_http(
        f"http://127.0.0.1:{port}/health/liveliness",
        proc,
        180,
        headers={"authorization": f"Bearer {LITELLM_KEY}"},
    )
    url = f"ws://127.0.0.1:{port}/v1/realtime?model={ROUTE}"
    return Target("litellm", [url], proc, api_key=LITELLM_KEY)


# -- one point -------------------------------------------------------------------------


def run_load(target: Target, extra: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run the load generator; sample the proxy's CPU at its window's edges."""
    argv = [sys.executable, str(LOAD), "--url", target.urls[0], *extra]
    if target.api_key:
        argv += ["--api-key", target.api_key]
    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = process_tree(target.proc.pid) if target.proc is not None else []
    cpu: list[float] = []
    result: dict[str, Any] = {}
    gc_pauses = None
    deadline = time.monotonic() + timeout_s
    assert gen.stdout is not None
    lag: list[dict[float, float]] = []
    for line in gen.stdout:
        msg = json.loads(line)
        if "window_start" in msg and target.name == "firsttoken":
            lag.append(loop_lag_buckets(target))  # scraped outside the CPU window
        if "window_start" in msg or "window_end" in msg:
            cpu.append(cpu_seconds(pids))
        if "window_end" in msg and target.name == "firsttoken":
            lag.append(loop_lag_buckets(target))
            if target.gc_trace is not None and target.proc is not None:
                gc_pauses = gctrace.mark(target.proc.pid, target.gc_trace)
        if "result" in msg:
            result = msg["result"]
        if time.monotonic() > deadline:
            gen.kill()
            break
    err = gen.stderr.read() if gen.stderr is not None else ""
    if gen.wait() != 0 or not result:
        raise RuntimeError(f"load generator failed against {target.name}:\n{err[-3000:]}")
    if len(cpu) == 2:
        result["proxy_cpu_s"] = cpu[1] - cpu[0]
    if len(lag) == 2:
        result["loop_lag"] = lag_summary(lag[0], lag[1])
    result["gc"] = gc_pauses
    return result


def loop_lag_buckets(target: Target) -> dict[float, float]:
    """The router's `firsttoken_event_loop_lag_seconds` buckets (cumulative counts)."""
    base = target.urls[0].replace("ws://", "http://", 1).split("/v1/")[0]
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    prefix = 'firsttoken_event_loop_lag_seconds_bucket{le="'
    buckets = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            le, _, count = line[len(prefix) :].partition('"} ')
            buckets[float(le)] = float(count)
    return buckets


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The window's loop-lag samples (every 0.1 s under load): how many, how many
    over 1 and 5 ms, and the bucket bound the largest stayed under."""
    window = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = window.get(float("inf"), 0.0)
    return {
        "samples": int(total),
        "over_1ms": int(total - window.get(0.001, 0.0)),
        "over_5ms": int(total - window.get(0.005, 0.0)),
        "max_under_ms": next((le * 1000 for le, n in window.items() if n >= total), None),
    }


def point(target: Target, sessions: int, args: argparse.Namespace) -> dict[str, Any]:
    extra = [
        "--sessions",
        str(sessions),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
    ]
    if args.lockstep_appends:
        extra.append("--lockstep-appends")
    raw = run_load(target, extra, args.warmup + args.duration + 120)
    ttfa = raw.pop("ttfa_s")
    frames = raw["frames_sent"] + raw["frames_received"]
    out: dict[str, Any] = {
        "party": target.name,
        "sessions": sessions,
        "ttfa_p50_ms": _ms(percentile(ttfa, 0.5)),
        "ttfa_p99_ms": _ms(percentile(ttfa, 0.99)),
        "responses": len(ttfa),
        "frames_per_s": round(frames / args.duration, 1),
        "errors": raw["errors"],
        "closed_early": raw["closed_early"],
        "gc": raw.get("gc"),  # the router's GC pauses in the window (--gc-trace)
        "loop_lag": raw.get("loop_lag"),  # the router's own loop-lag samples in the window
    }
    if "proxy_cpu_s" in raw and frames:
        out["cpu_us_per_frame"] = round(raw["proxy_cpu_s"] / frames * 1e6, 1)
        out["proxy_cpu_share"] = round(raw["proxy_cpu_s"] / args.duration, 3)
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def add_deltas(points: list[dict[str, Any]]) -> None:
    direct = {p["sessions"]: p for p in points if p["party"] == "direct"}
    for p in points:
        d = direct.get(p["sessions"])
        if d is None or p["party"] == "direct":
            continue
        for q in ("p50", "p99"):
            a, b = p[f"ttfa_{q}_ms"], d[f"ttfa_{q}_ms"]
            p[f"added_ttfa_{q}_ms"] = None if a is None or b is None else round(a - b, 3)


def markdown(points: list[dict[str, Any]], migration: dict[str, Any] | None) -> str:
    head = (
        "| party | sessions | TTFA p50 ms | p99 ms | added p50 | added p99 | frames/s "
        "| CPU us/frame | errors |\n|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for p in points:
        rows.append(
            f"| {p['party']} | {p['sessions']} | {p['ttfa_p50_ms']} | {p['ttfa_p99_ms']} "
            f"| {p.get('added_ttfa_p50_ms', '')} | {p.get('added_ttfa_p99_ms', '')} "
            f"| {p['frames_per_s']} | {p.get('cpu_us_per_frame', '')} | {p['errors']} |"
        )
    lags = [p for p in points if p.get("loop_lag")]
    if lags:
        rows.append(
            "\nThe router's event-loop lag in each window (a sample every 0.1 s): "
            + "; ".join(
                f"{p['sessions']} sessions: {p['loop_lag']['samples']} samples, "
                f"{p['loop_lag']['over_1ms']} over 1 ms, {p['loop_lag']['over_5ms']} over 5 ms, "
                f"max < {p['loop_lag']['max_under_ms']} ms"
                for p in lags
            )
            + "."
        )
    if migration is not None and "error" in migration:
        rows.append(
            f"\nMigration through the router ({migration['sessions']} sessions x "
            f"{migration['rounds']} rounds) FAILED:\n{migration['error']}"
        )
    elif migration is not None:
        rows.append(
            f"\nMigration through the router ({migration['sessions']} sessions x "
            f"{migration['rounds']} rounds): next response answered after "
            f"p50 {migration['p50_ms']} ms, p99 {migration['p99_ms']} ms, "
            f"max {migration['max_ms']} ms."
        )
    return "\n".join(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    peers = [p for p in args.peers.split(",") if p]
    workdir = Path(tempfile.mkdtemp(prefix="ft-realtime-"))
    procs: list[Proc] = []
    started = time.time()
    with managed(procs):
        ports = [free_port(), free_port()]
        control = free_port()
        procs.append(start_upstream(workdir, ports, control, args.ttfa_ms))
        direct = Target("direct", [f"ws://127.0.0.1:{ports[0]}/v1/realtime?model=gpt-realtime"])
        router = start_firsttoken(workdir, ports, args.gc, args.gc_trace)
        assert router.proc is not None
        procs.append(router.proc)
        parties = [direct, router]
        if "litellm" in peers:
            litellm = start_litellm(workdir, ports, Path(args.litellm_venv))
            assert litellm.proc is not None
            procs.append(litellm.proc)
            parties.append(litellm)
        if "floor" in peers:
            floor = start_floor(workdir, ports)
            assert floor.proc is not None
            procs.append(floor.proc)
            parties.append(floor)
        points = []
        for sessions in concurrencies:
            for party in parties:
                p = point(party, sessions, args)
                print(json.dumps(p), flush=True)
                points.append(p)
        add_deltas(points)
        migration = None
        raw: dict[str, Any] | None = None
        if args.migration_rounds:
            extra = [
                "--sessions",
                str(args.migration_sessions),
                "--warmup",
                str(args.warmup),
                "--migrate-url",
                f"http://127.0.0.1:{control}/drop",
                "--rounds",
                str(args.migration_rounds),
            ]
            try:
                raw = run_load(router, extra, 300)
            except RuntimeError as exc:  # a round that never answered: say which sessions
                migration = {
                    "sessions": args.migration_sessions,
                    "rounds": args.migration_rounds,
                    "error": str(exc)[-4000:],
                }
                print(json.dumps({"migration": migration}), flush=True)
        if raw is not None:
            samples = raw["migration_s"]
            migration = {
                "sessions": args.migration_sessions,
                "rounds": args.migration_rounds,
                "samples": len(samples),
                "p50_ms": _ms(percentile(samples, 0.5)),
                "p99_ms": _ms(percentile(samples, 0.99)),
                "max_ms": _ms(max(samples) if samples else None),
                "failed_responses": raw["failed_responses"],
                "closed_early": raw["closed_early"],
            }
            print(json.dumps({"migration": migration}), flush=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "load_average": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "points": points,
        "migration": migration,
        "run_time_s": round(time.time() - started, 1),
    }


# -- the upstream process --------------------------------------------------------------


def upstream_main(argv: Sequence[str]) -> int:
    """RealtimeSim ports and a control port (POST /drop) in one uvloop process."""
    p = argparse.ArgumentParser(prog="realtime.py _upstream")
    p.add_argument("--ports", required=True)
    p.add_argument("--control", type=int, required=True)
    p.add_argument("--ttfa-ms", type=float, default=50)
    a = p.parse_args(argv)

    import asyncio

    import uvloop
    from aiohttp import web

    from router.sim.realtime import RealtimeSim
    from router.sim.realtime_behaviour import RealtimeBehaviour

    async def serve() -> None:
        behaviour = RealtimeBehaviour(
            ttfa_s=a.ttfa_ms / 1000, response_audio_ms=1000, frame_interval_s=0.02
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sims = [
            RealtimeSim(behaviour, port=int(port), max_records=100) for port in a.ports.split(",")
        ]
        for sim in sims:
            await sim.start()

        async def drop(request: web.Request) -> web.Response:
            for sim in sims:
                await sim.drop(1011)
            return web.Response(text="dropped")

        app = web.Application()
        app.router.add_post("/drop", drop)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", a.control).start()
        print("ready", flush=True)
        await stop.wait()
        await runner.cleanup()
        for sim in sims:
            await sim.stop()

    uvloop.run(serve())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated (default 1,16,64)")
    p.add_argument("--duration", type=float, default=10.0, help="measured window, s")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up before the window, s")
    p.add_argument(
        "--peers",
        default="litellm",
        help="comma-separated: litellm (the LiteLLM proxy), floor (realtime_floor.py: the "
        "router's stack with nothing of the router), or '' for none",
    )
    p.add_argument("--ttfa-ms", type=float, default=50.0, help="the simulator's TTFA")
    p.add_argument("--migration-sessions", type=int, default=16)
    p.add_argument(
        "--lockstep-appends",
        action="store_true",
        help="every session's 20 ms append clock starts at once (the default spreads their phases)",
    )
    p.add_argument("--migration-rounds", type=int, default=5, help="0 to skip")
    p.add_argument("--out", default="benchmarks/out/realtime.json")
    p.add_argument(
        "--gc", default=None, metavar="Y,M,O", help="the router's server.gc (young,middle,old)"
    )
    p.add_argument("--gc-trace", action="store_true", help="trace the router's GC pauses")
    p.add_argument(
        "--litellm-venv", default=str(ROOT / ".venv-litellm-proxy"), help="where litellm[proxy] is"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_upstream"]:
        return upstream_main(argv[1:])
    args = build_parser().parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result["points"], result["migration"]))
    traced = [p for p in result["points"] if p.get("gc")]
    for clock in ("cpu", "wall") if traced else ():
        print(f"\nGC pauses in the measured window ({clock} time):\n" + gctrace.HEADER)
        for p in traced:
            print(gctrace.row(p["party"], f"{p['sessions']} sessions", p["gc"], clock))
    print(f"\nload average {result['load_average']}, run time {result['run_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
