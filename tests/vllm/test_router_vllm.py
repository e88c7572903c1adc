"""The router in front of two real vLLM engines (CPU): SDK streaming, the engine scraper and
``/admin/targets``, load-aware routing against round robin, disconnect, and failover when
an engine dies.

The router runs in-process (uvicorn on a background loop, as in ``tests/e2e``); the
engines are the session's ``small`` (``--max-num-seqs 2``) and ``large`` (8). The failover
test kills a third engine of its own, so the session's pair stays up for the other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.harness import LoopThread, RunningRouter, start_router, stop_router
from tests.vllm.engines import (
    Engine,
    EngineSpec,
    VllmEngines,
    engine_python,
    metric_value,
    start_engine,
    stop_engine,
    wait_healthy,
)
from tests.vllm.stallwatch import StallWatch

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(480)]

# Nearly as much as --max-model-len (`engines.MAX_MODEL_LEN`) leaves after the short prompt:
# seconds of decoding (see there).
LONG_TOKENS = 4000

# The burst: turns arriving BURST_SPACING_S apart, each BURST_TOKENS long (~2.5 s on the slow
# test model), so about 8 are in flight at the peak: more than the small engine's 2 slots,
# about the large engine's 8. Round robin gives small half of them (3.3 turns/s against the
# 0.8/s its two slots serve), so its queue grows for the whole burst.
BURST_TURNS = 20
BURST_SPACING_S = 0.3
BURST_TOKENS = 96
WARM_UP_ROUNDS = 3
BURST_PAIRS = 2
# p90 TTFT of the load-aware policy must be below this fraction of round robin's (issue 17's
# bar is 0.5). Measured on 2 cores since the engines share the test's session (see
# engines.ENGINE_NICE): 0.05-0.23 over ten runs (benchmarks/RESULTS.md, 2026-12-07 10:16);
# 0.8 leaves room for a noisier machine while a policy that does not see the queue (ratios
# 0.9-1.6 when it mostly ignored it) still fails.
P90_MARGIN = 0.8


# -- the router -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterRig:
    loop: LoopThread
    running: RunningRouter
    #: stalls of the router's loop while the rig ran (`tests/vllm/stallwatch.py`)
    watch: StallWatch

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def base_url(self) -> str:
        return self.running.base_url

    def admin_targets(self) -> dict[str, dict[str, Any]]:
        response = httpx.get(f"{self.url}/admin/targets", timeout=5.0)
        response.raise_for_status()
        return {t["name"]: t for t in response.json()["targets"]}


def _target_yaml(name: str, engine: Engine) -> str:
    # A long first-token deadline: a turn queued on a busy engine must wait, not fail over,
    # or round robin would be measured with fallbacks in it.
    return f"""
  - name: {name}
    kind: vllm
    base_url: {engine.openai_base_url}
    model: tiny-llama
    expected_ttft_ms: 100
    timeouts: {{connect_s: 2, first_token_s: 60, idle_s: 60}}"""


def router_config(
    engines: dict[str, Engine], *, policy: str = "latency", extra_signals: str = ""
) -> str:
    """Targets named after the engines; route ``chat`` over all of them with ``policy``
    (listed in the given order), and one pinned route per engine (``only-NAME``)."""
    names = list(engines)
    targets = "".join(_target_yaml(name, engine) for name, engine in engines.items())
    pinned = "".join(
        f"\n  - name: only-{name}\n    targets: [{name}]\n    exploration: 0.0" for name in names
    )
    return f"""
signals:
  engine_scrape_interval_s: 0.25
{extra_signals}
targets:{targets}
routes:
  - name: chat
    targets: [{", ".join(names)}]
    policy: {{type: {policy}}}
    exploration: 0.0{pinned}
"""


@contextmanager
def running_router(config_text: str, report: list[str] | None = None) -> Iterator[RouterRig]:
    """The router on a loop thread of its own, watched for stalls; when it stops,
    `report` gets the watch's summary (if any stall reached 250 ms) and each stall of
    0.5 s or more."""
    loop = LoopThread()
    try:
        running = loop.run(start_router(config_text))
        watch = StallWatch(loop.loop, loop.ident, loop.native_id)
        try:
            with watch:
                yield RouterRig(loop, running, watch)
        finally:
            loop.run(stop_router(running))
            if report is not None and watch.stalls:
                report.extend(watch.lines(at_least_s=0.5))
    finally:
        loop.close()


def task_stacks(rig: RouterRig, module: str) -> list[str]:
    """Where each of the router's tasks with a frame in `module` (a file name) is
    suspended: what a silent background task waits on."""

    def stacks() -> list[str]:
        out: list[str] = []
        for task in asyncio.all_tasks():
            frames = task.get_stack()
            if any(f.f_code.co_filename.endswith(module) for f in frames):
                where = " <- ".join(
                    f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames[-4:])
                )
                out.append(f"{task.get_name()}: {where}")
        return out or [f"no task in {module}"]

    return rig.loop.call(stacks)


@pytest.fixture(scope="module")
def rig(vllm_engines: VllmEngines, vllm_report: list[str]) -> Iterator[RouterRig]:
    """One router over both session engines, ``latency`` on route ``chat``. No cooldown for
    a stream that slows mid-answer (as in ``run_burst``): a stall of the 2-core machine
    during one test benched ``large`` for the next one (503 on ``only-large``)."""
    with running_router(
        router_config(
            {"small": vllm_engines.small, "large": vllm_engines.large},
            extra_signals="  degraded_cooldown_s: 0",
        ),
        vllm_report,
    ) as rig:
        yield rig


# -- engine and stream helpers --------------------------------------------------------------


def _metrics(engine: Engine) -> str:
    response = httpx.get(f"{engine.base_url}/metrics", timeout=5.0)
    response.raise_for_status()
    return response.text


def _gauges(engine: Engine) -> tuple[float | None, float | None]:
    text = _metrics(engine)
    return (
        metric_value(text, "vllm:num_requests_running"),
        metric_value(text, "vllm:num_requests_waiting"),
    )


def _wait_engine(
    engine: Engine, running: float, waiting: float, timeout_s: float, every_s: float = 0.02
) -> float:
    """Poll the engine until it shows ``running`` and ``waiting``; return the seconds taken."""
    began = time.monotonic()
    seen: tuple[float | None, float | None] = (None, None)
    while time.monotonic() - began < timeout_s:
        seen = _gauges(engine)
        if seen == (running, waiting):
            return time.monotonic() - began
        time.sleep(every_s)
    raise AssertionError(
        f"{engine.spec.name}: wanted running={running} waiting={waiting} within"
        f" {timeout_s} s, last (running, waiting) = {seen}"
    )


def _wait_for(
    what: str | Callable[[], str], predicate: Callable[[], bool], timeout_s: float
) -> float:
    """Seconds until `predicate` held; `what` (or what it returns, asked only on a miss,
    so it can show the last state the predicate saw) names it in the failure."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if predicate():
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what if isinstance(what, str) else what()}")


def _body(route: str, max_tokens: int, content: str = "Say something.") -> dict[str, object]:
    return {
        "model": route,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "ignore_eos": True,
    }


def _content_deltas(response: httpx.Response) -> Iterator[str]:
    """Non-empty ``delta.content`` strings of an OpenAI SSE stream; an error event raises."""
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        if "error" in chunk:
            raise AssertionError(f"error event in the stream: {chunk['error']}")
        for choice in chunk.get("choices", []):
            text = choice.get("delta", {}).get("content")
            if text:
                yield text


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile, as benchmarks/vllm_calibrate.py computes it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _idle(engines: VllmEngines, timeout_s: float = 30.0) -> None:
    for engine in engines.all:
        _wait_engine(engine, 0, 0, timeout_s, every_s=0.1)


# -- tests ------------------------------------------------------------------------------------


def test_openai_sdk_streams_through_the_router(rig: RouterRig) -> None:
    with OpenAI(base_url=rig.base_url, api_key="unused", max_retries=0) as client:
        for route, target in (("only-small", "small"), ("only-large", "large")):
            raw = client.chat.completions.with_raw_response.create(
                model=route,
                messages=[{"role": "user", "content": "Hello through the router."}],
                max_tokens=16,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"ignore_eos": True},
            )
            assert raw.headers["x-firsttoken-target"] == target
            contents: list[str] = []
            finish: list[str] = []
            completion_tokens: int | None = None
            with raw.parse() as stream:
                for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            contents.append(choice.delta.content)
                        if choice.finish_reason:
                            finish.append(choice.finish_reason)
                    if chunk.usage is not None:
                        completion_tokens = chunk.usage.completion_tokens
            assert 1 <= len(contents) <= 16
            assert finish == ["length"]
            assert completion_tokens == 16


def test_scraper_reads_both_engines_and_admin_shows_the_load(
    rig: RouterRig, vllm_engines: VllmEngines, vllm_report: list[str]
) -> None:
    """Four long turns pinned to ``small`` (2 run, 2 wait) and one to ``large``: the router's
    view of each engine, scraped from the real ``/metrics``, says so, and is fresh."""
    _idle(vllm_engines)
    stop = threading.Event()
    errors: list[BaseException] = []

    def hold(route: str, index: int) -> None:
        try:
            with httpx.stream(
                "POST",
                f"{rig.base_url}/chat/completions",
                json=_body(route, LONG_TOKENS, f"Hold number {index}."),
                timeout=60.0,
            ) as response:
                response.raise_for_status()
                for _ in response.iter_lines():
                    if stop.is_set():
                        return
        except Exception as exc:  # reported by the main thread's assertion
            errors.append(exc)

    routes = ["only-small"] * 4 + ["only-large"]
    threads = [
        threading.Thread(target=hold, args=(route, i), daemon=True)
        for i, route in enumerate(routes)
    ]
    seen: dict[str, dict[str, Any]] = {}

    def loaded() -> bool:
        nonlocal seen
        seen = rig.admin_targets()
        small, large = seen["small"]["engine"], seen["large"]["engine"]
        return (small["running"], small["waiting"], large["running"]) == (2, 2, 1)

    with ExitStack() as cleanup:
        for thread in threads:
            cleanup.callback(thread.join, 30.0)
        cleanup.callback(stop.set)
        for thread in threads:
            thread.start()
        took = _wait_for(
            lambda: (
                f"admin to show small 2+2 and large 1 (last {seen}; errors {errors});"
                f" scrapers: {task_stacks(rig, 'scraper.py')}; {rig.watch.lines()}"
            ),
            loaded,
            20.0,
        )
        vllm_report.append(f"admin view showed the load {took:.2f} s after the turns started")
        for name in ("small", "large"):
            engine = seen[name]["engine"]
            assert engine["stale"] is False
            assert engine["age_s"] < 1.0
            assert 0.0 < engine["kv_cache_usage_perc"] <= 1.0, engine
            assert seen[name]["in_flight"] == routes.count(f"only-{name}")
    assert not errors

    def drained() -> bool:
        nonlocal seen
        seen = rig.admin_targets()
        return all(
            (t["engine"]["running"], t["engine"]["waiting"], t["in_flight"]) == (0, 0, 0)
            for t in seen.values()
        )

    _wait_for(lambda: f"admin to show both engines idle (last {seen})", drained, 10.0)
    for name in ("small", "large"):
        # The engine's own mean TTFT between scrapes, from its TTFT histogram.
        recent = seen[name]["engine"]["recent_ttft_ms"]
        assert recent is not None, seen[name]
        assert 0.0 < recent < 60_000.0
        assert seen[name]["engine"]["kv_cache_usage_perc"] == 0.0


def test_client_disconnect_through_the_router_frees_the_engine(
    rig: RouterRig, vllm_engines: VllmEngines, vllm_report: list[str]
) -> None:
    engine = vllm_engines.large
    _idle(vllm_engines)
    with (
        httpx.Client(timeout=60.0) as client,
        client.stream(
            "POST", f"{rig.base_url}/chat/completions", json=_body("only-large", LONG_TOKENS)
        ) as response,
    ):
        response.raise_for_status()
        assert response.headers["x-firsttoken-target"] == "large"
        deltas = _content_deltas(response)  # keep it: a collected generator closes the stream
        next(deltas)
        _wait_engine(engine, 1, 0, timeout_s=10.0)
        closed_at = time.monotonic()
        # Leaving the block closes the client's connection to the router.
    took = _wait_engine(engine, 0, 0, timeout_s=5.0)
    vllm_report.append(
        f"disconnect through the router -> engine num_requests_running 0 after {took * 1000:.0f} ms"
    )
    assert took < 1.0, f"num_requests_running fell {took:.3f} s after the disconnect"
    assert time.monotonic() - closed_at < 1.5
    _wait_for(
        "the router to release the turn",
        lambda: rig.admin_targets()["large"]["in_flight"] == 0,
        5.0,
    )


# -- load-aware routing against round robin -------------------------------------------------


@dataclass(frozen=True)
class TurnSample:
    target: str
    ttft_s: float
    e2e_s: float
    #: the router's reason (`x-firsttoken-reason`: the plan's verdict and predictions)
    reason: str
    index: int


async def _one_turn(
    client: httpx.AsyncClient, route: str, index: int, *, delay: bool = True
) -> TurnSample:
    if delay:
        await asyncio.sleep(index * BURST_SPACING_S)
    # Each turn opens its own conversation: identical messages would share one session key,
    # and session affinity would then send the whole burst to one engine.
    body = _body(route, BURST_TOKENS, f"Caller {index} says hello.")
    began = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/chat/completions", json=body) as r:
        r.raise_for_status()
        target = r.headers["x-firsttoken-target"]
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {"):
                chunk = json.loads(line[len("data: ") :])
                if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter()
    assert first is not None, "a turn without content"
    reason = r.headers.get("x-firsttoken-reason", "")
    return TurnSample(target, first - began, time.perf_counter() - began, reason, index)


async def _warm_and_burst(base_url: str) -> list[TurnSample]:
    """``warm_up``, then the burst on route ``chat``."""
    limits = httpx.Limits(max_connections=BURST_TURNS + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as client:
        await warm_up(client)
        return await asyncio.gather(*(_one_turn(client, "chat", i) for i in range(BURST_TURNS)))


async def warm_up(client: httpx.AsyncClient) -> list[TurnSample]:
    """WARM_UP_ROUNDS of one turn per engine (in parallel, on the pinned routes, as long as
    the burst's, so the router has measured each engine's unloaded TTFT, time per token and
    answer length); their samples, small's first in each round."""
    turns: list[TurnSample] = []
    for _ in range(WARM_UP_ROUNDS):
        turns.extend(
            await asyncio.gather(
                _one_turn(client, "only-small", 0, delay=False),
                _one_turn(client, "only-large", 1, delay=False),
            )
        )
    return turns


@dataclass(frozen=True)
class BurstResult:
    policy: str
    samples: list[TurnSample]

    def share(self, target: str) -> int:
        return sum(1 for s in self.samples if s.target == target)

    @property
    def ttft_p50(self) -> float:
        return _quantile([s.ttft_s for s in self.samples], 0.5)

    @property
    def ttft_p90(self) -> float:
        return _quantile([s.ttft_s for s in self.samples], 0.9)

    def line(self) -> str:
        return (
            f"{self.policy}: small {self.share('small')} / large {self.share('large')} turns,"
            f" TTFT p50 {self.ttft_p50 * 1000:.0f} ms, p90 {self.ttft_p90 * 1000:.0f} ms,"
            f" max {max(s.ttft_s for s in self.samples) * 1000:.0f} ms"
        )


def run_burst(engines: VllmEngines, policy: str, report: list[str]) -> BurstResult:
    """A fresh router with ``policy`` on route ``chat`` (small listed first), warmed up,
    then the burst."""
    _idle(engines)
    config = router_config(
        {"small": engines.small, "large": engines.large},
        policy=policy,
        # No cooldown for a stream that slows mid-answer: on a loaded 2-core box the API
        # servers sometimes stall for a second, which would take an engine out of either run.
        extra_signals="  degraded_cooldown_s: 0",
    )
    with running_router(config, report) as rig:
        samples = asyncio.run(_warm_and_burst(rig.base_url))
    return BurstResult(policy, samples)


def test_load_aware_policy_beats_round_robin_on_a_burst(
    vllm_engines: VllmEngines, vllm_report: list[str]
) -> None:
    """``latency`` reads the engines' queues: once ``small``'s two slots are full it shows
    waiting requests and the turns go to ``large``. Round robin halves the burst and queues
    on ``small``. The two alternate for BURST_PAIRS rounds on idle engines, each on a fresh
    router, and their samples are pooled, so a spell of load from elsewhere on the machine
    hits both policies alike."""
    rr = BurstResult("round_robin", [])
    aware = BurstResult("latency", [])
    for _ in range(BURST_PAIRS):
        for pooled in (rr, aware):
            result = run_burst(vllm_engines, pooled.policy, vllm_report)
            vllm_report.append(f"  {result.line()}")
            if pooled is aware:
                # each turn's target, TTFT and the plan's reason: what a missed run is read by
                vllm_report.extend(
                    f"    turn {t.index:2d} {t.target:5s} {t.ttft_s * 1000:5.0f} ms: {t.reason}"
                    for t in sorted(result.samples, key=lambda t: t.index)
                )
            pooled.samples.extend(result.samples)
    ratio = aware.ttft_p90 / rr.ttft_p90
    vllm_report.extend(
        [rr.line(), aware.line(), f"burst TTFT p90 latency / round_robin = {ratio:.2f}"]
    )
    assert len(rr.samples) == len(aware.samples) == BURST_PAIRS * BURST_TURNS
    assert abs(rr.share("small") - rr.share("large")) <= BURST_PAIRS  # round robin: half each
    assert aware.share("large") > rr.share("large")
    assert aware.ttft_p90 < P90_MARGIN * rr.ttft_p90, (rr.line(), aware.line())


# -- a killed engine ------------------------------------------------------------------------


@pytest.fixture
def doomed_engine(
    vllm_engines: VllmEngines, tmp_path_factory: pytest.TempPathFactory, vllm_report: list[str]
) -> Iterator[Engine]:
    """A third engine (``--max-num-seqs 2``) on the session's model, for a test to kill."""
    root = tmp_path_factory.mktemp("vllm-doomed")
    began = time.monotonic()
    engine = start_engine(engine_python(), vllm_engines.model_dir, EngineSpec("doomed", 2), root)
    try:
        wait_healthy([engine])
        vllm_report.append(f"doomed engine healthy in {time.monotonic() - began:.1f} s")
        yield engine
    finally:
        stop_engine(engine)


def test_a_killed_engine_opens_its_breaker_and_turns_fail_over(
    vllm_engines: VllmEngines, doomed_engine: Engine, vllm_report: list[str]
) -> None:
    """Route ``chat`` is ``ordered`` [doomed, large]. A turn queued on ``doomed`` when it is
    SIGKILLed (before its first token) comes back whole from ``large``; the next turns fail
    over too until the breaker opens, and none of them shows the client an error."""
    _idle(vllm_engines)
    config = router_config(
        {"doomed": doomed_engine, "large": vllm_engines.large},
        policy="ordered",
        # Open after 3 failures and stay open while the test looks.
        extra_signals="  breaker_failures: 3\n  breaker_base_s: 60\n  breaker_max_s: 60",
    )
    stop = threading.Event()
    with running_router(config) as rig, ExitStack() as cleanup:
        with httpx.stream(
            "POST", f"{rig.base_url}/chat/completions", json=_body("chat", 8), timeout=60.0
        ) as response:
            response.raise_for_status()
            assert response.headers["x-firsttoken-target"] == "doomed"
            assert list(_content_deltas(response))

        # Fill doomed's two slots directly, so the routed turn waits in its queue.
        def hold(index: int) -> None:
            with (
                contextlib.suppress(httpx.HTTPError),  # they die with the engine
                httpx.stream(
                    "POST",
                    f"{doomed_engine.openai_base_url}/chat/completions",
                    json=_body("tiny-llama", LONG_TOKENS, f"Hold {index}."),
                    timeout=60.0,
                ) as held,
            ):
                for _ in held.iter_lines():
                    if stop.is_set():
                        return

        holders = [threading.Thread(target=hold, args=(i,), daemon=True) for i in range(2)]
        for thread in holders:
            cleanup.callback(thread.join, 30.0)
        cleanup.callback(stop.set)
        for thread in holders:
            thread.start()
        _wait_engine(doomed_engine, 2, 0, timeout_s=15.0)

        outcome: dict[str, object] = {}

        def routed_turn() -> None:
            began = time.monotonic()
            try:
                with httpx.stream(
                    "POST",
                    f"{rig.base_url}/chat/completions",
                    json=_body("chat", 16),
                    timeout=60.0,
                ) as routed:
                    outcome["status"] = routed.status_code
                    outcome["target"] = routed.headers.get("x-firsttoken-target")
                    outcome["content"] = "".join(_content_deltas(routed))
            except BaseException as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - began

        turn = threading.Thread(target=routed_turn, daemon=True)
        turn.start()
        cleanup.callback(turn.join, 30.0)
        try:
            _wait_engine(doomed_engine, 2, 1, timeout_s=15.0)  # the routed turn waits, no token yet
        except AssertionError as exc:
            turn.join(5.0)  # what became of it says why it never waited there
            raise AssertionError(
                f"{exc}; the routed turn: {outcome};"
                f" the router's doomed: {rig.admin_targets()['doomed']}"
            ) from exc
        os.killpg(doomed_engine.pid, signal.SIGKILL)  # the server and its engine processes
        killed_at = time.monotonic()
        turn.join(30.0)
        assert "error" not in outcome, outcome
        assert outcome["status"] == 200
        assert outcome["target"] == "large"
        assert outcome["content"]
        recovered = time.monotonic() - killed_at

        # More turns: each still tries doomed first until the breaker opens, then skips it.
        targets: list[str] = []
        for _ in range(4):
            with httpx.stream(
                "POST", f"{rig.base_url}/chat/completions", json=_body("chat", 8), timeout=60.0
            ) as response:
                assert response.status_code == 200
                targets.append(response.headers["x-firsttoken-target"])
                assert list(_content_deltas(response))
        assert targets == ["large"] * 4
        view = rig.admin_targets()
        assert view["doomed"]["breaker"] == "open", view["doomed"]
        assert view["doomed"]["available"] is False
        opened = time.monotonic() - killed_at
        # The scraper sees it too: no good scrape since the kill, so the stats go stale.
        stale = _wait_for(
            "doomed's engine stats to go stale",
            lambda: rig.admin_targets()["doomed"]["engine"]["stale"] is True,
            5.0,
        )
        vllm_report.append(
            f"kill: queued turn answered by large {recovered * 1000:.0f} ms after SIGKILL;"
            f" breaker open after {opened:.2f} s; engine stats stale"
            f" {opened + stale:.1f} s after the kill"
        )
