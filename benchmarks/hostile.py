"""The hostile mix: normal streams while other clients try to stall the router.

    .venv/bin/python benchmarks/hostile.py                 # the bars (about 2.5 minutes)
    .venv/bin/python benchmarks/hostile.py --rounds 2 --duration 4   # a quicker look
    .venv/bin/python benchmarks/hostile.py --sink          # and what the harness alone costs

Processes: the simulators (this file, `_sims`), the router (`firsttoken serve`, the
production uvicorn settings), the load generator (`loadgen.py`: 32 closed-loop
streams on route `chat`, TTFT measured by the client) and the hostile clients
(this file, `_hostile`). One load generator runs through the whole benchmark
(after `--warmup`); phases of `--duration` seconds alternate quiet (the streams
alone) and hostile (the streams and the hostile clients), `--rounds` times (6),
then one more quiet phase, so drift on a shared machine falls on both sides. A
stream belongs to the phase in which it was sent, from `--settle` seconds after
the phase began (for a hostile phase: after the clients' first send) to its end.
The bars pool the phases of each kind (about 7,000 streams each); beside them
the report splits the quiet phases, and the hostile ones, into two interleaved
halves (the spread between two measurements of the same thing: the noise floor)
and gives a 90 % interval for hostile - quiet by resampling whole phases. The
router's RSS is read from /proc every 0.2 s, the healthy breakers from
`/admin/targets` every 0.4 s, `/metrics` only at each phase's edges (loop lag,
failed attempts): scraping `/metrics` five times a second cost the router about
12 % of its CPU samples. The hostile
clients, each sending, waiting `--interval`, sending again:

- `big_unknown`: 4 MiB bodies of tiny messages to a model that does not exist
  (the issue's stall: 8 of them froze every stream for a second);
- `big_route`: the same bodies to the real route (over `limits.max_messages`);
- `huge_error`: turns on a route whose targets answer 500 with a 50 MB body;
- `bad_frames`: streams on a route whose target's first SSE frame is not JSON;
- `bad_http`: requests the HTTP parser refuses (Content-Length with
  Transfer-Encoding, two Content-Lengths, NUL in a header, a 70 KB header).

`--hostile-nice 19` runs the hostile clients at the lowest priority, as if they were
on other machines (the default, 0, shares the cores as equals; benchmarks/RESULTS.md
says why the default stays). `--sink` adds a phase per
round with the same clients sending to a trivial server instead of the router: the
harness's own cost, in the same run. Each kind of phase reports the CPU cores
each party used (the router's system time, mostly the kernel's copies of what it receives,
and its parse workers apart).

Bars (issue 15): the streams' TTFT p99 in the hostile phases within +5 ms of the
quiet phases', the router's RSS under 150 MiB throughout (its parse worker is
reported apart), and the breakers of the healthy targets `a` and `b` never open
(none seen open, and their failed attempts are counted). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gctrace
from overhead import (
    LOADGEN,
    ROOT,
    Proc,
    cpu_seconds,
    machine,
    managed,
    nice_session,
    percentile,
    process_tree,
    rss_mib,
    wait_http,
)

from router.sim.ports import free_port

BAR_P99_DELTA_MS = 5.0
BAR_RSS_MIB = 150.0
HEALTHY = ("a", "b")
TINY = b'{"role":"user","content":"a"},'
ERROR_BODY_BYTES = 50 * 10**6
KINDS = ("big_unknown", "big_route", "huge_error", "bad_frames", "bad_http")
BAD_HTTP = [
    b"content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n{}",
    b"content-length: 2\r\ncontent-length: 3\r\n\r\n{}",
    b"x-a: b\x00c\r\ncontent-length: 2\r\n\r\n{}",
    b"x-big: " + b"a" * 70_000 + b"\r\n\r\n",
]


# -- the simulators' process -----------------------------------------------------------


def sims_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="hostile.py _sims")
    p.add_argument("--ports", required=True, help="a,b,huge,broken")
    a = p.parse_args(argv)

    import uvloop

    from router.sim.behaviour import Behaviour, Fault
    from router.sim.openai_server import OpenAISim

    healthy = Behaviour(ttft_s=0.05, itl_s=0.01, tokens=20)
    faults = [
        Fault(),
        Fault(),
        Fault("status", 500, body_bytes=ERROR_BODY_BYTES, message="huge"),
        Fault("malformed"),
    ]

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sims = [
            OpenAISim(
                Behaviour(healthy.ttft_s, healthy.itl_s, healthy.tokens, f),
                port=int(port),
                max_records=200,
            )
            for port, f in zip(a.ports.split(","), faults, strict=True)
        ]
        for sim in sims:
            await sim.start()
        print("ready", flush=True)
        await stop.wait()
        for sim in sims:
            await sim.stop()

    uvloop.run(serve())
    return 0


def sink_main(argv: Sequence[str]) -> int:
    """A trivial server in the router's place for the hostile clients (`--against sink`):
    it reads each body whole and answers 404 in the API's shape, so a run shows what
    the hostile clients cost the machine without the router's part."""
    p = argparse.ArgumentParser(prog="hostile.py _sink")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args(argv)

    import uvicorn

    answer = b'{"error": {"message": "sink", "type": "invalid_request_error", "code": null}}'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        status, body = (200, b"") if scope["path"] == "/health" else (404, answer)
        head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, port=a.port, http="httptools", loop="uvloop", log_level="warning")
    return 0


def policy(ports: Sequence[int], port: int, gc: str | None = None) -> str:
    a, b, huge, broken = (f"http://127.0.0.1:{p}/v1" for p in ports)
    targets = [("a", a), ("b", b)]
    targets += [(f"huge-{i}", huge) for i in range(3)] + [("broken", broken)]
    server = gctrace.server_yaml(gc).strip().removeprefix("server: {").removesuffix("}")
    lines = [
        f"server: {{port: {port}, drain_s: 1{', ' + server if server else ''}}}",
        # A faulty target is retried every 0.5-2 s, so its hostile answers keep coming.
        "signals: {breaker_base_s: 0.5, breaker_max_s: 2.0}",
        "targets:",
    ]
    for name, url in targets:
        lines.append(
            f"  - {{name: {name}, kind: openai, base_url: '{url}', model: m, "
            "timeouts: {connect_s: 1.0, first_token_s: 5.0, idle_s: 10.0}}"
        )
    lines += [
        "routes:",
        "  - {name: chat, targets: [a, b], policy: {type: ordered}}",
        "  - {name: huge, targets: [huge-0, huge-1, huge-2], policy: {type: ordered}}",
        "  - {name: broken, targets: [broken]}",
    ]
    return "\n".join(lines) + "\n"


# -- the hostile clients' process ------------------------------------------------------


def tiny_messages(model: str) -> bytes:
    """Just under 4 MiB (the default server.max_body_bytes) of tiny messages."""
    n = (4 * 2**20 - 64) // len(TINY)
    return b'{"messages":[' + TINY * n + TINY[:-1] + b'],"model":"' + model.encode() + b'"}'


def is_error_shape(body: bytes) -> bool:
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and {"message", "type", "code"} <= set(err)


async def bad_http(port: int, request: bytes) -> str:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(head + b"content-type: application/json\r\n" + request)
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status, _, body = answer.partition(b"\r\n\r\n")
    code = status.split(b" ", 2)[1].decode() if status.startswith(b"HTTP/1.1 ") else "none"
    return code if is_error_shape(body) else f"{code}-not-api-shape"


def hostile_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="hostile.py _hostile")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("--big-clients", type=int, default=4, help="per kind: unknown, route")
    p.add_argument("--other-clients", type=int, default=2, help="per kind: the rest")
    p.add_argument("--kinds", default=",".join(KINDS))
    a = p.parse_args(argv)

    import aiohttp
    import uvloop

    base = f"http://127.0.0.1:{a.port}/v1/chat/completions"
    stream = json.dumps(
        {"model": "broken", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    bodies = {
        "big_unknown": tiny_messages("nope"),
        "big_route": tiny_messages("chat"),
        "huge_error": json.dumps({"model": "huge", "messages": [{"role": "user"}]}).encode(),
        "bad_frames": stream,
    }
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    cpu_start = sum(os.times()[:2])

    async def client(kind: str, index: int, deadline: float) -> None:
        json_header = {"content-type": "application/json"}
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                try:
                    if kind == "bad_http":
                        status = await bad_http(a.port, BAD_HTTP[index % len(BAD_HTTP)])
                        index += 1
                    else:
                        async with session.post(
                            base, data=bodies[kind], headers=json_header
                        ) as response:
                            raw = await response.read()
                            status = str(response.status)
                            if response.status != 200 and not is_error_shape(raw):
                                status += "-not-api-shape"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    status = type(exc).__name__
                counts[kind][status] += 1
                await asyncio.sleep(a.interval)

    span: dict[str, float] = {}

    async def main() -> None:
        span["start_s"] = time.monotonic()  # CLOCK_MONOTONIC: the load generator's clock
        deadline = span["start_s"] + a.seconds
        wanted = a.kinds.split(",")
        kinds = [(k, a.big_clients if k.startswith("big") else a.other_clients) for k in wanted]
        await asyncio.gather(*(client(k, i, deadline) for k, n in kinds for i in range(n)))

    uvloop.run(main())
    said: dict[str, Any] = {k: dict(v) for k, v in counts.items()}
    said["span"] = {**span, "end_s": time.monotonic()}
    said["cpu_s"] = round(sum(os.times()[:2]) - cpu_start, 2)
    print(json.dumps(said), flush=True)
    return 0


# -- the driver ------------------------------------------------------------------------


def scrape(port: int, path: str = "/metrics") -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        text: str = r.read().decode()
        return text


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def breakers_not_closed(port: int) -> set[str]:
    """The healthy targets whose breaker is open or half-open now, from
    `/admin/targets` (a small JSON; scraping `/metrics` five times a second cost the
    router about 12 % of its CPU samples, benchmarks/RESULTS.md)."""
    view = json.loads(scrape(port, "/admin/targets"))
    return {t["name"] for t in view["targets"] if t["name"] in HEALTHY and t["breaker"] != "closed"}


def healthy_failures(text: str) -> float:
    """Failed attempts on the healthy targets so far (`firsttoken_upstream_errors_total`):
    what a breaker opens on, counted between polls too."""
    found = families(text).get("firsttoken_upstream_errors_total", [])
    return sum(value for labels, value in found if labels.get("target") in HEALTHY)


def loop_lag(before: str, after: str) -> dict[str, Any]:
    """The router's event-loop lag samples between two scrapes: count, and how many
    were over 5 ms and over 50 ms."""

    def buckets(text: str) -> dict[str, float]:
        found = families(text).get("firsttoken_event_loop_lag_seconds_bucket", [])
        return {labels["le"]: value for labels, value in found}

    b, c = buckets(before), buckets(after)
    if not c:
        return {}
    total = c["+Inf"] - b.get("+Inf", 0.0)
    over = {le: total - (c[le] - b.get(le, 0.0)) for le in ("0.005", "0.05")}
    return {"samples": int(total), "over_5ms": int(over["0.005"]), "over_50ms": int(over["0.05"])}


def party_cpu(procs: dict[str, Any]) -> dict[str, float]:
    """CPU seconds so far: the router's process (all of it, and its system time
    apart: the kernel's copies of what it receives), its parse workers, the rest."""
    out = {k: cpu_seconds(process_tree(p.pid)) for k, p in procs.items() if k != "router"}
    router = procs["router"].pid
    out["router"] = cpu_seconds([router])
    out["router_sys"] = system_seconds(router)
    out["parse_worker"] = cpu_seconds(process_tree(router)[1:])
    return out


def system_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    return int(text[text.rindex(")") + 2 :].split()[12]) / os.sysconf("SC_CLK_TCK")


def run_window(
    name: str, procs: dict[str, Any], ports: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    """One phase while the load generator runs on: quiet for `--duration` seconds, or
    hostile clients sending for as long (to the router, or to the sink). Its samples
    are the streams sent from `--settle` seconds after it began (the hostile clients'
    first send) to its end; RSS is read from /proc every 0.2 s, the healthy breakers
    from `/admin/targets` every 0.4 s (each opening lasts `breaker_base_s`, 0.5 s, or
    more), `/metrics` only at the window's edges."""
    router, port = procs["router"], ports["router"]
    hostile: subprocess.Popen[bytes] | None = None
    before = scrape(port)
    if args.gc_trace:
        gctrace.mark(router.pid, Path(args.gc_trace_file))
    cpu_before = party_cpu(procs)
    started = time.monotonic()
    if name != "quiet":
        hostile = subprocess.Popen(
            [
                *("nice", "-n", str(args.hostile_nice), sys.executable, __file__, "_hostile"),
                *("--port", str(ports[name]), "--seconds", str(args.settle + args.duration)),
                *("--interval", str(args.interval), "--kinds", args.kinds),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            # niced, a session of their own with that nice (`nice_session`): under the
            # kernel's autogroup a nice counts only inside its session, where the
            # router's is not
            start_new_session=bool(args.hostile_nice),
        )
        if args.hostile_nice:
            nice_session(hostile.pid, args.hostile_nice)
    until = started + args.settle + args.duration
    rss_router = rss_workers = 0.0
    opened: set[str] = set()
    polled = 0.0
    while hostile.poll() is None if hostile is not None else time.monotonic() < until:
        rss_router = max(rss_router, rss_mib([router.pid]))
        rss_workers = max(rss_workers, rss_mib(process_tree(router.pid)[1:]))
        if time.monotonic() - polled >= 0.4:
            polled = time.monotonic()
            with contextlib.suppress(OSError):
                opened |= breakers_not_closed(port)
        time.sleep(0.2)
    ended = time.monotonic()
    after = scrape(port)
    cpu = {k: v - cpu_before[k] for k, v in party_cpu(procs).items()}
    window = (started + args.settle, ended)
    hostile_counts: dict[str, Any] = {}
    if hostile is not None:
        said, _ = hostile.communicate(timeout=120)
        hostile_counts = json.loads(said.decode().splitlines()[-1])
        cpu["hostile"] = hostile_counts.pop("cpu_s")
        span = hostile_counts.pop("span")
        window = (span["start_s"] + args.settle, span["end_s"])
    opened |= breakers_not_closed(port)
    gc_pauses = gctrace.mark(router.pid, Path(args.gc_trace_file)) if args.gc_trace else None
    return {
        "phase": name,
        "window": window,
        "rss_router_max_mib": round(rss_router, 1),
        "rss_parse_workers_max_mib": round(rss_workers, 1),
        "healthy_breakers_opened": sorted(opened),
        "healthy_failures": int(healthy_failures(after) - healthy_failures(before)),
        "loop_lag": loop_lag(before, after),
        "hostile": hostile_counts,
        "gc": gc_pauses,
        # CPU seconds per wall second (cores) of each party over the whole window
        "cores": {k: round(v / (ended - started), 3) for k, v in cpu.items()},
    }


def start_loadgen(
    work: Path, port: int, args: argparse.Namespace, phases: int
) -> tuple[Proc, Path]:
    """The 32 streams, one load generator for the whole run: its window is ended by
    SIGUSR1 when the phases are done (the duration is only a ceiling)."""
    ceiling = phases * (args.settle + args.duration + 30)
    loadgen = Proc(
        "loadgen",
        [
            *(sys.executable, str(LOADGEN), "--url"),
            f"http://127.0.0.1:{port}/v1/chat/completions",
            *("--model", "chat", "--concurrency", str(args.streams)),
            *("--warmup", str(args.warmup), "--duration", str(ceiling)),
        ],
        work,
        cwd=ROOT,
    )
    out_path = loadgen.log_path  # a file: the result line is longer than a pipe's buffer
    deadline = time.monotonic() + args.warmup + 60
    while b"window-start" not in out_path.read_bytes():
        if time.monotonic() > deadline or loadgen.popen.poll() is not None:
            raise RuntimeError(f"the load generator did not start: {loadgen.log_tail(2000)}")
        time.sleep(0.05)
    return loadgen, out_path


def run(args: argparse.Namespace) -> dict[str, Any]:
    at_start = machine()  # its date and load average, before anything runs
    work = Path(tempfile.mkdtemp(prefix="firsttoken-hostile-"))
    sim_ports = [free_port() for _ in range(4)]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sims = Proc(
        "sims",
        [sys.executable, __file__, "_sims", "--ports", ",".join(map(str, sim_ports))],
        work,
        env=env,
        cwd=ROOT,
    )
    with managed([sims]) as procs:
        for p in sim_ports:
            wait_http(f"http://127.0.0.1:{p}/health", sims, 30)
        config = work / "policy.yaml"
        config.write_text(policy(sim_ports, port, args.gc))
        exe = args.firsttoken or str(ROOT / ".venv" / "bin" / "firsttoken")
        router_env = dict(env) if not args.firsttoken else dict(os.environ)
        args.gc_trace_file = str(work / "router.gc.jsonl")  # args go into the JSON
        if args.gc_trace:
            router_env.update(gctrace.env(Path(args.gc_trace_file)))
        if args.gc_saveall:
            router_env[gctrace.SAVEALL_ENV] = "1"
        router = Proc(
            "router",
            [exe, "serve", "--config", str(config), "--log-level", "warning"],
            work,
            env=router_env,  # another checkout (--firsttoken) imports its own code
            cwd=work,
        )
        procs.append(router)
        wait_http(f"http://127.0.0.1:{port}/readyz", router, 60)
        parties: dict[str, Any] = {"router": router, "sims": sims}
        ports = {"router": port, "hostile": port}
        if args.sink:
            ports["sink"] = free_port()
            sink = Proc(
                "sink",
                [sys.executable, __file__, "_sink", "--port", str(ports["sink"])],
                work,
                env=env,
                cwd=ROOT,
            )
            procs.append(sink)
            parties["sink"] = sink
            wait_http(f"http://127.0.0.1:{ports['sink']}/health", sink, 30)
        kinds = ["quiet", "hostile", "sink"] if args.sink else ["quiet", "hostile"]
        names = kinds * args.rounds + ["quiet"]
        loadgen, out_path = start_loadgen(work, port, args, len(names))
        procs.append(loadgen)
        parties["loadgen"] = loadgen
        windows = [run_window(name, parties, ports, args) for name in names]
        os.kill(loadgen.pid, signal.SIGUSR1)
        loadgen.popen.wait(timeout=120)
        log_tail = router.log_tail(3000)
    load = json.loads(out_path.read_text().splitlines()[-1])
    for w in windows:
        start, end = w["window"]
        w["ttft_s"] = [
            t for t, s in zip(load["ttft_s"], load["sent_s"], strict=True) if start <= s < end
        ]
        w["streams"] = len(w["ttft_s"])
        w["ttft_ms"] = summary_ms(w["ttft_s"])
    return {
        "machine": at_start,
        "loadavg_at_end": os.getloadavg(),
        "args": vars(args),
        "phases": windows,
        "errors": load["errors"],
        "error_samples": load["error_samples"],
        "router_log": log_tail,
        "firsttoken": exe,
    }


def summary_ms(ttft: Sequence[float]) -> dict[str, float]:
    return {
        q: round(1000 * (percentile(ttft, v) or 0.0), 2)
        for q, v in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    }


def pooled_p99_ms(phases: Sequence[dict[str, Any]]) -> float:
    return 1000 * (percentile([t for p in phases for t in p["ttft_s"]], 0.99) or 0.0)


def noise(result: dict[str, Any], kind: str) -> tuple[float, float]:
    """The p99s of the `kind` phases split in two interleaved halves (1st, 3rd, ...
    and 2nd, 4th, ...), pooled: how far apart two measurements of the same thing
    land in this run."""
    same = [p for p in result["phases"] if p["phase"] == kind]
    return pooled_p99_ms(same[0::2]), pooled_p99_ms(same[1::2])


def delta_interval(result: dict[str, Any], rounds: int = 400) -> tuple[float, float]:
    """A 90 % interval of p99(hostile) - p99(quiet) by resampling whole phases (the
    samples within a phase are not independent: a stall hits many at once)."""
    import random

    rng = random.Random(15)
    quiet = [p for p in result["phases"] if p["phase"] == "quiet"]
    hostile = [p for p in result["phases"] if p["phase"] == "hostile"]
    deltas = sorted(
        pooled_p99_ms(rng.choices(hostile, k=len(hostile)))
        - pooled_p99_ms(rng.choices(quiet, k=len(quiet)))
        for _ in range(rounds)
    )
    return deltas[int(0.05 * rounds)], deltas[int(0.95 * rounds) - 1]


def bars(result: dict[str, Any]) -> list[tuple[str, bool, str]]:
    phases = result["phases"]
    q99 = pooled_p99_ms([p for p in phases if p["phase"] == "quiet"])
    h99 = pooled_p99_ms([p for p in phases if p["phase"] == "hostile"])
    delta = h99 - q99
    rss = max(p["rss_router_max_mib"] for p in phases)
    opened = sorted({t for p in phases for t in p["healthy_breakers_opened"]})
    failures = sum(p["healthy_failures"] for p in phases)
    return [
        (
            f"TTFT p99 hostile - quiet <= +{BAR_P99_DELTA_MS:g} ms",
            delta <= BAR_P99_DELTA_MS,
            f"{h99:.1f} - {q99:.1f} = {delta:+.1f} ms",
        ),
        (f"router RSS < {BAR_RSS_MIB:g} MiB", rss < BAR_RSS_MIB, f"max {rss:.1f} MiB"),
        (
            "no healthy target's breaker opens",
            not opened,
            f"{', '.join(opened) or 'none seen open'}; failed attempts on a, b: {failures}",
        ),
    ]


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"\n{m['date']}  {m['nproc']} CPUs  {m['cpu']}  load average {m['loadavg_at_start']} "
        f"at the start, {result['loadavg_at_end'][0]:.2f} at the end"
    )
    print(f"router: {result['firsttoken']}")
    print(f"stream errors over the whole run: {result['errors']} {result['error_samples']}")
    print(
        "\n| phase | streams | TTFT p50 | p90 | p99 | max | router RSS max | "
        "worker RSS max | loop lag >5 ms / >50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for p in result["phases"]:
        t, lag = p["ttft_ms"], p["loop_lag"]
        print(
            f"| {p['phase']} | {p['streams']} | {t['p50']} | {t['p90']} | "
            f"{t['p99']} | {t['max']} | {p['rss_router_max_mib']} MiB | "
            f"{p['rss_parse_workers_max_mib']} MiB | "
            f"{lag.get('over_5ms', '?')} / {lag.get('over_50ms', '?')} "
            f"of {lag.get('samples', '?')} |"
        )
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    for p in result["phases"]:
        for kind, counts in p["hostile"].items():
            answers[kind].update(counts)
    kinds = list(dict.fromkeys(p["phase"] for p in result["phases"]))
    parties = list(dict.fromkeys(k for p in result["phases"] for k in p["cores"]))
    print("\n| phases | CPU cores used (mean): " + " | ".join(parties) + " |")
    print("|---" * (len(parties) + 1) + "|")
    for kind in kinds:
        same = [p["cores"] for p in result["phases"] if p["phase"] == kind]
        mean = (sum(c.get(k, 0.0) for c in same) / len(same) for k in parties)
        print(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in mean) + " |")
    print("\n| hostile client | answers (status: count) |\n|---|---|")
    for kind, counts in answers.items():
        print(f"| {kind} | {', '.join(f'{s}: {n}' for s, n in sorted(counts.items()))} |")
    base = pooled_p99_ms([p for p in result["phases"] if p["phase"] == "quiet"])
    print("\n| TTFT p99, pooled | ms | - quiet |\n|---|---|---|")
    for kind in kinds:
        value = pooled_p99_ms([p for p in result["phases"] if p["phase"] == kind])
        print(f"| {kind} | {value:.1f} | {value - base:+.1f} |")
    for kind in ("quiet", "hostile"):
        if sum(p["phase"] == kind for p in result["phases"]) < 2:
            continue
        first, second = noise(result, kind)
        print(
            f"| {kind} split in two (odd / even phases) | {first:.1f} / {second:.1f} | "
            f"{first - second:+.1f} (the noise floor) |"
        )
    low, high = delta_interval(result)
    print(f"| hostile - quiet, 90 % interval (phases resampled) | | {low:+.1f} to {high:+.1f} |")
    if "sink" in kinds:
        print("(sink: the same hostile clients sending to a trivial server, not the router)")
    traced = [p for p in result["phases"] if p.get("gc")]
    for clock in ("cpu", "wall") if traced else ():
        print(f"\nGC pauses per phase ({clock} time):\n" + gctrace.HEADER)
        for i, p in enumerate(traced):
            print(gctrace.row("router", f"{i + 1}. {p['phase']}", p["gc"], clock))
    for i, p in enumerate(traced):
        if "garbage" in p["gc"]:
            print(f"cyclic garbage, phase {i + 1}. {p['phase']}: {json.dumps(p['gc']['garbage'])}")
    print("\n| bar | pass | measured |\n|---|---|---|")
    for name, ok, measured in bars(result):
        print(f"| {name} | {'yes' if ok else 'NO'} | {measured} |")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument(
        "--rounds", type=int, default=6, help="quiet/hostile pairs (then one more quiet)"
    )
    p.add_argument("--warmup", type=float, default=3.0, help="before the first phase")
    p.add_argument("--firsttoken", help="the firsttoken executable (default: this checkout's)")
    p.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds at the start of each phase whose streams are not counted",
    )
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--interval", type=float, default=0.25, help="a hostile client's pause")
    p.add_argument(
        "--kinds", default=",".join(KINDS), help="the hostile clients to run (default: all)"
    )
    p.add_argument(
        "--hostile-nice",
        type=int,
        default=0,
        help="the hostile clients' niceness (default 0, equals; 19 stands for clients on "
        "other machines, whose CPU is not the router's machine's)",
    )
    p.add_argument(
        "--sink",
        action="store_true",
        help="add a phase per round with the same hostile clients sending to a trivial "
        "sink server instead of the router: what the harness alone costs the streams",
    )
    p.add_argument(
        "--gc", default=None, metavar="Y,M,O", help="server.gc thresholds (young,middle,old)"
    )
    p.add_argument("--gc-trace", action="store_true", help="trace the router's GC pauses per phase")
    p.add_argument(
        "--gc-saveall",
        action="store_true",
        help="with --gc-trace: keep what the cyclic GC finds (gc.DEBUG_SAVEALL) and report "
        "it per phase (a check that no large body waits for the collector)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_sims"]:
        return sims_main(argv[1:])
    if argv[:1] == ["_hostile"]:
        return hostile_main(argv[1:])
    if argv[:1] == ["_sink"]:
        return sink_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.gc_trace = args.gc_trace or args.gc_saveall
    result = run(args)
    print_report(result)
    result["bars"] = [{"bar": n, "pass": ok, "measured": m} for n, ok, m in bars(result)]
    for p in result["phases"]:
        del p["ttft_s"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
