"""The metrics with the real thing: a real Prometheus scrapes a router under traffic.

One module-scoped fleet (a failing target, a slow primary that gets hedged, a
vLLM-like engine) and one Prometheus (scrape and rule evaluation every second,
loading deploy/prometheus/firsttoken.rules.yml). The traffic runs once, through
the official `openai` SDK, recording what the client saw; the tests then compare
Prometheus' answers with it. The shipped dashboard and rules are checked against a
real scrape of that router, so a typo in a metric name fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import TTFT_BUCKETS
from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour
from router.sim.server import SimServer
from router.sim.vllm import VllmSim
from tests.e2e.harness import Fleet, LoopThread, start_router, stop_fleet, target_yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "firsttoken.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "firsttoken.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "firsttoken.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
HAVE_PROMETHEUS = Path(PROMETHEUS).exists() and Path(PROMTOOL).exists()
needs_prometheus = pytest.mark.skipif(
    not HAVE_PROMETHEUS,
    reason="needs Debian's prometheus package (prometheus + promtool): apt-get install prometheus",
)

TURNS = 14
HEDGE_AFTER_S = 0.03
BEHAVIOURS = {
    "bad": Behaviour(fault=Fault("status", status=500)),
    "good": Behaviour(ttft_s=0.12, itl_s=0.005, tokens=5),
    "slow": Behaviour(ttft_s=0.2, itl_s=0.005, tokens=5),
    "quick": Behaviour(ttft_s=0.09, itl_s=0.005, tokens=5),
}
ROUTES = f"""
routes:
  - name: chat-fb
    targets: [bad, good]
    policy: {{type: ordered}}
  - name: chat-hedge
    targets: [slow, quick]
    policy: {{type: ordered}}
    hedge: {{after_ms: {HEDGE_AFTER_S * 1000:g}, max_rate: 1.0}}
  - name: local
    targets: [engine]
    policy: {{type: ordered}}
  - name: voice
    targets: [rt-a, rt-b]
    policy: {{type: ordered}}
"""
RT_PRICE = "price: {audio_input: 32, audio_output: 64, text_input: 4, text_output: 24}"
USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
PRICE = "price: {input_per_mtok: 1.0, output_per_mtok: 4.0}"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello there"}
]


@dataclass
class Seen:
    """What the client saw, per route."""

    ttft_s: dict[str, list[float]] = field(default_factory=dict)
    attempts: dict[str, list[int]] = field(default_factory=dict)
    targets: dict[str, list[str]] = field(default_factory=dict)


# -- the fleet, Prometheus and the traffic (once per module) -----------------------------


@pytest.fixture(scope="module")
def voice_sims(loop_thread: LoopThread) -> Iterator[dict[str, RealtimeSim]]:
    """Two Realtime simulators: a session on the first migrates to the second."""
    sims = {name: RealtimeSim(RealtimeBehaviour(ttfa_s=0.01)) for name in ("rt-a", "rt-b")}

    async def up() -> None:
        for sim in sims.values():
            await sim.start()

    async def down() -> None:
        for sim in sims.values():
            await sim.stop()

    loop_thread.run(up())
    yield sims
    loop_thread.run(down())


@pytest.fixture(scope="module")
def fleet(loop_thread: LoopThread, voice_sims: dict[str, RealtimeSim]) -> Iterator[Fleet]:
    fleet = Fleet(loop_thread)

    async def up() -> None:
        sims: dict[str, SimServer] = {
            name: OpenAISim(b, model=f"{name}-model") for name, b in BEHAVIOURS.items()
        }
        sims["engine"] = VllmSim(model="engine-model")
        for name, sim in sims.items():
            await sim.start()
            fleet.sims[name] = sim
        targets = "\n".join(
            target_yaml(
                name,
                sim.base_url,
                "vllm" if name == "engine" else "openai",
                f"{PRICE}\ntimeouts: {{first_token_s: 2.0}}",
            )
            for name, sim in sims.items()
        )
        targets += "".join(
            "\n" + target_yaml(name, sim.base_url, "realtime", RT_PRICE)
            for name, sim in voice_sims.items()
        )
        fleet.running = await start_router(f"targets:\n{targets}\n{ROUTES}")

    loop_thread.run(up())
    yield fleet
    stop_fleet(fleet)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for(self, expr: str, ok: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if ok(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.2)


@pytest.fixture(scope="module")
def prometheus(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is missing: apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "firsttoken",
                "static_configs": [{"targets": [f"127.0.0.1:{fleet.router.port}"]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60  # a loaded box starts Go and its TSDB slowly
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{(tmp / 'prometheus.log').read_text()}")
            time.sleep(0.1)
        # The zero series exist before any turn, so rate() sees every increase.
        up = prom.wait_for('up{job="firsttoken"} == 1', bool)
        assert up, "prometheus never scraped the router"
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stream_turn(c: openai.OpenAI, route: str, seen: Seen) -> None:
    sent = time.perf_counter()
    with c.chat.completions.with_streaming_response.create(
        model=route, messages=MESSAGES, stream=True
    ) as response:
        first: float | None = None
        for chunk in response.parse():
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        assert first is not None
        seen.ttft_s.setdefault(route, []).append(first - sent)
        seen.attempts.setdefault(route, []).append(int(response.headers["x-firsttoken-attempts"]))
        seen.targets.setdefault(route, []).append(response.headers["x-firsttoken-target"])


@pytest.fixture(scope="module")
def seen(fleet: Fleet, request: pytest.FixtureRequest) -> Seen:
    """The traffic. Prometheus, when there is one, starts first: it must scrape the zero
    series before the first turn for rate() to see every increase."""
    prometheus: Prometheus | None = None
    if HAVE_PROMETHEUS:
        prometheus = request.getfixturevalue("prometheus")
    seen = Seen()
    c = openai.OpenAI(base_url=fleet.router.base_url, api_key="unused", max_retries=0)
    # A user's mistake (an unknown model, answered 404 before any routing), and a
    # first turn that warms the SDK (its lazy imports) and is left out of `seen`.
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-route", messages=MESSAGES)
    stream_turn(c, "local", Seen())

    def turns(route: str) -> None:
        for _ in range(TURNS):
            stream_turn(c, route, seen)

    with ThreadPoolExecutor(3) as pool:  # one conversation per route, side by side
        list(pool.map(turns, ("chat-fb", "chat-hedge", "local")))
    c.close()
    voice = request.getfixturevalue("voice_sims")
    fleet.loop.run(realtime_session(fleet.router.base_url, voice["rt-a"]))
    if prometheus is None:
        return seen
    # a realtime session's two responses, one on each target (a migration between)
    prometheus.wait_for(
        "sum(firsttoken_realtime_responses_total)",
        lambda r: r and float(r[0]["value"][1]) == 2,
    )
    # Wait until Prometheus has scraped the end of the traffic.
    total = 3 * TURNS + 1
    got = prometheus.wait_for(
        "sum(firsttoken_requests_total)", lambda r: r and float(r[0]["value"][1]) == total
    )
    assert got and float(got[0]["value"][1]) == total, got
    return seen


async def realtime_session(base_url: str, first: RealtimeSim) -> None:
    """One voice session through the SDK: an answer, the upstream dies, another answer
    from the next target (TTFA, sessions, a migration, responses and spend to scrape)."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    async with client.realtime.connect(model="voice") as conn:
        for turn in range(2):
            await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
            await conn.response.create()
            async with asyncio.timeout(10):
                async for event in conn:
                    if event.type == "response.done":
                        break
            if turn == 0:
                await first.drop(1011)
                await asyncio.sleep(0.1)


# -- what Prometheus says against what the client saw -----------------------------------


def bucket_of(value: float) -> tuple[float, float]:
    lower = 0.0
    for upper in TTFT_BUCKETS:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


@needs_prometheus
@pytest.mark.prometheus
@pytest.mark.parametrize("route", ["chat-fb", "chat-hedge"])
def test_ttft_median_matches_the_client(prometheus: Prometheus, seen: Seen, route: str) -> None:
    """histogram_quantile interpolates linearly inside the bucket that holds the median,
    so it can only be placed to bucket resolution. The router's TTFT (arrival to
    response start) is the client's minus the client's own request and parsing time,
    a few ms on loopback. So the estimate must lie between the lower edge of the
    bucket of (client median - 15 ms) and the upper edge of the client median's
    bucket: with these sims, (0.1, 0.15] for both routes. For the hedged route this
    also proves TTFT counts the hedge delay (the winner alone takes 90 ms, which is
    the (0.075, 0.1] bucket)."""
    client_p50 = statistics.median(seen.ttft_s[route])
    estimate = prometheus.value(
        f'histogram_quantile(0.5, sum by (le) (firsttoken_ttft_seconds_bucket{{route="{route}"}}))'
    )
    low, _ = bucket_of(client_p50 - 0.015)
    _, high = bucket_of(client_p50)
    assert low < estimate <= high, (route, client_p50, estimate)
    if route == "chat-hedge":
        assert estimate > 0.1


@needs_prometheus
@pytest.mark.prometheus
def test_fallbacks_and_hedges_count_exactly_what_happened(
    prometheus: Prometheus, seen: Seen
) -> None:
    fell_back = sum(1 for a in seen.attempts["chat-fb"] if a == 2)
    assert fell_back >= 3  # the breaker opens after three failures, then probes
    assert prometheus.value('sum(firsttoken_fallbacks_total{route="chat-fb"})') == fell_back
    assert (
        prometheus.value(
            'firsttoken_fallbacks_total{route="chat-fb", from_target="bad", to_target="good",'
            ' cause="status"}'
        )
        == fell_back
    )
    assert (
        prometheus.value('sum(firsttoken_requests_total{route="chat-fb", outcome="fell_back"})')
        == fell_back
    )
    assert (
        prometheus.value('firsttoken_upstream_errors_total{target="bad", status_class="5xx"}')
        == fell_back
    )
    assert prometheus.value('sum(firsttoken_requests_total{route="chat-fb"})') == TURNS
    # Every hedged turn was won by the hedge: the slow primary takes 200 ms.
    assert seen.targets["chat-hedge"] == ["quick"] * TURNS
    hedges = {
        r["metric"]["event"]: float(r["value"][1])
        for r in prometheus.query('firsttoken_hedges_total{route="chat-hedge"}')
    }
    assert hedges == {"started": TURNS, "won": TURNS, "lost": 0, "cancelled": TURNS, "capped": 0}
    assert (
        prometheus.value('sum(firsttoken_requests_total{route="chat-hedge", outcome="hedged_won"})')
        == TURNS
    )


@needs_prometheus
@pytest.mark.prometheus
def test_each_turn_books_its_decision_and_its_time_to_the_send(
    prometheus: Prometheus, seen: Seen
) -> None:
    """Both are booked once the turn's request is written upstream, off its path
    (`Deadlines.after_send`): once per turn all the same, the warm-up turn included."""
    assert all(len(seen.targets[route]) == TURNS for route in ("chat-fb", "chat-hedge", "local"))
    total = 3 * TURNS + 1
    assert prometheus.value('sum(firsttoken_decisions_total{route!="voice"})') == total
    # the realtime session's plans: at its open and at its migration
    assert prometheus.value('sum(firsttoken_decisions_total{route="voice"})') == 2
    for route, turns in (("chat-fb", TURNS), ("chat-hedge", TURNS), ("local", TURNS + 1)):
        assert prometheus.value(f'sum(firsttoken_decisions_total{{route="{route}"}})') == turns
    pre_upstream = 'firsttoken_router_overhead_seconds_count{phase="pre_upstream"}'
    assert prometheus.value(f"sum({pre_upstream})") == total


@needs_prometheus
@pytest.mark.prometheus
def test_the_event_loop_threads_cpu_and_the_process_reach_prometheus(
    prometheus: Prometheus, fleet: Fleet, seen: Seen
) -> None:
    """The loop thread's time on a CPU and waiting for one (router/loopcpu.py), and
    the process metrics every Prometheus client exports, scraped for real. The loop's
    own CPU is at most the process's (this one runs the test's simulators too)."""
    prometheus.wait_for("firsttoken_event_loop_cpu_seconds_total", bool)
    on_cpu = prometheus.value("firsttoken_event_loop_cpu_seconds_total")
    assert on_cpu > 0.0
    assert prometheus.value("firsttoken_event_loop_cpu_wait_seconds_total") >= 0.0
    assert prometheus.value("process_cpu_seconds_total") >= on_cpu
    assert prometheus.value("process_resident_memory_bytes") > 10 * 1024 * 1024
    assert prometheus.value('python_gc_collections_total{generation="0"}') > 0


@needs_prometheus
@pytest.mark.prometheus
def test_recording_rules_evaluate_and_every_rule_is_healthy(
    prometheus: Prometheus, fleet: Fleet, seen: Seen
) -> None:
    p50 = prometheus.wait_for(
        'route:firsttoken_ttft_seconds:p50_rate5m{route="chat-fb"}',
        lambda r: r and not math.isnan(float(r[0]["value"][1])),
    )
    assert p50, "the TTFT p50 recording rule has no result"
    client_p50 = statistics.median(seen.ttft_s["chat-fb"])
    assert bucket_of(client_p50 - 0.015)[0] < float(p50[0]["value"][1]) <= bucket_of(client_p50)[1]
    slo = prometheus.wait_for("route:firsttoken_ttft_slo:ratio_rate5m", bool)
    # the share the router itself counted within 0.5 s (on a quiet box all of them; a
    # loaded one may push a turn past it, so the rule is held to the router's count)
    within, answered = 0.0, 0.0
    for family in text_string_to_metric_families(scrape(fleet)):
        if family.name == "firsttoken_ttft_seconds":
            for s in family.samples:
                if s.labels.get("route") != "chat-hedge":
                    continue
                if s.name.endswith("_bucket") and s.labels.get("le") == "0.5":
                    within += s.value
                elif s.name.endswith("_count"):
                    answered += s.value
    assert answered >= TURNS
    ratio = {r["metric"]["route"]: float(r["value"][1]) for r in slo}.get("chat-hedge")
    if within == answered:
        assert ratio == 1.0
    else:  # (rate() extrapolates the two series from their own first samples)
        assert ratio == pytest.approx(within / answered, abs=0.1)
    share = prometheus.wait_for(
        'route_target:firsttoken_requests:share_rate5m{route="local"}', bool
    )
    assert share and float(share[0]["value"][1]) == pytest.approx(1.0)
    assert prometheus.wait_for('route:firsttoken_targets_up:count{route="local"} == 1', bool)
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"firsttoken.recording", "firsttoken.alerts"}
    unhealthy = [
        (r["name"], r.get("lastError"))
        for g in rules
        for r in g["rules"]
        if r["health"] != "ok" or r.get("lastError")
    ]
    assert unhealthy == []


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def promql(expr: str) -> str:
    """A dashboard query as Prometheus takes it: Grafana's variables filled in."""
    return expr.replace("$__rate_interval", "1m").replace("$route", ".*").replace("$target", ".*")


@needs_prometheus
@pytest.mark.prometheus
def test_every_dashboard_query_runs_against_the_real_prometheus(
    prometheus: Prometheus, seen: Seen
) -> None:
    # Let the 1-minute rates see two scrapes of the traffic.
    prometheus.wait_for("route:firsttoken_requests:rate5m", bool)
    empty = []
    for expr in dashboard_exprs():
        if expr.startswith("label_values("):
            continue
        if not prometheus.query(promql(expr)):
            empty.append(expr)
    # Only rejections may be empty: this traffic had none.
    assert [e for e in empty if "rejected" not in e] == []


# -- the deploy files and the exposition, with promtool ---------------------------------


@needs_prometheus
@pytest.mark.prometheus
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def scrape(fleet: Fleet) -> str:
    return httpx.get(f"{fleet.router.url}/metrics", timeout=5).text


@needs_prometheus
@pytest.mark.prometheus
def test_promtool_finds_the_exposition_clean(fleet: Fleet, seen: Seen) -> None:
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=scrape(fleet),
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""


NAME = re.compile(r"\b[a-z_]*:?firsttoken[a-z0-9_:]*")
MATCHERS = re.compile(r"\b(firsttoken_[a-z0-9_]+)\{([^}]*)\}")


def test_dashboard_and_rules_use_only_metrics_a_router_exports(fleet: Fleet, seen: Seen) -> None:
    """Every name in a dashboard or rule expression is in a real scrape of a router
    that served traffic (fallbacks, hedges, a vLLM engine), or is recorded by a rule;
    every label a matcher names is one that metric has."""
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scrape(fleet)):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    rules = yaml.safe_load(RULES.read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]] + dashboard_exprs()
    used = {name for expr in exprs for name in NAME.findall(expr)}
    assert len(used) > 20
    unknown = sorted(n for n in used if n not in samples and n not in recorded)
    assert unknown == []
    for expr in exprs:
        for name, matchers in MATCHERS.findall(expr):
            labels = {m.split("=")[0].strip().rstrip("!~") for m in matchers.split(",") if m}
            assert labels <= samples[name] | {"job", "instance"}, (name, labels, expr)


def test_dashboard_is_valid_and_takes_its_datasource_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in (
        "ttft",
        "slo",
        "traffic share",
        "spend",
        "fallbacks",
        "hedges",
        "queue",
        "breaker",
        "overhead",
        "time to first audio",
        "migrations",
    ):
        assert topic in titles, topic
