"""Soak: N minutes of mixed traffic against a real `firsttoken serve` process.

    python benchmarks/soak.py --minutes 30            # the full soak
    python benchmarks/soak.py --minutes 5 --rate 20   # a shorter one

Three processes: the simulators (this file, `sims` subcommand), the router
(`firsttoken serve --config ...`), and this driver. Target `flaky` cycles through
the simulator's fault modes every few seconds (503, 429 with Retry-After, a reset,
a hang before the first token, a death after three tokens, a malformed first
frame, an error event mid-stream, a trickle); `a` and `b` are healthy backups and
`steady` serves its own route. `reasoning` replays a vLLM reasoning stream
(reasoning deltas for longer than the route's `first_token_s`, then the answer) and
`quirky` is a raw server that answers every request with `100 Continue` and
`103 Early Hints` first, chunk extensions and trailers, echoing a marker from the
request so a turn that got another turn's bytes is caught (`crossed`). The driver
offers a steady rate of turns (streams read to the end, unary turns, streams the
client cancels after a few chunks, turns on the steady, reasoning and quirky routes)
and rewrites and reloads the policy file every 20 s; every reload changes each
target's config, so every upstream pool is replaced and the old ones must close
(`firsttoken_upstream_pools` back to the number of targets at the end).

Every turn must end as a complete stream, an SSE error event, an HTTP error in
OpenAI's shape, or a cancel we made: anything else is a lost turn. RSS and open
file descriptors of the router are sampled every 5 s; the report compares the
end with the end of warm-up, and reconciles the client's count of turns with the
router's `firsttoken_requests_total`. Asyncio's task count is not exposed by the
router, so it is not measured. The last line on stdout is a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from router.sim.replay import ReplayServer, load_recording, read_request

ROOT = Path(__file__).resolve().parent.parent
REASONING = ROOT / "tests/providers/recordings/vllm_reasoning.yaml"
FAULT_CYCLE = [
    Fault(),
    Fault("status", status=503),
    Fault("rate_limited", retry_after_s=1),
    Fault("reset_after_headers"),
    Fault("hang_before_first_token"),
    Fault("die_after", after_tokens=3),
    Fault(),
    Fault("malformed"),
    Fault("error_event_after", after_tokens=2),
    Fault("trickle", trickle_s=0.05),
]
FAULT_PERIOD_S = 4.0
MESSAGES = [{"role": "user", "content": "soak test turn"}]


# -- the simulators' process ---------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    path.write_text(text)


class QuirkyServer:
    """Raw HTTP/1.1 that a naive client gets wrong: `100 Continue` and `103 Early Hints`
    before the answer, chunk extensions, trailers. The content echoes the request's
    last message, so a client can tell its answer from another's."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                _, _, raw = await read_request(reader)
                body = json.loads(raw or b"{}")
                marker = str(body.get("messages", [{}])[-1].get("content", ""))
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x.css>; rel=preload\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
                )
                for i in range(5):
                    delta = {"content": f"{marker}#{i} "}
                    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                    writer.write(b"%x;seq=%d\r\n%s\r\n" % (len(event), i, event))
                    await writer.drain()
                    await asyncio.sleep(0.003)
                done = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\nx-checksum: 5\r\n\r\n" % (len(done), done))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def serve_sims(port_file: Path) -> None:
    healthy = Behaviour(ttft_s=0.02, itl_s=0.005, tokens=30)
    sims: dict[str, OpenAISim | ReplayServer | QuirkyServer] = {
        "flaky": OpenAISim(healthy, model="flaky-model"),
        "a": OpenAISim(Behaviour(ttft_s=0.03, itl_s=0.005, tokens=30), model="a-model"),
        "b": OpenAISim(Behaviour(ttft_s=0.05, itl_s=0.005, tokens=30), model="b-model"),
        "steady": OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.002, tokens=20), model="s-model"),
        "reasoning": ReplayServer(load_recording(REASONING)),
        "quirky": QuirkyServer(),
    }
    for sim in sims.values():
        await sim.start()
    write_text(port_file, json.dumps({n: s.base_url for n, s in sims.items()}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    i = 0
    flaky = sims["flaky"]
    assert isinstance(flaky, OpenAISim)
    while not stop.is_set():
        fault = FAULT_CYCLE[i % len(FAULT_CYCLE)]
        await flaky.set_behaviour(Behaviour(0.02, 0.005, 30, fault))
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FAULT_PERIOD_S)
    for sim in sims.values():
        await sim.stop()


# -- the policy files the driver flips between --------------------------------------


def policy(urls: dict[str, str], port: int, variant: int) -> str:
    # total_s bounds unary turns (a unary answer has no first token to wait for): without
    # it a unary turn sent to the hanging target would wait the 600 s default
    timeouts = "timeouts: {connect_s: 0.5, first_token_s: 0.5, idle_s: 1.0, total_s: 5.0}"
    # A different connection cap each reload: every target's pool is replaced.
    targets = "".join(
        f"  - name: {n}\n    kind: openai\n    base_url: {u}\n    model: {n}-model\n"
        f"    {timeouts}\n    max_connections: {256 + variant}\n"
        for n, u in urls.items()
    )
    chat = "[flaky, a, b]" if variant == 0 else "[flaky, b, a]"
    hedge = "    hedge: {after_ms: 150, max_rate: 0.2}\n" if variant == 0 else ""
    return (
        f"server: {{port: {port}, drain_s: 1}}\n"
        f"signals: {{breaker_failures: 3, breaker_base_s: 0.5, breaker_max_s: 2}}\n"
        f"targets:\n{targets}"
        f"routes:\n  - name: chat\n    targets: {chat}\n    policy: {{type: ordered}}\n"
        f"    exploration: 0.05\n{hedge}"
        f"  - name: steady\n    targets: [steady]\n"
        # reasoning deltas for ~0.4 s before the answer: past first_token_s, no timeout
        f"  - name: reasoning\n    targets: [reasoning]\n    first_token_s: 0.3\n"
        f"  - name: quirky\n    targets: [quirky]\n"
    )


# -- measuring the router's process --------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    t_s: float
    rss_mb: float
    fds: int
    pools: float = float("nan")


@dataclass
class Tally:
    """How each turn of a kind ended; the endings that are failures of the router's
    (`LOST`), with what was seen of them."""

    LOST: ClassVar[tuple[str, ...]] = ("lost", "crossed")
    kinds: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)

    def end(self, kind: str, ending: str, detail: str = "") -> None:
        self.kinds[kind] += 1
        self.endings[ending] += 1
        if ending in self.LOST:
            self.lost.append(f"{kind} {ending}: {detail}"[:1500])


def is_error_shape(body: bytes) -> bool:
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and {"message", "type", "code"} <= set(err)


#: kinds of turn and their share of the offered load
KINDS = (
    ("stream", 0.45),
    ("unary", 0.12),
    ("cancel", 0.13),
    ("steady", 0.1),
    ("reasoning", 0.1),
    ("quirky", 0.1),
)
ROUTES = {"steady": "steady", "reasoning": "reasoning", "quirky": "quirky"}


def pick_kind(roll: float) -> str:
    for kind, share in KINDS:
        if roll < share:
            return kind
        roll -= share
    return KINDS[-1][0]


async def one_turn(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    kind = pick_kind(rng.random())
    marker = f"turn-{rng.getrandbits(48):012x}"
    body = {
        "model": ROUTES.get(kind, "chat"),
        "messages": [
            {"role": "user", "content": marker if kind == "quirky" else MESSAGES[0]["content"]}
        ],
        "stream": kind != "unary",
    }
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raw = await r.aread()
                ending = f"http_{r.status_code}"
                tally.end(kind, ending if is_error_shape(raw) else "lost", raw[:200].decode())
                return
            if kind == "unary":
                raw = await r.aread()
                ok = b'"choices"' in raw
                tally.end(kind, "done" if ok else "lost", raw[:200].decode())
                return
            tail = b""
            whole = b""
            chunks = 0
            async for piece in r.aiter_bytes():
                tail = (tail + piece)[-2048:]
                if kind == "quirky":
                    whole += piece
                chunks += 1
                if kind == "cancel" and chunks >= 3:
                    tally.end(kind, "cancelled")
                    return
            if kind == "quirky" and whole.count(marker.encode()) != 5:
                tally.end(kind, "crossed", f"{marker} not in its answer: {whole[:300]!r}")
            elif kind == "reasoning" and b"Paris" not in tail:
                tally.end(kind, "lost", f"no answer after the reasoning: {tail[-300:]!r}")
            elif b'data: {"error"' in tail:
                tally.end(kind, "error_event")
            elif tail.endswith(b"data: [DONE]\n\n"):
                tally.end(kind, "done")
            else:
                tally.end(kind, "lost", f"stream ended without [DONE]: {tail[-200:]!r}")
    except httpx.HTTPError as exc:
        tally.end(kind, "lost", f"{type(exc).__name__}: {exc}")


def upstream_pools(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "firsttoken_upstream_pools":
                return s.value
    return float("nan")


def requests_by_outcome(text: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "firsttoken_requests_total":
                out[s.labels["outcome"]] += int(s.value)
    return out


def start_sims(script: str, work: Path) -> tuple[subprocess.Popen[bytes], Any]:
    """`script sims --port-file F` in its own process; returns it and what it wrote to F
    (its simulators' addresses) once they listen."""
    port_file = work / "sims.json"
    sims = subprocess.Popen(
        [sys.executable, script, "sims", "--port-file", str(port_file)], cwd=ROOT
    )
    for _ in range(400):
        if port_file.exists() and port_file.read_text():
            return sims, json.loads(port_file.read_text())
        time.sleep(0.05)
    sims.kill()
    raise RuntimeError("the simulators did not start")


def start_router(
    work: Path,
    config: Path,
    log_level: str = "warning",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`firsttoken serve` with `config`, its output in `work`/router.log."""
    log = (work / "router.log").open("wb")
    binary = str(ROOT / ".venv/bin/firsttoken")
    return subprocess.Popen(
        [binary, "serve", "--config", str(config), "--log-level", log_level],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM each (a graceful drain), SIGKILL what is still up 10 s later."""
    for proc in procs:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="firsttoken-soak-"))
    sims, urls = start_sims(__file__, work)
    router: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        config = work / "policy.yaml"
        config.write_text(policy(urls, port, 0))
        router = start_router(work, config)
        run = Run(args, router.pid, config, urls, port, work)
        return asyncio.run(run.drive())
    finally:
        stop(router, sims)


@dataclass
class Run:
    args: argparse.Namespace
    pid: int
    config: Path
    urls: dict[str, str]
    port: int
    work: Path

    async def drive(self) -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=httpx.Timeout(30.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        ) as client:
            for _ in range(400):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            before = requests_by_outcome((await client.get("/metrics")).text)
            return await self.load(client, before)

    async def load(self, client: httpx.AsyncClient, before: Counter[str]) -> dict[str, Any]:
        args, pid, config, urls, port = self.args, self.pid, self.config, self.urls, self.port
        rng = random.Random(args.seed)
        tally = Tally()
        duration = args.minutes * 60
        warmup = min(60.0, duration * 0.2)
        samples: list[Sample] = []
        reloads = Counter[str]()
        after_reload: list[float] = []
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        next_sample = next_reload = 0.0
        variant = 0
        sent = 0
        while (now := time.monotonic() - started) < duration:
            if now >= next_sample:
                pools = upstream_pools((await client.get("/metrics")).text)
                samples.append(Sample(round(now, 1), rss_mb(pid), fds(pid), pools))
                next_sample += 5.0
            if now >= next_reload and now > 0:
                variant ^= 1
                write_text(config, policy(urls, port, variant))
                r = await client.post("/admin/reload", json={})
                reloads[str(r.status_code)] += 1
                # the old config's pools are still open while its turns finish
                after_reload.append(upstream_pools((await client.get("/metrics")).text))
            if now >= next_reload:
                next_reload += 20.0
            task = asyncio.create_task(one_turn(client, rng, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
            await asyncio.sleep(max(0.0, sent / args.rate - (time.monotonic() - started)))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        await asyncio.sleep(2.0)  # let the router book the last cancels, retire old pools
        text = (await client.get("/metrics")).text
        elapsed = round(time.monotonic() - started, 1)
        samples.append(Sample(elapsed, rss_mb(pid), fds(pid), upstream_pools(text)))
        after = requests_by_outcome(text)
        counted = after - before
        warm = next((s for s in samples if s.t_s >= warmup), samples[0])
        end = samples[-1]
        return {
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "minutes": args.minutes,
            "rate_per_s": args.rate,
            "turns_sent": sent,
            "turns_finished": sum(tally.endings.values()),
            "kinds": dict(tally.kinds),
            "endings": dict(tally.endings),
            "lost": len(tally.lost),
            "crossed": tally.endings.get("crossed", 0),
            "lost_examples": tally.lost[:10],
            "router_counted": dict(counted),
            "router_counted_total": sum(counted.values()),
            "reloads": dict(reloads),
            "warmup_s": warmup,
            "rss_mb": {
                "warm": warm.rss_mb,
                "end": end.rss_mb,
                "max": max(s.rss_mb for s in samples),
            },
            "fds": {"warm": warm.fds, "end": end.fds, "max": max(s.fds for s in samples)},
            # one pool per target when the last reload's old pools have closed
            "upstream_pools": {
                "targets": len(urls),
                "end": end.pools,
                "max": max([s.pools for s in samples] + after_reload),
                "after_reloads": after_reload[:20],
            },
            "samples": [asdict(s) for s in samples],
            "router_log": str(self.work / "router.log"),
        }


def soak_parser(
    description: str, *, minutes: float, rate: float, per: str
) -> argparse.ArgumentParser:
    """A soak's command line: `sims --port-file F` (internal: its simulators' process),
    `--minutes`, `--rate` (`per` second), `--seed`, `--json`."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="command")
    sims = sub.add_parser("sims", help="(internal) run the simulators")
    sims.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=minutes)
    parser.add_argument("--rate", type=float, default=rate, help=f"{per} per second offered")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    return parser


def report(summary: dict[str, Any], path: Path | None) -> None:
    """The summary without its samples, on stderr readably and as stdout's last line; all
    of it to `path`."""
    short = {k: v for k, v in summary.items() if k != "samples"}
    print(json.dumps(short, indent=2), file=sys.stderr)
    if path is not None:
        path.write_text(json.dumps(summary, indent=2))
    print(json.dumps(short))


def main() -> int:
    parser = soak_parser(__doc__.split("\n\n")[0], minutes=30.0, rate=20.0, per="turns")
    args = parser.parse_args()
    if args.command == "sims":
        asyncio.run(serve_sims(args.port_file))
        return 0
    summary = soak(args)
    report(summary, args.json)
    pools = summary["upstream_pools"]
    # a 500 is the router's own failure (an unhandled error), whatever the upstreams did
    internal = summary["endings"].get("http_500", 0)
    if internal:
        log = summary["router_log"]
        print(f"{internal} turns got the router's 500: see {log}", file=sys.stderr)
    return 1 if summary["lost"] or internal or pools["end"] != pools["targets"] else 0


if __name__ == "__main__":
    sys.exit(main())
