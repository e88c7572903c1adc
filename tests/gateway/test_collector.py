"""The cyclic GC in the serving process: `server.gc` is applied, the pause trace reports
what a benchmark reads, and refused large bodies leave nothing to the collector."""

from __future__ import annotations

import gc
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.config import GcConfig, parse_config
from router.gateway.collector import SAVEALL_ENV, TRACE_ENV, PauseTrace, garbage_report
from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from router.sim.ports import free_port
from tests.e2e.harness import LoopThread, target_yaml
from tests.e2e.test_serve import Served

TINY = b'{"role":"user","content":"a"},'
JSON = {"content-type": "application/json"}


def big_body(model: str) -> bytes:
    """Just under 4 MiB of tiny messages, as the hostile mix sends."""
    n = (4 * 2**20 - 64) // len(TINY)
    return b'{"messages":[' + TINY * n + TINY[:-1] + b'],"model":"' + model.encode() + b'"}'


def long_messages_body(model: str) -> bytes:
    """Three messages of 1 MiB with the model last: within `max_messages`, so the whole
    body is read and parsed before the unknown model is refused."""
    content = "x" * 2**20
    messages = [{"role": "user", "content": content} for _ in range(3)]
    return json.dumps({"messages": messages, "model": model}).encode()


def read_trace(served: Served, path: Path) -> dict[str, Any]:
    """Signal the router and return the trace line it appends."""
    before = len(path.read_text().splitlines()) if path.exists() else 0
    served.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > before:
            line: dict[str, Any] = json.loads(lines[-1])
            return line
        time.sleep(0.05)
    raise AssertionError("the router wrote no GC trace line")


@pytest.fixture
def failing(loop_thread: LoopThread) -> Iterator[OpenAISim]:
    """A target that answers every turn with a 500."""
    sim = OpenAISim(Behaviour(fault=Fault("status", 500)))
    loop_thread.run(sim.start())
    yield sim
    loop_thread.run(sim.stop())


@pytest.fixture
def serve(tmp_path: Path, failing: OpenAISim) -> Iterator[Any]:
    started: list[Served] = []

    def start(server_yaml: str, saveall: bool = False) -> tuple[Served, Path]:
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            f"{server_yaml}\ntargets:\n"
            + target_yaml("a", failing.base_url)
            + "\n"
            + target_yaml("b", failing.base_url)
            + "\n"
            # nothing listens there: every connect is refused
            + target_yaml("down", f"http://127.0.0.1:{free_port()}/v1")
            + "\nroutes:\n  - name: chat\n    targets: [a, b]\n"
            + "    hedge: {after_ms: 1, max_extra: 1}\n"
            + "  - name: down\n    targets: [down]\n"
        )
        trace = tmp_path / "gc.jsonl"
        env = {TRACE_ENV: str(trace), SAVEALL_ENV: "1" if saveall else ""}
        served = Served(policy, free_port(), env=env)
        started.append(served)
        served.wait_ready()
        return served, trace

    yield start
    for served in started:
        served.stop()


def test_the_gc_thresholds_of_the_policy_are_the_serving_process_own(serve: Any) -> None:
    served, trace = serve("server: {gc: {young: 12345, middle: 7, old: 3}}")
    line = read_trace(served, trace)
    assert line["thresholds"] == [12345, 7, 3]
    assert line["frozen"] > 0  # start-up's objects are out of the collector's scans


def test_refused_large_bodies_and_failed_turns_leave_nothing_to_the_cyclic_collector(
    serve: Any,
) -> None:
    """Under the default thresholds a young collection can be tens of thousands of
    allocations away: a 4 MiB body kept by a reference cycle (an error raised from a
    local: error -> traceback -> frame -> body) would wait that long, and the hostile
    mix grew the router to 1.45 GiB that way. With `gc.DEBUG_SAVEALL` the trace keeps
    and reports everything the collector finds."""
    served, trace = serve("server: {limits: {max_messages: 10}}", saveall=True)
    read_trace(served, trace)  # what start-up left does not count
    url = f"{served.url}/v1/chat/completions"
    statuses = []
    # Too many messages (refused while the body arrives) and an unknown model found
    # only after the whole body was read and parsed.
    for body in (big_body, long_messages_body, big_body, long_messages_body):
        model = "chat" if body is big_body else "nope"
        statuses.append(httpx.post(url, content=body(model), headers=JSON).status_code)
    # A valid body of 512 KiB whose hedged turn fails upstream (the relay's error path).
    chat = {
        "model": "chat",
        "messages": [{"role": "user", "content": "x" * 2**19}],
        "stream": True,
    }
    for _ in range(2):
        statuses.append(httpx.post(url, json=chat, timeout=30).status_code)
    # A target that refuses the connection (aiohttp's connector raises a local of its
    # own frame: a cycle through our `post`, whose locals hold the body).
    for _ in range(2):
        statuses.append(httpx.post(url, json={**chat, "model": "down"}, timeout=30).status_code)
    assert statuses == [400, 404, 400, 404, 502, 502, 502, 502]
    line = read_trace(served, trace)
    defaults = GcConfig()
    assert line["thresholds"] == [defaults.young, defaults.middle, defaults.old]
    garbage = line["garbage"]
    assert garbage["big_bytes"] == 0, garbage
    assert garbage["frames"] == {}, garbage


def test_the_trace_times_each_generation_and_starts_afresh_after_a_summary(
    tmp_path: Path,
) -> None:
    ticks = iter(range(0, 10**12, 1_000_000))  # each reading 1 ms after the last
    trace = PauseTrace(tmp_path / "gc.jsonl", clock=lambda: next(ticks), cpu_clock=lambda: 0)
    trace.install()
    try:
        gc.collect(0)
        gc.collect(2)
        trace.dump()
        trace.dump()
    finally:
        trace.uninstall()
    first, second = (json.loads(line) for line in (tmp_path / "gc.jsonl").read_text().splitlines())
    gens = first["generations"]
    assert (gens["0"]["count"], gens["1"]["count"], gens["2"]["count"]) == (1, 0, 1)
    assert gens["2"]["wall"]["max_ms"] == 1.0 and gens["2"]["cpu"]["max_ms"] == 0.0
    assert [second["generations"][g]["count"] for g in "012"] == [0, 0, 0]
    assert gc.callbacks.count(trace._on_gc) == 0


def test_the_garbage_report_counts_the_large_buffers_a_cycle_held() -> None:
    class Holder:
        pass

    a, b = Holder(), Holder()
    a.peer, b.peer = b, a  # type: ignore[attr-defined]
    a.body = bytes(1 << 20)  # type: ignore[attr-defined]
    found = garbage_report([a, b, a.__dict__, b.__dict__])
    assert found["big_buffers"] == 1 and found["big_bytes"] >= 1 << 20
    assert found["types"] == {"Holder": 2, "dict": 2}


def test_server_gc_is_validated() -> None:
    base = (
        "targets:\n"
        + target_yaml("a", "http://127.0.0.1:9/v1")
        + "\nroutes:\n  - name: chat\n    targets: [a]\n"
    )
    with pytest.raises(Exception, match="young"):
        parse_config("server: {gc: {young: 0}}\n" + base)
    assert parse_config(base).server.gc == GcConfig()
