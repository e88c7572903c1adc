"""The router's fixed cost per open Realtime session: CPU with silent sessions.

    .venv/bin/python benchmarks/realtime_idle.py --sessions 0,16,64 --duration 10

Starts the simulator and `firsttoken serve` as benchmarks/realtime.py does, opens
each count of sessions through the router, sends nothing for `--duration` seconds
and prints the router's CPU (utime + stime from /proc) in ms per second. With no
frames to relay, what is left is what runs on a clock: timers and tickers per
session (supervisors, keep-alive pings) and per process (loop-lag sampler,
uvicorn's tick). These costs do not shrink with traffic: at 16 sessions they are
spread over fewer frames than at 64 (benchmarks/realtime.py's CPU per frame).
CPU time moves less with the machine's load than latency does, but it is read in
10 ms ticks: compare counts several ms/s apart, or repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import Proc, cpu_seconds, managed
from realtime import ROUTE, start_firsttoken, start_upstream

from router.sim.ports import free_port


async def silent(url: str, sessions: int, duration_s: float, pid: int) -> float:
    """Router CPU, ms per second, with `sessions` open and silent."""
    async with aiohttp.ClientSession() as http:
        sockets = [await http.ws_connect(url, compress=0) for _ in range(sessions)]
        for ws in sockets:
            await ws.receive()  # session.created
        await asyncio.sleep(2.0)  # settle: the opens' own work is not counted
        cpu0, t0 = cpu_seconds([pid]), time.monotonic()
        await asyncio.sleep(duration_s)
        cpu1, t1 = cpu_seconds([pid]), time.monotonic()
        await asyncio.gather(*(ws.close() for ws in sockets))
    return (cpu1 - cpu0) / (t1 - t0) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", default="0,16,64", help="comma-separated counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per count")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ft-realtime-idle-"))
    procs: list[Proc] = []
    rows = []
    with managed(procs):
        ports = [free_port(), free_port()]
        procs.append(start_upstream(workdir, ports, free_port(), 50.0))
        router = start_firsttoken(workdir, ports)
        assert router.proc is not None
        procs.append(router.proc)
        url = f"{router.urls[0].split('?')[0]}?model={ROUTE}"
        for n in (int(s) for s in args.sessions.split(",") if s):
            ms = asyncio.run(silent(url, n, args.duration, router.proc.pid))
            rows.append({"sessions": n, "router_cpu_ms_per_s": round(ms, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| silent sessions | router CPU ms/s |\n|---|---|")
    for row in rows:
        print(f"| {row['sessions']} | {row['router_cpu_ms_per_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
