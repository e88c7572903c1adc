"""Instructions per turn: the router's CPU cost counted by callgrind, for A/B of changes.

    .venv/bin/python benchmarks/turncost.py --config ft-slo2 --turns 300 --rounds 2 \
        --variant main=/tmp/main-tree
    .venv/bin/python benchmarks/turncost.py --config firsttoken --endpoint responses
    .venv/bin/python benchmarks/turncost.py --config firsttoken --endpoint embeddings

CPU time per stream (overhead.py) moves with whatever else the machine runs; the
number of instructions the router's process executes for a fixed number of turns
does not (callgrind counts them, it does not time them). Each measurement starts
`firsttoken serve` (the configuration of `overhead.py`: `firsttoken`, `ft-slo2`,
`ft-slo8`) under `valgrind --tool=callgrind --instr-atstart=no`, sends `--warmup`
turns uncounted, switches counting on (`callgrind_control -i on`), sends `--turns`
turns at `--concurrency` (`--endpoint`: streamed chat, streamed `/v1/responses`, or
`/v1/embeddings` batches of `--batch`, loadgen.py's bodies), switches it off, and
reads the total. The
upstream is the benchmark's (50 ms TTFT, 20 tokens 10 ms apart) in its own process,
not counted. Variants (`--variant NAME=DIR`, DIR holding another `router/`) and this
checkout are measured in alternation, `--rounds` times; `--floor` adds the minimal
relay any Python relay pays (uvicorn + raw ASGI + aiohttp, `peers/floor_relay.py`).

The router runs ~20-50x slower under callgrind, so timing-driven behaviour (adaptive
hedges) can differ from a real run: the hedges each run saw are printed beside the
count. `--callgrind-out DIR` keeps the profiles (`callgrind_annotate` reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402  (sibling scripts, not a package)
import overhead  # noqa: E402

from router.sim.ports import free_port  # noqa: E402

ROOT = HERE.parent


#: what a complete answer holds, per endpoint
COMPLETE = {"chat": b"[DONE]", "responses": b"response.completed", "embeddings": b'"embedding"'}


async def drive(url: str, turns: int, concurrency: int, args: argparse.Namespace) -> int:
    """Send `turns` turns (loadgen's body for `args.endpoint`), `concurrency` at a time;
    return how many failed."""
    import aiohttp

    shape = argparse.Namespace(
        endpoint=args.endpoint, model=overhead.MODEL, max_tokens=args.tokens, batch=args.batch
    )
    body = json.dumps(loadgen.request_body(shape)).encode()
    complete = COMPLETE[args.endpoint]
    left = turns
    failed = 0

    async def worker(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal left, failed
        headers = {"content-type": "application/json", "x-session-id": f"w{index}"}
        while left > 0:
            left -= 1
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    data = await resp.read()
                if resp.status != 200 or complete not in data:
                    failed += 1
            except aiohttp.ClientError:
                failed += 1

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(worker(i, session) for i in range(concurrency)))
    return failed


def hedges(metrics_url: str) -> dict[str, float]:
    seen = overhead.router_counters(metrics_url)
    return {k: v for k, v in seen.items() if k.startswith(("hedge_", "turns_"))}


def measure(
    name: str,
    source: str | None,
    args: argparse.Namespace,
    ports: Sequence[int],
    workdir: Path,
    *,
    gc: str | None = None,
    floor: bool = False,
) -> dict[str, Any]:
    policy, n_targets = overhead.ROUTER_CONFIGS[args.config]
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(overhead.router_config(ports[:n_targets], policy, gc))
    port = free_port()
    out_file = workdir / f"callgrind.{name}.{time.monotonic_ns()}"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        str(ROOT / ".venv" / "bin" / "python"),
    ]
    if floor:  # the minimal relay (peers/floor_relay.py) over the same upstreams
        upstreams = ",".join(str(p) for p in ports[:n_targets])
        argv += [str(HERE / "peers" / "floor_relay.py"), "--port", str(port)]
        argv += ["--upstreams", upstreams]
    else:
        argv += ["-m", "router.tools.cli", "serve", "--config", str(cfg)]
        argv += ["--port", str(port), "--log-level", "warning"]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    proc = overhead.Proc(name, argv, workdir, env=env, cwd=workdir)
    try:
        overhead.wait_http(f"http://127.0.0.1:{port}/healthz", proc, 600)
        url = f"http://127.0.0.1:{port}{overhead.ENDPOINT_PATHS[args.endpoint]}"
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        asyncio.run(drive(url, args.warmup, args.concurrency, args))
        before = hedges(metrics_url)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(proc.pid)], check=True, stdout=subprocess.DEVNULL
        )
        failed = asyncio.run(drive(url, args.turns, args.concurrency, args))
        subprocess.run(
            ["callgrind_control", "-i", "off", str(proc.pid)], check=True, stdout=subprocess.DEVNULL
        )
        after = hedges(metrics_url)
    finally:
        proc.stop(grace_s=30)
    total = 0
    dumps = list(workdir.glob(f"{out_file.name}*"))
    if not dumps:
        raise RuntimeError(f"no callgrind output in {workdir}: {proc.log_tail()}")
    for dump in dumps:
        text = dump.read_text(errors="replace")
        total += sum(int(n) for n in re.findall(r"^totals:\s+(\d+)", text, re.MULTILINE))
        if args.callgrind_out:
            shutil.copy(dump, Path(args.callgrind_out) / dump.name)
        dump.unlink()
    seen = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "name": name,
        "instructions": total,
        "per_turn": round(total / args.turns),
        "failed": failed,
        "hedges_started": int(seen.get("hedge_started", 0)),
        "hedges_won": int(seen.get("hedge_won", 0)),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="ft-slo2", choices=list(overhead.ROUTER_CONFIGS))
    p.add_argument("--turns", type=int, default=300)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--endpoint", choices=tuple(COMPLETE), default="chat")
    p.add_argument("--batch", type=int, default=8, help="embeddings: inputs per request")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR")
    p.add_argument(
        "--gc-variant",
        action="append",
        default=[],
        metavar="NAME=Y,M,O",
        help="this checkout with these server.gc thresholds (young,middle,old)",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also count the minimal relay (peers/floor_relay.py; chat only)",
    )
    p.add_argument("--callgrind-out", default=None, help="keep the profiles in this folder")
    p.add_argument("--out", default="benchmarks/out/turncost.json")
    args = p.parse_args(argv)
    args.ttft_ms, args.itl_ms = 50.0, 10.0  # embeddings: answered at the first-token time
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install -y valgrind)")
    if args.callgrind_out:
        Path(args.callgrind_out).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ft-turncost-"))
    runs: list[dict[str, Any]] = []
    sources: list[tuple[str, str | None, str | None]] = [("this", None, None)]
    sources += [(spec.partition("=")[0], spec.partition("=")[2], None) for spec in args.variant]
    sources += [(spec.partition("=")[0], None, spec.partition("=")[2]) for spec in args.gc_variant]
    if args.floor:
        sources.append(("floor", None, None))
    n_ports = overhead.ROUTER_CONFIGS[args.config][1]
    ports = [free_port() for _ in range(max(n_ports, 2))]
    procs: list[overhead.Proc] = []
    with overhead.managed(procs):
        procs.append(overhead.start_upstream(workdir, ports, args))
        for round_ in range(args.rounds):
            for name, source, gc in sources:
                run = measure(name, source, args, ports, workdir, gc=gc, floor=name == "floor")
                run["round"] = round_
                runs.append(run)
                print(
                    f"# {name:<10} round {round_}: {run['per_turn']:,} instructions per turn "
                    f"(hedges {run['hedges_started']} started, {run['hedges_won']} won; "
                    f"failed {run['failed']}; load {run['loadavg_1m']})",
                    flush=True,
                )
    shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "runs": runs}, indent=2) + "\n")
    print(
        "\n| router | config | endpoint | instructions per turn (each round) |\n|---|---|---|---|"
    )
    for name, _, _ in sources:
        counts = ", ".join(f"{r['per_turn']:,}" for r in runs if r["name"] == name)
        print(f"| {name} | {args.config} | {args.endpoint} | {counts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
