"""What one hostile body costs the router: instructions (callgrind) or CPU seconds.

    .venv/bin/python benchmarks/hostile_cost.py --callgrind --count 10   # the A/B
    .venv/bin/python benchmarks/hostile_cost.py --callgrind --firsttoken OTHER/.venv/bin/firsttoken
    .venv/bin/python benchmarks/hostile_cost.py                 # CPU time, 40 bodies of each kind

A real `firsttoken serve` in front of `hostile.py`'s simulators, no other traffic;
one client sends `--count` bodies of each kind, one after another, and the router's
CPU time (user and system, from /proc) and its parse workers' are read before and
after each kind. Kinds: 4 MiB of tiny messages to an unknown model with `model`
last (the SDKs' order) and first, the same bodies to the route (over
`limits.max_messages`: these three are refused on their first 256 KiB), 4 MiB of
1,000 messages (within the limit) to an unknown model with `model` last (read
whole, refused on its last 4 KiB), a declared 64 MiB body (413), and the rest of
`hostile.py`'s mix: a turn on the route whose targets answer 500 with a 50 MB body
(`huge_error`: a 502, then 503s while their breakers are open), a stream on the
route whose first SSE frame is not JSON (`bad_frames`), and each of the requests
the HTTP parser refuses (`bad_http`, one of each of the four in turn).

`--callgrind` runs the router under `valgrind --tool=callgrind --instr-atstart=no`
and counts the instructions its process executes for each kind
(`callgrind_control -i on`, the bodies, `-i off`, a dump per kind): unlike CPU time
they do not move with the machine's load, so this is the A/B for changes to the
router's handling of hostile bodies. Kernel time (receiving the bytes, the system
column of the CPU mode) is not in the count. `--firsttoken` runs another
checkout's router, for a before/after. The last line is JSON.
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from hostile import BAD_HTTP, TINY, bad_http, policy, tiny_messages
from overhead import ROOT, Proc, cpu_seconds, machine, managed, process_tree, wait_http

from router.sim.ports import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = (
    "unknown_model_last",
    "unknown_model_first",
    "route_too_many",
    "unknown_model_last_few_messages",
    "declared_64mib",
    "huge_error",
    "bad_frames",
    "bad_http",
)


def model_first(model: str) -> bytes:
    body = tiny_messages(model)
    messages = body[len(b'{"messages":') : body.rindex(b',"model":')]
    return b'{"model":"' + model.encode() + b'","messages":' + messages + b"}"


def long_messages(model: str) -> bytes:
    """Just under 4 MiB of 1,000 messages (within `limits.max_messages`): read whole."""
    long = b'{"role":"user","content":"' + b"a" * 4150 + b'"},'
    return b'{"messages":[' + long * 999 + long[:-1] + b'],"model":"' + model.encode() + b'"}'


def declared(size: int) -> Iterator[bytes]:
    chunk = TINY * (65536 // len(TINY))
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        sent += len(piece)
        yield piece


def system_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[12]) / CLK_TCK


def bodies() -> dict[str, bytes]:
    return {
        "unknown_model_last": tiny_messages("nope"),
        "unknown_model_first": model_first("nope"),
        "route_too_many": tiny_messages("chat"),
        "unknown_model_last_few_messages": long_messages("nope"),
        "huge_error": json.dumps({"model": "huge", "messages": [{"role": "user"}]}).encode(),
        "bad_frames": json.dumps(
            {"model": "broken", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
    }


def send(client: httpx.Client, url: str, kind: str, index: int, body: bytes | None) -> int:
    """One hostile request of `kind`; its status (0: the connection was closed early)."""
    try:
        if kind == "declared_64mib":
            size = 64 * 2**20
            headers = {"content-type": "application/json", "content-length": str(size)}
            return client.post(url, content=declared(size), headers=headers).status_code
        if kind == "bad_http":
            port = httpx.URL(url).port or 80
            code = asyncio.run(bad_http(port, BAD_HTTP[index % len(BAD_HTTP)]))
            return int(code) if code.isdigit() else 0
        assert body is not None
        headers = {"content-type": "application/json"}
        return client.post(url, content=body, headers=headers).status_code
    except httpx.TransportError:
        return 0


def callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, stdout=subprocess.DEVNULL)


def measure(
    client: httpx.Client,
    url: str,
    router: int,
    kind: str,
    count: int,
    *,
    dumps: Path | None = None,
    keep: Path | None = None,
) -> dict[str, Any]:
    """`count` requests of `kind`; with `dumps` (the router runs under callgrind, its
    output file's path), the instructions they cost, counted alone."""
    statuses: dict[int, int] = {}
    before = (cpu_seconds([router]), system_seconds(router), process_tree(router)[1:])
    worker_before = cpu_seconds(before[2])
    body = bodies().get(kind)
    started = time.monotonic()
    if dumps is not None:
        callgrind(router, "-i", "on")
    for index in range(count):
        status = send(client, url, kind, index, body)
        statuses[status] = statuses.get(status, 0) + 1
    wall = time.monotonic() - started
    row: dict[str, Any] = {"kind": kind, "count": count, "statuses": statuses}
    if dumps is not None:
        callgrind(router, "-i", "off")
        instructions = dump_total(router, dumps, kind, keep)
        row["instructions_per_body"] = round(instructions / count)
    workers = process_tree(router)[1:]
    worker = cpu_seconds(workers) - (worker_before if workers == before[2] else 0.0)
    row.update(
        {
            "router_ms": round(1000 * (cpu_seconds([router]) - before[0]) / count, 2),
            "router_sys_ms": round(1000 * (system_seconds(router) - before[1]) / count, 2),
            "parse_worker_ms": round(1000 * worker / count, 2),
            "wall_ms": round(1000 * wall / count, 2),
        }
    )
    return row


def dump_total(router: int, out_file: Path, name: str, keep: Path | None = None) -> int:
    """Dump callgrind's counters (which zeroes them) and read the new dump's total."""
    seen = set(out_file.parent.glob(f"{out_file.name}*"))
    callgrind(router, "-d")
    new = set(out_file.parent.glob(f"{out_file.name}*")) - seen
    total = 0
    for path in new:
        text = path.read_text(errors="replace")
        total += sum(int(n) for n in re.findall(r"^totals:\s+(\d+)", text, re.MULTILINE))
        if keep is not None:
            shutil.copy(path, keep / f"{path.name}.{name}")
        path.unlink()
    return total


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="firsttoken-hostile-cost-"))
    sim_ports = [free_port() for _ in range(4)]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    hostile = str(Path(__file__).with_name("hostile.py"))
    sims = Proc(
        "sims",
        [sys.executable, hostile, "_sims", "--ports", ",".join(map(str, sim_ports))],
        work,
        env=env,
        cwd=ROOT,
    )
    with managed([sims]) as procs:
        for p in sim_ports:
            wait_http(f"http://127.0.0.1:{p}/health", sims, 30)
        config = work / "policy.yaml"
        config.write_text(policy(sim_ports, port))
        exe = args.firsttoken or str(ROOT / ".venv" / "bin" / "firsttoken")
        argv = [exe, "serve", "--config", str(config), "--log-level", "warning"]
        dumps = None
        if args.callgrind:
            dumps = work / "callgrind.out"
            python = str(Path(exe).with_name("python"))
            argv = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={dumps}",
                python,
                "-m",
                "router.tools.cli",
                *argv[1:],
            ]
        router = Proc("router", argv, work, cwd=work)
        procs.append(router)
        wait_http(f"http://127.0.0.1:{port}/readyz", router, 600 if dumps else 60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        kinds = args.kinds.split(",")
        with httpx.Client(timeout=600 if dumps else 60) as client:
            for kind in kinds:  # warm every path up (and start the parse worker)
                for index in range(2 if kind != "declared_64mib" else 1):
                    send(client, url, kind, index, bodies().get(kind))
            keep = Path(args.callgrind_out) if args.callgrind_out else None
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
            rows = [
                measure(client, url, router.pid, k, args.count, dumps=dumps, keep=keep)
                for k in kinds
            ]
    return {"machine": machine(), "firsttoken": exe, "callgrind": bool(dumps), "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--firsttoken", help="the firsttoken executable (default: this checkout's)")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--callgrind", action="store_true", help="count instructions per body")
    p.add_argument("--callgrind-out", help="keep each kind's profile in this folder")
    args = p.parse_args(argv)
    if args.callgrind and shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    result = run(args)
    m = result["machine"]
    print(f"\n{m['date']}  {m['nproc']} CPUs  load average {m['loadavg_at_start']}")
    print(f"router: {result['firsttoken']}")
    counted = result["callgrind"]
    print(
        "\n| body | answers | "
        + ("router instructions/body | " if counted else "")
        + "router CPU ms/body | of it system | parse worker ms/body | wall ms/body |"
    )
    print("|---|---|---|---|---|---|" + ("---|" if counted else ""))
    for r in result["rows"]:
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
        print(
            f"| {r['kind']} | {answers} | "
            + (f"{r['instructions_per_body']:,} | " if counted else "")
            + f"{r['router_ms']} | {r['router_sys_ms']} | "
            f"{r['parse_worker_ms']} | {r['wall_ms']} |"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
