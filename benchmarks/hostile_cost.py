"""What one hostile body costs the router, in CPU seconds (robust on a busy machine).

    .venv/bin/python benchmarks/hostile_cost.py                 # 40 bodies of each kind
    .venv/bin/python benchmarks/hostile_cost.py --firsttoken /other/checkout/.venv/bin/firsttoken

A real `firsttoken serve` in front of `hostile.py`'s simulators, no other traffic;
one client sends `--count` bodies of each kind, one after another, and the router's
CPU time (user and system, from /proc) and its parse workers' are read before and
after each kind. Kinds: 4 MiB of tiny messages to an unknown model with `model`
last (the SDKs' order) and first, the same bodies to the route (over
`limits.max_messages`: these three are refused on their first 256 KiB), 4 MiB of
1,000 messages (within the limit) to an unknown model with `model` last (read
whole, refused on its last 4 KiB), and a declared 64 MiB body (413). `--firsttoken` runs
another checkout's router, for a before/after. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from hostile import TINY, policy, tiny_messages
from overhead import ROOT, Proc, cpu_seconds, free_port, machine, managed, process_tree, wait_http

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def measure(client: httpx.Client, url: str, router: int, kind: str, count: int) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    before = (cpu_seconds([router]), system_seconds(router), process_tree(router)[1:])
    worker_before = cpu_seconds(before[2])
    started = time.monotonic()
    for _ in range(count):
        if kind == "declared_64mib":
            size = 64 * 2**20
            headers = {"content-type": "application/json", "content-length": str(size)}
            try:
                status = client.post(url, content=declared(size), headers=headers).status_code
            except httpx.TransportError:
                status = 0
        else:
            body = {
                "unknown_model_last": tiny_messages("nope"),
                "unknown_model_first": model_first("nope"),
                "route_too_many": tiny_messages("chat"),
                "unknown_model_last_few_messages": long_messages("nope"),
            }[kind]
            status = client.post(
                url, content=body, headers={"content-type": "application/json"}
            ).status_code
        statuses[status] = statuses.get(status, 0) + 1
    wall = time.monotonic() - started
    workers = process_tree(router)[1:]
    worker = cpu_seconds(workers) - (worker_before if workers == before[2] else 0.0)
    return {
        "kind": kind,
        "count": count,
        "statuses": statuses,
        "router_ms": round(1000 * (cpu_seconds([router]) - before[0]) / count, 2),
        "router_sys_ms": round(1000 * (system_seconds(router) - before[1]) / count, 2),
        "parse_worker_ms": round(1000 * worker / count, 2),
        "wall_ms": round(1000 * wall / count, 2),
    }


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
        router = Proc(
            "router",
            [exe, "serve", "--config", str(config), "--log-level", "warning"],
            work,
            cwd=work,
        )
        procs.append(router)
        wait_http(f"http://127.0.0.1:{port}/readyz", router, 60)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        kinds = [
            "unknown_model_last",
            "unknown_model_first",
            "route_too_many",
            "unknown_model_last_few_messages",
            "declared_64mib",
        ]
        with httpx.Client(timeout=60) as client:
            measure(client, url, router.pid, "route_too_many", 2)  # starts the parse worker
            rows = [measure(client, url, router.pid, kind, args.count) for kind in kinds]
    return {"machine": machine(), "firsttoken": exe, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--firsttoken", help="the firsttoken executable (default: this checkout's)")
    result = run(p.parse_args(argv))
    m = result["machine"]
    print(f"\n{m['date']}  {m['nproc']} CPUs  load average {m['loadavg_at_start']}")
    print(f"router: {result['firsttoken']}")
    print(
        "\n| body | answers | router CPU ms/body | of it system | parse worker ms/body "
        "| wall ms/body |"
    )
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(r["statuses"].items()))
        print(
            f"| {r['kind']} | {answers} | {r['router_ms']} | {r['router_sys_ms']} | "
            f"{r['parse_worker_ms']} | {r['wall_ms']} |"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
