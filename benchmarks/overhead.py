"""What does the router add to a stream? Direct vs through FirstToken, nginx, vLLM's
Rust router (and optionally LiteLLM).

    .venv/bin/python benchmarks/overhead.py --out benchmarks/out/overhead.json

Router configurations (`--configs`): `firsttoken`, round robin over two targets (the
plain relay of issue 14); `ft-slo2` and `ft-slo8`, the product as users run it
(issue 16): `slo_cost` with an SLO, adaptive hedging, affinity (each load worker is
one conversation, `x-session-id`) and exploration, Prometheus metrics and the
per-turn explanation, over 2 and over 8 targets (8 upstream ports in the same
upstream process). Peers (`--peers`): nginx, vllm-router 0.1.17 in its own venv
(`.venv-vllm-router`), litellm, and `floor`: the minimal Python relay on the router's
own stack (`peers/floor_relay.py`: uvicorn + raw ASGI + aiohttp, no routing, a stream's
head held to its first token as the commit point holds it), so what the stack costs
and what the router's code adds show apart. The bars of issues 14 and 16 are printed
last.

One streaming workload (simulated OpenAI upstream: 50 ms TTFT, 10 ms between
tokens, 20 tokens) is run direct and through each proxy at each concurrency:
a closed loop of C streams, a warm-up, then a measured window. Reported per
point: TTFT mean/p50/p99 (send to the first non-empty `delta.content`, measured in
the load generator), added TTFT (proxy minus direct at the same concurrency),
streams per second counted in the window, the workers' own rates summed (`rate/s`:
a closed loop of fixed-length requests completes in waves of C, so the window count
moves in steps of one wave, 2.5 % for 250 ms requests in 10 s; the rates do not),
the ratio of rates to direct (the window counts' ratio beside it, and direct's mean
request time, a whole stream or unary answer, over the proxy's, which a closed
loop's ratio should equal), and the
proxy's CPU time per streamed request (utime+stime from /proc of the proxy's
process tree, sampled at the edges of the measured window). `--rounds N` runs
direct and each proxy N times in alternation at each concurrency (a machine that
drifts shows as a spread); the bars read the rounds' mean.

Every party is its own process, because on a small machine they compete for the
same cores: the upstream (two or eight `OpenAISim` ports in one uvloop process), the
proxy (the router as `firsttoken serve`; nginx; vllm-router; the LiteLLM proxy)
and the load generator (`benchmarks/loadgen.py`, aiohttp + uvloop, raw SSE bytes).
All on 127.0.0.1. Every process started here is stopped at the end, also on
Ctrl-C or an exception.

Each router's own /metrics is read around each point: hedges started and won, and
its mean time from arrival to the upstream send and from the upstream's first token
to the write to the client (the second table).

`--endpoint responses` runs the same comparison on streaming `/v1/responses` (issue
19: first token = first non-empty `response.output_text.delta`, end =
`response.completed`); `--endpoint embeddings` on `/v1/embeddings`, unary batches
of `--batch` inputs answered after `--embed-ms` (its "TTFT" is the time to the
whole answer, its "streams/s" requests per second; the workers' first requests are
spread over one request's length, `--stagger-ms`, or a fixed-length upstream keeps
them in the waves they started in). `--embed-ms` defaults to the
length of one chat stream of the default workload (50 + 20 x 10 = 250 ms), so that
64 concurrent requests ask the router for as many turns per second as the chat
bars at 64 streams; at 50 ms they ask five times as many (on 2 shared cores that
measures the machine: load generator, upstream and router each serve ~1000/s). Each endpoint
prints its own bars (issue 19: for responses the chat bars on added TTFT at 16 and
64 streams; for embeddings throughput at 64 against direct). For them the default
is the plain router (`--configs firsttoken`), no peers, at 16 and 64:

    .venv/bin/python benchmarks/overhead.py --endpoint responses
    .venv/bin/python benchmarks/overhead.py --endpoint embeddings

`--profile` adds one more run of a router (`--profile-target`, default `ft-slo2`)
at the highest concurrency with
py-spy attached (non-blocking) for the measured window, and prints where the
router's time goes (self and inclusive, % of samples; then by `WHERE_RULES`
category, in ms per stream). That run is not part of the table: sampling perturbs
it. `--profile-native` samples C frames too (py-spy --native, pausing the process
to unwind): the cyclic GC and the event loop's own code show only there.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import gctrace  # noqa: E402  (a sibling script, not a package)

from router import build  # noqa: E402
from router.sim.ports import free_port  # noqa: E402

PEERS_DIR = HERE / "peers"
LOADGEN = HERE / "loadgen.py"
MODEL = "bench"
LITELLM_KEY = "sk-firsttoken-bench"
VERSION_OF = "import importlib.metadata as m;print(m.version('{}'))"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The bars (issue 14), for the router: added TTFT at 16 and 64 streams, throughput
# against direct at 64 and 128, CPU per 20-token stream at 64.
BAR_P50_MS = 1.0
BAR_P99_MS = 5.0
BAR_THROUGHPUT = {64: 0.99, 128: 0.95}
BAR_CPU_MS = {64: 1.5}
# Issue 16, for `slo_cost` with adaptive hedging over 2 targets (`ft-slo2`): added TTFT
# at 64, throughput and p99 at 128, CPU at 64; over 8 targets at most +0.2 CPU-ms.
SLO_BAR_P50_MS = 1.0
SLO_BAR_P99_MS = 5.0
SLO_BAR_CPU_MS = 1.3
SLO_BAR_THROUGHPUT_128 = 0.97
SLO_BAR_P99_128_MS = 15.0
SLO8_EXTRA_CPU_MS = 0.2
# Issue 19, for the plain relay: /v1/responses streaming has the chat bars on added
# TTFT; /v1/embeddings at 64 concurrent requests keeps 99% of direct throughput.
EMBEDDINGS_BAR_THROUGHPUT_64 = 0.99
#: the path each `--endpoint` sends to (direct and through every proxy)
CHAT_PATH = "/v1/chat/completions"
ENDPOINT_PATHS = {
    "chat": CHAT_PATH,
    "responses": "/v1/responses",
    "embeddings": "/v1/embeddings",
}


# -- processes -------------------------------------------------------------------------


def nice_session(pid: int, nice: int | None = None) -> None:
    """Give the session of `pid` (a child started in a session of its own) `nice`, by
    default this process's nice value, as its autogroup's. Where the kernel groups CPU time by
    session (autogroup, `/proc/sys/kernel/sched_autogroup_enabled`), a nice value counts
    only inside its session, so without this `--nice` (or `nice -n -10 python
    benchmarks/...`) shielded no party from other work on the machine. Nothing to do at
    nice 0 or where the kernel has no autogroup."""
    if nice is None:
        nice = os.getpriority(os.PRIO_PROCESS, 0)
    group = Path(f"/proc/{pid}/autogroup")
    if nice and group.exists():
        with contextlib.suppress(OSError):  # a negative nice needs CAP_SYS_NICE
            group.write_text(f"{nice}\n")


class Proc:
    """A child in its own session (its autogroup as nice as this process, `nice_session`):
    stopped with its whole group, logs to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        workdir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        nice_session(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        self._log.flush()
        data = self.log_path.read_bytes()
        return data[-n:].decode("utf-8", "replace")

    def stop(self, grace_s: float = 5.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace_s)
        else:
            # the leader is gone; its group may not be (e.g. nginx workers)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()


def wait_http(url: str, proc: Proc, timeout_s: float, headers: Mapping[str, str] = {}) -> None:
    """Poll a GET until it answers 2xx; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            req = urllib.request.Request(url, headers=dict(headers))
            with urllib.request.urlopen(req, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout_s}s ({last})")


# -- /proc -----------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def cpu_pressure_us() -> int | None:
    """/proc/pressure/cpu `some` total: microseconds during which a task waited for a CPU."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(first.rsplit("total=", 1)[1])


def rss_mib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return total * PAGE_SIZE / 2**20


# -- the parties -----------------------------------------------------------------------


@dataclass
class Target:
    """Where the load generator sends its streams, and which process pays for them."""

    name: str
    urls: list[str]
    proc: Proc | None = None
    api_key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: the router's /metrics, read around each point (hedges, first-token relay time)
    metrics_url: str | None = None
    #: the router's GC pause trace (`--gc-trace`), marked at the window's edges
    gc_trace: Path | None = None


def start_upstream(workdir: Path, ports: Sequence[int], args: argparse.Namespace) -> Proc:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_upstream",
        "--ports",
        ",".join(map(str, ports)),
        "--ttft-ms",
        str(args.ttft_ms),
        "--itl-ms",
        str(args.itl_ms),
        "--tokens",
        str(args.tokens),
    ]
    proc = Proc("upstream", argv, workdir, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    for port in ports:
        wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return proc


#: the router configurations a run can measure: name -> (policy, targets)
#: `firsttoken` is the plain relay of issue 14 (round robin over two targets); the
#: others are the product as users run it (issue 16): `slo_cost` with an SLO, adaptive
#: hedging, affinity (every load worker is one conversation) and exploration, with
#: Prometheus metrics and the per-turn explanation (`x-firsttoken-reason`).
PEERS = ("nginx", "vllm-router", "litellm", "floor")
ROUTER_CONFIGS: dict[str, tuple[str, int]] = {
    "firsttoken": ("round_robin", 2),
    "ft-slo2": ("slo_cost", 2),
    "ft-slo8": ("slo_cost", 8),
}
SLO_ROUTE = (
    "slo: {ttft_ms: 300, quantile: 0.9}, "
    "hedge: {after_ms: adaptive, max_extra: 1, max_rate: 0.1}, "
    "affinity: {enabled: true}"
)


def router_config(ports: Sequence[int], policy: str = "round_robin", gc: str | None = None) -> str:
    lines = [gctrace.server_yaml(gc) + "targets:"]
    for i, port in enumerate(ports):
        lines.append(
            f"  - {{name: sim-{i}, kind: openai, base_url: 'http://127.0.0.1:{port}/v1',"
            f" model: sim-model, expected_ttft_ms: 50,"
            f" timeouts: {{connect_s: 5, first_token_s: 60, idle_s: 60}}}}"
        )
    names = ", ".join(f"sim-{i}" for i in range(len(ports)))
    extra = f", {SLO_ROUTE}" if policy == "slo_cost" else ""
    lines += [
        "routes:",
        f"  - {{name: {MODEL}, targets: [{names}], policy: {{type: {policy}}}{extra}}}",
        "",
    ]
    return "\n".join(lines)


def start_firsttoken(
    workdir: Path,
    ports: Sequence[int],
    name: str = "firsttoken",
    source: str | None = None,
    config: str = "firsttoken",
    *,
    gc: str | None = None,
    gc_trace: bool = False,
) -> Target:
    """The router as `firsttoken serve`; `source` puts another checkout's router first;
    `gc` sets `server.gc` ("young,middle,old"); `gc_trace` traces its GC pauses."""
    policy, n_targets = ROUTER_CONFIGS[config]
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(router_config(ports[:n_targets], policy, gc))
    exe = ROOT / ".venv" / "bin" / "firsttoken"
    binary = str(exe) if exe.exists() else shutil.which("firsttoken")
    if binary is None:
        raise RuntimeError("firsttoken is not installed (make install)")
    port = free_port()
    argv = [binary, "serve", "--config", str(cfg), "--port", str(port), "--log-level", "warning"]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    trace = workdir / f"{name}.gc.jsonl" if gc_trace else None
    if trace is not None:
        env.update(gctrace.env(trace))
    proc = Proc(name, argv, workdir, env=env, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60)
    meta = {"source": source or str(ROOT), "policy": policy, "targets": n_targets, "gc": gc}
    # which build ran: the modules compiled by mypyc (make compile), none for a source tree
    meta["compiled"] = len(build.inspect(Path(source or ROOT) / "router").compiled)
    return Target(
        name,
        [f"http://127.0.0.1:{port}/v1/chat/completions"],
        proc,
        meta=meta,
        metrics_url=f"http://127.0.0.1:{port}/metrics",
        gc_trace=trace,
    )


def start_nginx(workdir: Path, ports: Sequence[int]) -> Target:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
    prefix = workdir / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    text = (PEERS_DIR / "nginx.conf").read_text()
    text = text.replace("@LISTEN_PORT@", str(port)).replace("@UPSTREAM_SERVERS@", servers)
    if os.geteuid() == 0:  # workers would drop to `nobody` and lose the prefix
        text = "user root;\n" + text
    (prefix / "nginx.conf").write_text(text)
    argv = [binary, "-p", f"{prefix}/", "-c", "nginx.conf", "-e", "error.log"]
    proc = Proc("nginx", argv, workdir, cwd=prefix)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 20)
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return Target(
        "nginx",
        [f"http://127.0.0.1:{port}/v1/chat/completions"],
        proc,
        meta={"version": version.stderr.strip()},
    )


def start_floor(workdir: Path, ports: Sequence[int]) -> Target:
    """The minimal Python relay (`peers/floor_relay.py`: uvicorn + raw ASGI + aiohttp,
    no routing), holding a stream's head until its first token as the router's commit
    point does: what the stack itself costs, measured beside the router."""
    port = free_port()
    argv = [sys.executable, str(PEERS_DIR / "floor_relay.py"), "--port", str(port)]
    argv += ["--upstreams", ",".join(map(str, ports)), "--hold-head"]
    proc = Proc("floor", argv, workdir, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 30)
    return Target("floor", [f"http://127.0.0.1:{port}/v1/chat/completions"], proc)


def start_vllm_router(workdir: Path, ports: Sequence[int], venv: Path) -> Target:
    """vLLM's Rust router, round robin, started as in the shared notes (peers.md)."""
    binary = venv / "bin" / "vllm-router"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} not found: python3 -m venv {venv} && "
            f"{venv}/bin/pip install vllm-router==0.1.17"
        )
    port, prom = free_port(), free_port()
    argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), "--worker-urls"]
    argv += [f"http://127.0.0.1:{p}" for p in ports]
    argv += ["--policy", "round_robin", "--prometheus-host", "127.0.0.1"]
    argv += ["--prometheus-port", str(prom)]
    proc = Proc("vllm-router", argv, workdir, cwd=workdir)
    wait_http(f"http://127.0.0.1:{port}/health", proc, 60)
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", VERSION_OF.format("vllm-router")],
        capture_output=True,
        text=True,
        check=False,
    )
    return Target(
        "vllm-router",
        [f"http://127.0.0.1:{port}/v1/chat/completions"],
        proc,
        meta={"version": version.stdout.strip()},
    )


def start_litellm(workdir: Path, ports: Sequence[int], venv: Path) -> Target:
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} not found: python3 -m venv {venv} && "
            f"{venv}/bin/pip install 'litellm[proxy]==1.106.2'"
        )
    text = (PEERS_DIR / "litellm.yaml").read_text()
    for i, p in enumerate(ports):
        text = text.replace(f"@UPSTREAM_{i}@", f"http://127.0.0.1:{p}/v1")
    cfg = workdir / "litellm.yaml"
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
        120,
        headers={"authorization": f"Bearer {LITELLM_KEY}"},
    )
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            VERSION_OF.format("litellm"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return Target(
        "litellm",
        [f"http://127.0.0.1:{port}/v1/chat/completions"],
        proc,
        api_key=LITELLM_KEY,
        meta={"version": version.stdout.strip()},
    )


# -- the router's own view ---------------------------------------------------------------


def router_counters(url: str) -> dict[str, float]:
    """Hedges by event, turns by outcome, the router's overhead histogram (sum and
    count per phase) and its event loop thread's time on a CPU and waiting for one,
    from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "firsttoken_hedges_total":
                key = f"hedge_{labels['event']}"
            elif sample.name == "firsttoken_requests_total":
                key = f"turns_{labels['outcome']}"
            elif sample.name.startswith("firsttoken_router_overhead_seconds_") and (
                sample.name.endswith(("_sum", "_count"))
            ):
                key = f"{labels['phase']}{sample.name.rsplit('_', 1)[1]}"
            elif sample.name == "firsttoken_event_loop_cpu_seconds_total":
                key = "loop_cpu"
            elif sample.name == "firsttoken_event_loop_cpu_wait_seconds_total":
                key = "loop_cpu_wait"
            else:
                continue
            out[key] = out.get(key, 0.0) + sample.value
    return out


def router_view(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the router saw during one point (warm-up included): hedges per turn, and its
    own mean time from arrival to upstream send and from first token to client write, and
    its event loop thread's milliseconds on a CPU and runnable waiting for one (the host
    starving the router, where the kernel counts it)."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    turns = sum(v for k, v in d.items() if k.startswith("turns_"))
    view: dict[str, Any] = {"turns": int(turns)}
    for event in ("started", "won", "lost", "cancelled"):
        view[f"hedges_{event}"] = int(d.get(f"hedge_{event}", 0))
    view["hedge_rate"] = round(d.get("hedge_started", 0) / turns, 4) if turns else None
    for phase in ("pre_upstream", "first_token_relay"):
        n = d.get(f"{phase}count", 0)
        view[f"{phase}_mean_ms"] = round(1000 * d[f"{phase}sum"] / n, 3) if n else None
    for key in ("loop_cpu", "loop_cpu_wait"):
        view[f"{key}_ms"] = round(1000 * d[key], 1) if key in d else None
    return view


# -- one point -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def loadgen_argv(target: Target, concurrency: int, args: argparse.Namespace) -> list[str]:
    """The load generator's command line for one point."""
    argv = [
        sys.executable,
        str(LOADGEN),
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--model",
        MODEL,
        "--max-tokens",
        str(args.tokens),
        "--sessions",  # every worker one conversation: the router's affinity has keys
    ]
    # redis_limits.py and others call this with their own arguments: chat, then
    endpoint = getattr(args, "endpoint", "chat")
    argv += ["--endpoint", endpoint]
    if endpoint == "embeddings":
        argv += ["--batch", str(args.batch)]
    stagger_ms = getattr(args, "stagger_ms", None) or 0.0
    if stagger_ms > 0:
        argv += ["--stagger", str(stagger_ms / 1000)]
    for url in target.urls:
        argv += ["--url", url]
    if target.api_key:
        argv += ["--api-key", target.api_key]
    return argv


def run_point(
    target: Target,
    concurrency: int,
    args: argparse.Namespace,
    upstream: Proc,
    on_window_start: Any = None,
) -> dict[str, Any]:
    """One closed-loop run; CPU of proxy, upstream and load generator over the window."""
    argv = loadgen_argv(target, concurrency, args)
    proxy_pids = process_tree(target.proc.pid) if target.proc else []
    up_pids = process_tree(upstream.pid)
    seen_before = router_counters(target.metrics_url) if target.metrics_url else None
    gen = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    nice_session(gen.pid)
    try:
        samples: dict[str, dict[str, Any]] = {}
        result: dict[str, Any] | None = None
        wall: dict[str, float] = {}
        assert gen.stdout is not None
        for raw_line in gen.stdout:
            line = raw_line.strip()
            if line in ("window-start", "window-end"):
                wall[line] = time.monotonic()
                samples[line] = {
                    "proxy": cpu_seconds(proxy_pids),
                    "upstream": cpu_seconds(up_pids),
                    "loadgen": cpu_seconds([gen.pid]),
                    "pressure_us": float(cpu_pressure_us() or 0),
                }
                if target.gc_trace is not None and target.proc is not None:
                    samples[line]["gc"] = gctrace.mark(target.proc.pid, target.gc_trace)
                if line == "window-start" and on_window_start is not None:
                    on_window_start()
            elif line.startswith("{"):
                result = json.loads(line)
        gen.wait(30)
        if result is None:
            err = gen.stderr.read() if gen.stderr else ""
            raise RuntimeError(f"load generator failed (exit {gen.returncode}):\n{err[-2000:]}")
    finally:
        if gen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gen.pid, signal.SIGKILL)
            gen.wait(5)
    seen = None
    if target.metrics_url and seen_before is not None:
        seen = router_view(seen_before, router_counters(target.metrics_url))
    window_s = wall["window-end"] - wall["window-start"]
    completed = result["completed_in_window"]
    end = samples["window-end"]
    cpu = {k: end[k] - samples["window-start"][k] for k in end if k != "gc"}
    pressure = cpu.pop("pressure_us") / 1e6
    ttft = result["ttft_s"]
    point: dict[str, Any] = {
        "target": target.name,
        "concurrency": concurrency,
        "samples": len(ttft),
        "completed": completed,
        "errors": result["errors"],
        "error_samples": result["error_samples"],
        "statuses": result["statuses"],
        "window_s": round(window_s, 3),
        "streams_per_s": round(completed / args.duration, 2),
        # the workers' own completion rates, summed: no window-phase steps (loadgen.py)
        "rate_per_s": round(result.get("rate_per_s", 0.0), 2),
        "ttft_mean_ms": _ms(sum(ttft) / len(ttft) if ttft else None),
        "ttft_p50_ms": _ms(percentile(ttft, 0.5)),
        "ttft_p90_ms": _ms(percentile(ttft, 0.9)),
        "ttft_p99_ms": _ms(percentile(ttft, 0.99)),
        "ttft_max_ms": _ms(max(ttft) if ttft else None),
        "stream_p50_ms": _ms(percentile(result["total_s"], 0.5)),
        "stream_mean_ms": _ms(
            sum(result["total_s"]) / len(result["total_s"]) if result["total_s"] else None
        ),
        "proxy_cpu_s": round(cpu["proxy"], 3),
        "proxy_cpu_pct": round(100 * cpu["proxy"] / window_s, 1) if target.proc else None,
        "proxy_cpu_ms_per_stream": (
            round(1000 * cpu["proxy"] / completed, 3) if target.proc and completed else None
        ),
        "proxy_rss_mib": round(rss_mib(proxy_pids), 1) if target.proc else None,
        "upstream_cpu_pct": round(100 * cpu["upstream"] / window_s, 1),
        "loadgen_cpu_pct": round(100 * cpu["loadgen"] / window_s, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        # share of the window in which some runnable task waited for a CPU (PSI)
        "cpu_pressure_pct": round(100 * pressure / window_s, 1),
        "router": seen,
        "gc": end.get("gc"),  # the GC pauses of the window (--gc-trace)
    }
    return point


# -- profile ---------------------------------------------------------------------------


#: where a turn's CPU goes: the first rule whose marker is in a sample's stack names it
#: (the more specific first: the relay runs inside the commit, which runs in the race)
WHERE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GC (the cyclic collector)", ("gc_collect",)),
    ("relay after the first token (read, frame, scan, write)", ("Turn._relay",)),
    ("planning (views, prediction, policy, plan metrics)", ("Router.plan",)),
    ("upstream send (aiohttp request, pooled connection)", ("OpenAIUpstream.send",)),
    ("before the commit: read and parse to the first token", ("read_to_first_token",)),
    ("commit: head, explanation, first write, finish", ("Turn._commit",)),
    ("request body: read, JSON parse, validation", ("BodyParser.parse", "Server._read_body")),
    ("bookkeeping: turn record, metrics, affinity", ("Turn._record", "Metrics.", "AffinityMap")),
    (
        "race machinery (attempt, scopes, task group, hedge timer)",
        ("Race.", "Turn._run", "attempt_to_commit", "Turn.run", "Primed.aclose"),
    ),
    (
        "gateway, the rest (route, disconnect watcher, turn object)",
        ("Server._turn", "Server._dispatch", "Server.__call__ (router", "Router.handle"),
    ),
    ("aiohttp: upstream bytes in (protocol, stream reader)", ("aiohttp/",)),
    ("uvicorn: request intake, response writes", ("uvicorn/protocols",)),
)
WHERE_OTHER = "event loop, syscalls, other native"


def where_time_goes(frames: Sequence[str]) -> str | None:
    """The `WHERE_RULES` category of one sampled stack; None for a wait in epoll."""
    if any("epoll_pwait" in f for f in frames[-3:]):
        return None
    for name, markers in WHERE_RULES:
        if any(m in f for f in frames for m in markers):
            return name
    return WHERE_OTHER


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks,
    and the busy samples' shares by `WHERE_RULES` category."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    where: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        self_c[frames[-1]] += count
        for f in set(frames):
            incl_c[f] += count
        category = where_time_goes(frames)
        if category is not None:
            where[category] += count

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in c.most_common(top)] if total else []

    busy = sum(where.values())
    return {
        "samples": total,
        "self": share(self_c),
        "inclusive": share(incl_c),
        "where": [(c, round(100 * n / busy, 1)) for c, n in where.most_common()] if busy else [],
    }


def profile_router(
    target: Target, concurrency: int, args: argparse.Namespace, upstream: Proc, out_dir: Path
) -> dict[str, Any]:
    spy = ROOT / ".venv" / "bin" / "py-spy"
    binary = str(spy) if spy.exists() else shutil.which("py-spy")
    if binary is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    assert target.proc is not None
    raw = out_dir / "overhead-profile.txt"
    svg = out_dir / "overhead-profile.svg"
    spies: list[subprocess.Popen[bytes]] = []

    def attach() -> None:
        common = ["--pid", str(target.proc.pid), "--rate", "250"]  # type: ignore[union-attr]
        # --native shows what Python frames hide (the cyclic GC, uvloop's writes); it
        # has to pause the process to unwind, so it is not --nonblocking
        common += ["--native"] if args.profile_native else ["--nonblocking"]
        common += ["--duration", str(int(args.duration))]
        for fmt, path in (("raw", raw), ("flamegraph", svg)):
            if fmt == "flamegraph" and not args.profile_svg:
                continue
            spies.append(
                subprocess.Popen(
                    [binary, "record", *common, "--format", fmt, "-o", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )

    try:
        point = run_point(target, concurrency, args, upstream, on_window_start=attach)
        for s in spies:
            s.wait(args.duration + 30)
    finally:
        for s in spies:
            if s.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.pid, signal.SIGINT)
                s.wait(10)
    summary: dict[str, Any] = summarize_profile(raw) if raw.exists() else {"samples": 0}
    summary["point"] = point
    summary["raw"] = str(raw)
    return summary


# -- the run ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    free = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "free_g": free.strip(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_at_start": os.getloadavg(),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a and b else None


def add_deltas(points: list[dict[str, Any]]) -> None:
    """Each proxy point against direct's at the same concurrency (and `--rounds` round).

    `throughput_ratio` is of the workers' own rates (`rate_per_s`), which the window's
    phase does not move; `window_ratio` of the completions counted in the window (in
    steps of one wave of C requests); `latency_ratio`, direct's mean request time (a
    whole stream, or a whole unary answer) over the proxy's, what a closed loop's
    throughput ratio should come to."""
    direct = {(p["concurrency"], p.get("round", 0)): p for p in points if p["target"] == "direct"}
    for p in points:
        d = direct.get((p["concurrency"], p.get("round", 0)))
        if d is None or p["target"] == "direct":
            continue
        for q in ("mean", "p50", "p99"):
            a, b = p.get(f"ttft_{q}_ms"), d.get(f"ttft_{q}_ms")
            p[f"added_ttft_{q}_ms"] = None if a is None or b is None else round(a - b, 2)
        p["window_ratio"] = _ratio(p["streams_per_s"], d["streams_per_s"])
        p["throughput_ratio"] = (
            _ratio(p.get("rate_per_s"), d.get("rate_per_s")) or p["window_ratio"]
        )
        p["latency_ratio"] = _ratio(d.get("stream_mean_ms"), p.get("stream_mean_ms"))


#: what `summarize` averages over the rounds of one (target, concurrency)
ROUND_KEYS = (
    "added_ttft_mean_ms",
    "added_ttft_p50_ms",
    "added_ttft_p99_ms",
    "throughput_ratio",
    "window_ratio",
    "latency_ratio",
    "proxy_cpu_ms_per_stream",
)


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (target, concurrency): its rounds' mean of each `ROUND_KEYS`
    figure (a single round is itself). The bars read these."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["target"], p["concurrency"]), []).append(p)
    out = []
    for (target, c), group in groups.items():
        merged: dict[str, Any] = {"target": target, "concurrency": c, "rounds": len(group)}
        for key in ROUND_KEYS:
            values = [p[key] for p in group if p.get(key) is not None]
            merged[key] = round(sum(values) / len(values), 4) if values else None
            if len(values) > 1:
                merged[f"{key}_range"] = [min(values), max(values)]
        out.append(merged)
    return out


P50, P99 = "added_ttft_p50_ms", "added_ttft_p99_ms"
RATIO, CPU = "throughput_ratio", "proxy_cpu_ms_per_stream"
#: (target, concurrency, what, point key, bar, op); a bar given as a (target, key)
#: pair is that target's figure at the same concurrency in the same run
BarSpec = tuple[str, int, str, str, "float | tuple[str, str]", str]
BARS: tuple[BarSpec, ...] = (
    # issue 14: the plain relay (round robin over two targets)
    *(("firsttoken", c, "added TTFT p50 (ms)", P50, BAR_P50_MS, "<=") for c in (16, 64)),
    *(("firsttoken", c, "added TTFT p99 (ms)", P99, BAR_P99_MS, "<=") for c in (16, 64)),
    *(("firsttoken", c, "throughput vs direct", RATIO, r, ">=") for c, r in BAR_THROUGHPUT.items()),
    *(("firsttoken", c, "CPU ms per stream", CPU, ms, "<=") for c, ms in BAR_CPU_MS.items()),
    # issue 16: slo_cost + adaptive hedge, metrics, explanations, affinity
    ("ft-slo2", 64, "added TTFT p50 (ms)", P50, SLO_BAR_P50_MS, "<="),
    ("ft-slo2", 64, "added TTFT p99 (ms)", P99, SLO_BAR_P99_MS, "<="),
    ("ft-slo2", 128, "throughput vs direct", RATIO, SLO_BAR_THROUGHPUT_128, ">="),
    ("ft-slo2", 128, "added TTFT p99 (ms)", P99, SLO_BAR_P99_128_MS, "<="),
    ("ft-slo2", 64, "CPU ms per stream", CPU, SLO_BAR_CPU_MS, "<="),
    ("ft-slo8", 64, "CPU ms per stream, over ft-slo2's + 0.2", CPU, ("ft-slo2", CPU), "<="),
    (
        "firsttoken",
        128,
        "throughput vs direct, vs vllm-router's",
        RATIO,
        ("vllm-router", RATIO),
        ">=",
    ),
    ("firsttoken", 128, "added TTFT p99 (ms), vs vllm-router's", P99, ("vllm-router", P99), "<="),
)


#: issue 19's bars, per endpoint (chat has BARS)
ENDPOINT_BARS: dict[str, tuple[BarSpec, ...]] = {
    "chat": BARS,
    "responses": (
        *(("firsttoken", c, "added TTFT p50 (ms)", P50, BAR_P50_MS, "<=") for c in (16, 64)),
        *(("firsttoken", c, "added TTFT p99 (ms)", P99, BAR_P99_MS, "<=") for c in (16, 64)),
    ),
    "embeddings": (
        ("firsttoken", 64, "throughput vs direct", RATIO, EMBEDDINGS_BAR_THROUGHPUT_64, ">="),
    ),
}


def bars(points: list[dict[str, Any]], endpoint: str = "chat") -> list[dict[str, Any]]:
    """Each bar whose points the run has: for chat issue 14's for the plain relay
    (`firsttoken`), issue 16's for the product (`ft-slo2`, `ft-slo8`) and round robin
    vs vllm-router; for responses and embeddings issue 19's."""
    at = {(p["target"], p["concurrency"]): p for p in summarize(points)}
    out = []
    for target, c, what, key, bar_spec, op in ENDPOINT_BARS[endpoint]:
        point = at.get((target, c))
        if point is None:
            continue
        if isinstance(bar_spec, tuple):
            other = at.get((bar_spec[0], c))
            if other is None or other.get(bar_spec[1]) is None:
                continue
            bar = other[bar_spec[1]] + (SLO8_EXTRA_CPU_MS if target == "ft-slo8" else 0.0)
        else:
            bar = bar_spec
        value = point.get(key)
        met = value is not None and (value <= bar if op == "<=" else value >= bar)
        floor = at.get(("floor", c), {}).get(key)  # the stack alone, when the run has it
        out.append(
            {
                "target": target,
                "concurrency": c,
                "check": what,
                "value": value,
                "bar": f"{op} {round(bar, 3)}",
                "met": met,
                "context": _ratio_context(point) if key == RATIO else None,
                "floor": floor,
            }
        )
    return out


def _ratio_context(point: dict[str, Any]) -> str:
    """What a throughput verdict rests on: the latency a closed loop's ratio follows,
    and the other two ratios (each a mean over the rounds)."""
    mean, p50 = point.get("added_ttft_mean_ms"), point.get("added_ttft_p50_ms")
    rounds = point.get("rounds", 1)
    return (
        f"added mean {_fmt(mean, True)} / p50 {_fmt(p50, True)} ms; window count "
        f"{_pct(point.get('window_ratio'))}, latency ratio {_pct(point.get('latency_ratio'))}"
        + (f"; {rounds} rounds, rates {point.get('throughput_ratio_range')}" if rounds > 1 else "")
    )


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.1f}" if signed else (f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}")
    return str(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def markdown(points: list[dict[str, Any]]) -> str:
    """One row per point. TTFT is send to the first token (embeddings: to the whole
    answer); streams/s is counted in the window, rate/s the workers' own rates summed
    (what "vs direct" compares; `add_deltas`)."""
    head = (
        "| target | C | TTFT mean / p50 / p99 (ms) | added mean / p50 / p99 (ms) "
        "| streams/s | rate/s | vs direct (window) | proxy CPU ms/stream | proxy CPU % "
        "| RSS MiB | errors | CPU wait % |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for p in points:
        name = p["target"] + (f" (round {p['round'] + 1})" if "round" in p else "")
        added = (
            "-"
            if p["target"] == "direct"
            else " / ".join(_fmt(p.get(f"added_ttft_{q}_ms"), True) for q in ("mean", "p50", "p99"))
        )
        ratio = (
            "-"
            if p["target"] == "direct"
            else (f"{_pct(p.get('throughput_ratio'))} ({_pct(p.get('window_ratio'))})")
        )
        rows.append(
            f"| {name} | {p['concurrency']} "
            f"| {_fmt(p.get('ttft_mean_ms'))} / {_fmt(p['ttft_p50_ms'])} "
            f"/ {_fmt(p['ttft_p99_ms'])} "
            f"| {added} | {_fmt(p['streams_per_s'])} | {_fmt(p.get('rate_per_s'))} | {ratio} "
            f"| {_fmt(p['proxy_cpu_ms_per_stream'])} | {_fmt(p['proxy_cpu_pct'])} "
            f"| {_fmt(p['proxy_rss_mib'])} | {p['errors']} | {_fmt(p['cpu_pressure_pct'])} |"
        )
    return "\n".join(rows)


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    """Each proxy against direct, over its rounds (the mean; [min, max] when several):
    what the bars read."""
    rows = [
        "| vs direct | C | rounds | added mean / p50 / p99 (ms) | throughput (rates) "
        "| throughput (window count) | request time, direct mean / proxy mean "
        "| proxy CPU ms/stream |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(p: dict[str, Any], key: str, fmt: Callable[[float | None], str]) -> str:
        spread = p.get(f"{key}_range")
        return fmt(p.get(key)) + (f" [{fmt(spread[0])}, {fmt(spread[1])}]" if spread else "")

    signed: Callable[[float | None], str] = functools.partial(_fmt, signed=True)
    for p in summary:
        added = " / ".join(cell(p, f"added_ttft_{q}_ms", signed) for q in ("mean", "p50", "p99"))
        rows.append(
            f"| {p['target']} | {p['concurrency']} | {p['rounds']} | {added} "
            f"| {cell(p, 'throughput_ratio', _pct)} | {cell(p, 'window_ratio', _pct)} "
            f"| {cell(p, 'latency_ratio', _pct)} | {cell(p, 'proxy_cpu_ms_per_stream', _fmt)} |"
        )
    return "\n".join(rows)


def router_markdown(points: list[dict[str, Any]]) -> str:
    """What each router saw of its own points (warm-up included)."""
    rows = [
        "| router | C | turns | hedges started / won / lost | hedge rate "
        "| arrival -> upstream send (mean ms) | first token -> client write (mean ms) "
        "| loop thread on a CPU / waiting for one (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        seen = p.get("router")
        if not seen:
            continue
        rows.append(
            f"| {p['target']} | {p['concurrency']} | {seen['turns']} "
            f"| {seen['hedges_started']} / {seen['hedges_won']} / {seen['hedges_lost']} "
            f"| {_fmt(seen['hedge_rate'])} | {_fmt(seen['pre_upstream_mean_ms'])} "
            f"| {_fmt(seen['first_token_relay_mean_ms'])} "
            f"| {_fmt(seen.get('loop_cpu_ms'))} / {_fmt(seen.get('loop_cpu_wait_ms'))} |"
        )
    return "\n".join(rows)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def managed(procs: list[Proc]) -> Iterator[list[Proc]]:
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()
        signal.signal(signal.SIGTERM, old)


def start_targets(
    args: argparse.Namespace,
    *,
    workdir: Path,
    ports: Sequence[int],
    configs: Sequence[str],
    peers: Sequence[str],
    procs: list[Proc],
) -> list[Target]:
    """direct, then each router configuration, each `--variant` and each peer."""
    # direct, nginx and vllm-router spread over the first two ports, as round robin does
    pair = ports[:2]
    targets = [Target("direct", [f"http://127.0.0.1:{p}/v1/chat/completions" for p in pair])]
    trace = args.gc_trace
    starters: dict[str, Callable[[], Target]] = {
        config: functools.partial(
            start_firsttoken, workdir, ports, config, None, config, gc=args.gc, gc_trace=trace
        )
        for config in configs
    }
    starters["nginx"] = lambda: start_nginx(workdir, pair)
    starters["floor"] = lambda: start_floor(workdir, pair)
    starters["vllm-router"] = lambda: start_vllm_router(workdir, pair, Path(args.vllm_router_venv))
    starters["litellm"] = lambda: start_litellm(workdir, pair, Path(args.litellm_venv))
    variants: list[str] = []
    # --variant NAME=DIR: another checkout's router; --gc-variant NAME=Y,M,O: this one
    # with other GC thresholds
    specs = [(spec, False) for spec in args.variant] + [(spec, True) for spec in args.gc_variant]
    for spec, gc_only in specs:
        vname, _, value = spec.partition("=")
        config = args.variant_config
        if not gc_only and "@" in value:  # NAME=DIR@CONFIG: this variant's own config
            value, _, config = value.rpartition("@")
        name = f"{config}-{vname}"
        variants.append(name)
        starters[name] = functools.partial(
            start_firsttoken,
            workdir,
            ports,
            name,
            None if gc_only else value,
            config,
            gc=value if gc_only else args.gc,
            gc_trace=trace,
        )
    for name in [*configs, *variants, *peers]:
        t0 = time.monotonic()
        target = starters[name]()
        assert target.proc is not None
        procs.append(target.proc)
        target.meta["startup_s"] = round(time.monotonic() - t0, 1)
        targets.append(target)
        print(f"# started {name} in {target.meta['startup_s']} s", flush=True)
    return targets


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.concurrency is None:
        args.concurrency = "1,16,64,128" if args.endpoint == "chat" else "16,64"
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    if args.peers is None:
        args.peers = "nginx,vllm-router" if args.endpoint == "chat" else ""
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            raise SystemExit(f"unknown peer {p!r} ({', '.join(PEERS)})")
    chat = args.endpoint == "chat"
    configs = [
        c
        for c in (args.configs or (",".join(ROUTER_CONFIGS) if chat else "firsttoken")).split(",")
        if c
    ]
    for c in configs:
        if c not in ROUTER_CONFIGS:
            raise SystemExit(f"unknown router config {c!r} ({', '.join(ROUTER_CONFIGS)})")
    began = time.monotonic()
    if args.nice:
        # Inherited by every process started here: upstream, proxies, load generator
        # alike, so the comparison stays fair while unrelated work on the machine
        # (other jobs) gets less of the CPU.
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    if args.endpoint == "embeddings":
        args.ttft_ms = args.embed_ms  # the simulator answers a batch at its first-token time
    if args.stagger_ms is None:
        # Embeddings: 64 clients that do not all start at one instant. Requests of one
        # fixed length keep the loop's workers in the waves they started in (a quarter
        # of a cycle with no request, then 30 at once), and a proxy, one process, then
        # serves each wave in a queue: burst service, not throughput.
        args.stagger_ms = args.embed_ms if args.endpoint == "embeddings" else 0.0
    workdir = Path(tempfile.mkdtemp(prefix="ft-overhead-"))
    suffix = "" if args.endpoint == "chat" else f"-{args.endpoint}"
    out = Path(args.out or f"benchmarks/out/overhead{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"# overhead: {info['nproc']} cores, {info['cpu']}; logs in {workdir}", flush=True)
    procs: list[Proc] = []
    points: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    with managed(procs):
        n_ports = max([2, *(ROUTER_CONFIGS[c][1] for c in configs)])
        ports = [free_port() for _ in range(n_ports)]
        upstream = start_upstream(workdir, ports, args)
        procs.append(upstream)
        targets = start_targets(
            args, workdir=workdir, ports=ports, configs=configs, peers=peers, procs=procs
        )
        path = ENDPOINT_PATHS[args.endpoint]
        for target in targets:
            target.urls = [url.replace(CHAT_PATH, path) for url in target.urls]
        # Interleaved: at each concurrency, direct first, then every proxy, so that
        # each delta compares runs minutes apart at most; with --rounds the pair is
        # repeated in alternation, so a drift of the machine shows as a spread.
        for c in concurrencies:
            for r, target in ((r, t) for r in range(args.rounds) for t in targets):
                point = run_point(target, c, args, upstream)
                if args.rounds > 1:
                    point["round"] = r
                points.append(point)
                seen = point.get("router") or {}
                print(
                    f"# {target.name:<12} c={c:<3} p50 {point['ttft_p50_ms']} ms "
                    f"p99 {point['ttft_p99_ms']} ms {point['streams_per_s']} streams/s "
                    f"cpu {point['proxy_cpu_ms_per_stream']} ms/stream "
                    f"errors {point['errors']} load {point['loadavg_1m']} "
                    f"cpu-wait {point['cpu_pressure_pct']}%"
                    + (
                        f" hedges {seen['hedge_rate']} relay {seen['first_token_relay_mean_ms']} ms"
                        f" loop waited {seen.get('loop_cpu_wait_ms')} ms for a CPU"
                        if seen
                        else ""
                    ),
                    flush=True,
                )
        if args.profile:
            router = next(t for t in targets if t.name == args.profile_target)
            profile = profile_router(router, max(concurrencies), args, upstream, out.parent)
        router_log_bytes = {
            t.name: (workdir / f"{t.name}.log").stat().st_size
            for t in targets
            if "policy" in t.meta and (workdir / f"{t.name}.log").exists()
        }
    add_deltas(points)
    result = {
        "machine": info,
        "workload": {
            "ttft_ms": args.ttft_ms,
            "itl_ms": args.itl_ms,
            "tokens": args.tokens,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "concurrency": concurrencies,
            "nice": args.nice,
            "endpoint": args.endpoint,
            "batch": args.batch if args.endpoint == "embeddings" else None,
            "rounds": args.rounds,
            "stagger_ms": args.stagger_ms,
        },
        "peers": {t.name: t.meta for t in targets},
        "points": points,
        "summary": summarize([p for p in points if p["target"] != "direct"]),
        "bars": bars(points, args.endpoint),
        "profile": profile,
        "router_log_bytes": router_log_bytes,
        "run_time_s": round(time.monotonic() - began, 1),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"\nendpoint: {ENDPOINT_PATHS[result['workload']['endpoint']]}")
    print(markdown(result["points"]))
    print()
    print(router_markdown(result["points"]))
    print()
    if result.get("summary"):
        print(summary_markdown(result["summary"]))
        print()
    traced = [p for p in result["points"] if p.get("gc")]
    if traced:
        for clock in ("cpu", "wall"):
            print(f"GC pauses in the measured window ({clock} time):\n" + gctrace.HEADER)
            for p in traced:
                print(gctrace.row(p["target"], f"c={p['concurrency']}", p["gc"], clock))
            print()
    for b in result["bars"]:
        mark = "met" if b["met"] else "MISSED"
        print(
            f"- {b['target']} c={b['concurrency']}: {b['check']} {b['value']} "
            f"(bar {b['bar']}): {mark}"
            + (f" ({b['context']})" if b.get("context") else "")
            + (
                f"; the floor relay, the stack alone: {b['floor']}"
                if b.get("floor") is not None
                else ""
            )
        )
    prof = result.get("profile")
    if prof and prof.get("samples"):
        print(f"\nrouter profile at c={prof['point']['concurrency']}: {prof['samples']} samples")
        print("self:")
        for frame, pct in prof["self"][:15]:
            print(f"  {pct:5.1f}%  {frame}")
        print("inclusive:")
        for frame, pct in prof["inclusive"][:25]:
            print(f"  {pct:5.1f}%  {frame}")
        # scaled by the same router's unprofiled point (sampling, --native above all,
        # slows the profiled one down)
        cpu = next(
            (
                p.get("proxy_cpu_ms_per_stream")
                for p in result["points"]
                if (p["target"], p["concurrency"])
                == (prof["point"]["target"], prof["point"]["concurrency"])
            ),
            None,
        )
        print("where the time goes (busy samples; ms per stream at the table's CPU/stream):")
        for category, pct in prof["where"]:
            per_stream = f"{cpu * pct / 100:.2f} ms" if cpu else "-"
            print(f"  {pct:5.1f}%  {per_stream:>8}  {category}")
    print(f"\nrun time {result['run_time_s']} s")


# -- the upstream process --------------------------------------------------------------


def upstream_main(argv: Sequence[str]) -> int:
    """Two OpenAISim ports in one uvloop process, until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="overhead.py _upstream")
    p.add_argument("--ports", required=True)
    p.add_argument("--ttft-ms", type=float, default=50)
    p.add_argument("--itl-ms", type=float, default=10)
    p.add_argument("--tokens", type=int, default=20)
    a = p.parse_args(argv)

    import asyncio

    import uvloop

    from router.sim.behaviour import Behaviour
    from router.sim.openai_server import OpenAISim

    async def serve() -> None:
        behaviour = Behaviour(ttft_s=a.ttft_ms / 1000, itl_s=a.itl_ms / 1000, tokens=a.tokens)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sims = [
            OpenAISim(behaviour, port=int(port), max_records=1000) for port in a.ports.split(",")
        ]
        for sim in sims:
            await sim.start()
        print("ready", flush=True)
        await stop.wait()
        for sim in sims:
            await sim.stop()

    uvloop.run(serve())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--concurrency",
        default=None,
        help="comma-separated (default 1,16,64,128 for chat, 16,64 for the others)",
    )
    p.add_argument(
        "--endpoint",
        choices=tuple(ENDPOINT_PATHS),
        default="chat",
        help="what every party is asked: streaming chat (default), streaming "
        "/v1/responses, or /v1/embeddings batches",
    )
    p.add_argument("--batch", type=int, default=8, help="embeddings: inputs per request")
    p.add_argument(
        "--embed-ms",
        type=float,
        default=250.0,
        help="embeddings: the upstream's time to answer a batch (default 250)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured window, s")
    p.add_argument(
        "--stagger-ms",
        type=float,
        default=None,
        help="spread the load workers' first requests over this long (default: --embed-ms "
        "for embeddings, 0 for the others: all start at once)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run direct and each proxy this many times in alternation at each "
        "concurrency; the bars read the rounds' mean (default 1)",
    )
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up before the window, s")
    p.add_argument(
        "--configs",
        default=None,
        help=f"router configurations, any of {','.join(ROUTER_CONFIGS)} "
        "(default all for chat, firsttoken for the others)",
    )
    p.add_argument(
        "--peers",
        default=None,
        help=f"any of {','.join(PEERS)} ('' for none; default nginx,vllm-router for chat, "
        "none for the others)",
    )
    p.add_argument("--out", default=None, help="default benchmarks/out/overhead[-<endpoint>].json")
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument(
        "--litellm-venv", default=str(ROOT / ".venv-litellm-proxy"), help="where litellm[proxy] is"
    )
    p.add_argument(
        "--vllm-router-venv",
        default=str(ROOT / ".venv-vllm-router"),
        help="where vllm-router==0.1.17 is",
    )
    p.add_argument(
        "--profile", action="store_true", help="then profile the router at the top concurrency"
    )
    p.add_argument("--profile-svg", action="store_true", help="also write a flamegraph SVG")
    p.add_argument(
        "--profile-native",
        action="store_true",
        help="profile native frames too (py-spy --native: the GC, the event loop's C code)",
    )
    p.add_argument("--profile-target", default="ft-slo2", help="which router to profile")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every party at this nice value (e.g. -10 as root, to shield the "
        "measurement from unrelated load on a shared machine); default 0",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=DIR[@CONFIG]",
        help="also run the router from another checkout (DIR holds its router/; a compiled "
        "one from make compile too), with --variant-config or CONFIG, for A/B",
    )
    p.add_argument(
        "--variant-config", default="ft-slo2", help="the configuration variants run with"
    )
    p.add_argument(
        "--gc",
        default=None,
        metavar="Y,M,O",
        help="server.gc thresholds (young,middle,old) for every router run (default: the "
        "router's own)",
    )
    p.add_argument(
        "--gc-variant",
        action="append",
        default=[],
        metavar="NAME=Y,M,O",
        help="also run this checkout's router (--variant-config) with these server.gc "
        "thresholds, for A/B",
    )
    p.add_argument(
        "--gc-trace",
        action="store_true",
        help="trace the routers' GC pauses (FIRSTTOKEN_GC_TRACE) and print them per point",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_upstream"]:
        return upstream_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted; every process started here was stopped", file=sys.stderr)
        return 130
    print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
