"""Instructions per relayed Realtime frame: the router's CPU cost counted by callgrind.

    .venv/bin/python benchmarks/realtime_cost.py --sessions 2 --appends 300 --rounds 2 \
        --variant main=/tmp/main-tree

CPU time per frame (benchmarks/realtime.py) moves with whatever else the machine
runs; the instructions the router's process executes for a fixed script do not
(callgrind counts them, it does not time them), so this is the A/B for changes to
the relay. Each measurement starts `firsttoken serve` (the configuration of
realtime.py) under `valgrind --tool=callgrind --instr-atstart=no`, opens
`--sessions` sessions, switches counting on (`callgrind_control -i on`), runs the
script on every session (`--appends` 20 ms frames of 24 kHz PCM16 appended every
20 ms, a `response.create` every `--every` appends, each answered by the
simulator with 1 s of audio in 20 ms deltas), waits for every `response.done`,
switches counting off, and divides by the frames relayed both ways (counted at
the client). Kernel time (the socket syscalls) is not in the count. Variants
(`--variant NAME=DIR`, DIR holding another `router/`) and this checkout are
measured in alternation, `--rounds` times.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import overhead  # noqa: E402  (sibling scripts, not a package)
import realtime  # noqa: E402

from router.sim.ports import free_port  # noqa: E402

ROOT = HERE.parent
APPEND = json.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(960)).decode()},
    separators=(",", ":"),
)
CREATE = '{"type":"response.create"}'


async def callgrind(pid: int, state: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", state, str(pid), stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait() != 0:
        raise RuntimeError(f"callgrind_control -i {state} failed")


async def drive(url: str, pid: int, args: argparse.Namespace) -> int:
    """Open the sessions, count the script's instructions; return the frames relayed."""
    import aiohttp

    frames = 0
    async with aiohttp.ClientSession() as http:
        sockets = [
            await http.ws_connect(url, compress=0, max_msg_size=16 * 2**20)
            for _ in range(args.sessions)
        ]
        for ws in sockets:
            await ws.receive()  # session.created
        responses = args.appends // args.every

        async def script(ws: aiohttp.ClientWebSocketResponse) -> int:
            seen = 0

            async def read() -> None:
                nonlocal seen
                done = 0
                while done < responses:
                    msg = await ws.receive()
                    seen += 1
                    if '"response.done"' in str(msg.data)[:48]:
                        done += 1

            reader = asyncio.ensure_future(read())
            due = time.perf_counter()
            for i in range(1, args.appends + 1):
                await ws.send_str(APPEND)
                if i % args.every == 0:
                    await ws.send_str(CREATE)
                due += 0.02
                await asyncio.sleep(max(due - time.perf_counter(), 0.0))
            await asyncio.wait_for(reader, 60)
            return int(seen + args.appends + responses)

        await callgrind(pid, "on")
        frames = sum(await asyncio.gather(*(script(ws) for ws in sockets)))
        await callgrind(pid, "off")
        for ws in sockets:
            await ws.close()
    return frames


def measure(
    name: str,
    source: str | None,
    args: argparse.Namespace,
    ports: Sequence[int],
    workdir: Path,
    *,
    gc: str | None = None,
) -> dict[str, Any]:
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(realtime.router_config(ports, gc))
    port = free_port()
    out_file = workdir / f"callgrind.{name}.{time.monotonic_ns()}"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "router.tools.cli",
        "serve",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    proc = overhead.Proc(name, argv, workdir, env=env, cwd=workdir)
    try:
        overhead.wait_http(f"http://127.0.0.1:{port}/healthz", proc, 600)
        url = f"ws://127.0.0.1:{port}/v1/realtime?model={realtime.ROUTE}"
        frames = asyncio.run(drive(url, proc.pid, args))
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
    return {
        "name": name,
        "instructions": total,
        "frames": frames,
        "per_frame": round(total / frames) if frames else None,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--appends", type=int, default=300, help="per session, one every 20 ms")
    p.add_argument("--every", type=int, default=100, help="appends between response.create")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], help="NAME=DIR (another router/)")
    p.add_argument(
        "--gc-variant",
        action="append",
        default=[],
        metavar="NAME=Y,M,O",
        help="this checkout with these server.gc thresholds (young,middle,old)",
    )
    p.add_argument("--callgrind-out", default=None, help="keep the profiles in this folder")
    p.add_argument("--out", default="benchmarks/out/realtime_cost.json")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    if args.callgrind_out:
        Path(args.callgrind_out).mkdir(parents=True, exist_ok=True)
    variants: list[tuple[str, str | None, str | None]] = [("this", None, None)]
    for spec in args.variant:
        name, _, source = spec.partition("=")
        variants.append((name, source, None))
    for spec in args.gc_variant:
        name, _, thresholds = spec.partition("=")
        variants.append((name, None, thresholds))
    workdir = Path(tempfile.mkdtemp(prefix="ft-rtcost-"))
    procs: list[overhead.Proc] = []
    runs: list[dict[str, Any]] = []
    with overhead.managed(procs):
        ports = [free_port(), free_port()]
        procs.append(realtime.start_upstream(workdir, ports, free_port(), 50))
        for round_ in range(args.rounds):
            for name, source, gc in variants:
                run = measure(name, source, args, ports, workdir, gc=gc)
                run["round"] = round_
                runs.append(run)
                print(
                    f"# {name:<10} round {round_}: {run['per_frame']:,} instructions per frame "
                    f"({run['frames']} frames, load {run['loadavg_1m']})",
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=2))
    print("\n| router | instructions per relayed frame (each round) |\n|---|---|")
    for name, _, _ in variants:
        counts = [f"{r['per_frame']:,}" for r in runs if r["name"] == name]
        print(f"| {name} | {' / '.join(counts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
