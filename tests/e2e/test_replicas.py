"""Two router replicas sharing one real Redis: cooldowns, global limits, and outages.

Each replica is a full router (its own uvicorn server on the harness loop) in front
of the same simulated targets, as two pods behind one Service would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from router.sim.behaviour import Behaviour, Fault
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import LoopThread, RunningRouter, start_router, stop_router, target_yaml
from tests.replicas.redis_server import RedisServer, key_prefix, own_redis_server, redis_server

__all__ = ["key_prefix", "own_redis_server", "redis_server"]

pytestmark = pytest.mark.redis

QUICK = Behaviour(ttft_s=0.005, itl_s=0.001, tokens=2)
BODY = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Replicas:
    loop: LoopThread
    sims: dict[str, OpenAISim] = field(default_factory=dict)
    routers: list[RunningRouter] = field(default_factory=list)
    config: str = ""

    def add_replica(self) -> RunningRouter:
        running = self.loop.run(start_router(self.config))
        self.routers.append(running)
        return running

    def set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        self.loop.run(self.sims[name].set_behaviour(behaviour))

    def wait_for(self, predicate: object, timeout: float) -> bool:
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.loop.call(predicate):
                return True
            time.sleep(0.01)
        return False


@pytest.fixture
def replicas(loop_thread: LoopThread) -> Iterator[Replicas]:
    made = Replicas(loop_thread)
    yield made

    async def down() -> None:
        for running in made.routers:
            await stop_router(running)
        for sim in made.sims.values():
            await sim.stop()

    loop_thread.run(down())


def start(
    replicas: Replicas,
    redis: RedisServer,
    prefix: str,
    *,
    extra: dict[str, str],
    n: int = 2,
    timeout_ms: int = 100,
) -> list[RunningRouter]:
    async def sims() -> None:
        for name in ("a", "b"):
            sim = OpenAISim(QUICK, model=f"{name}-model")
            await sim.start()
            replicas.sims[name] = sim

    replicas.loop.run(sims())
    targets = "\n".join(
        target_yaml(name, sim.base_url, extra=extra.get(name, ""))
        for name, sim in replicas.sims.items()
    )
    replicas.config = (
        f"state: {{redis_url: '{redis.url}', key_prefix: '{prefix}', timeout_ms: {timeout_ms}}}\n"
        f"targets:\n{targets}\n"
        "routes:\n  - name: chat\n    targets: [a, b]\n    policy: {type: ordered}\n"
        "    exploration: 0.0\n"
    )
    routers = [replicas.add_replica() for _ in range(n)]
    for running in routers:
        shared = running.router.shared
        assert shared is not None
        assert replicas.wait_for(lambda s=shared: s.up, timeout=5)
    return routers


def turn(client: httpx.Client, router: RunningRouter) -> tuple[int, str]:
    """One streamed turn: (status, target that answered)."""
    with client.stream("POST", f"{router.base_url}/chat/completions", json=BODY) as r:
        r.read()
        return r.status_code, r.headers.get("x-firsttoken-target", "")


def scrape(router: RunningRouter) -> str:
    return httpx.get(f"{router.url}/metrics").text


def test_a_429_seen_by_one_replica_keeps_the_other_off_that_target_within_a_second(
    replicas: Replicas, redis_server: RedisServer, key_prefix: str
) -> None:
    one, two = start(replicas, redis_server, key_prefix, extra={})
    replicas.set_behaviour(
        "a", Behaviour(ttft_s=0.005, tokens=2, fault=Fault("rate_limited", retry_after_s=30))
    )
    with httpx.Client(timeout=10) as client:
        assert turn(client, one) == (200, "b")  # a said 429: fell back
        seen = time.monotonic()
        assert replicas.wait_for(
            lambda: not two.router.runtime.signals["a"].view().available, timeout=1.0
        )
        assert time.monotonic() - seen < 1.0
        replicas.set_behaviour("a", QUICK)  # a recovered, but asked everyone for 30 s
        at_a = len(replicas.sims["a"].records)
        assert [turn(client, two) for _ in range(5)] == [(200, "b")] * 5
        # A replica that starts now reads the cooldown at start.
        three = replicas.add_replica()
        assert replicas.wait_for(
            lambda: not three.router.runtime.signals["a"].view().available, timeout=2.0
        )
        assert turn(client, three) == (200, "b")
        assert len(replicas.sims["a"].records) == at_a


def wait_for_room_in_the_minute(seconds: float) -> None:
    """Keep a short burst inside one wall-clock minute (the limit's window)."""
    left = 60.0 - time.time() % 60.0
    if left < seconds:
        time.sleep(left + 0.05)


def test_a_global_rpm_holds_across_replicas_under_concurrent_load(
    replicas: Replicas, redis_server: RedisServer, key_prefix: str
) -> None:
    rpm = 40
    # A check that outlives its timeout falls back to local limits and its late
    # charge stands (conservative): that is not what this test measures, so the
    # bound is generous for a loaded CI machine.
    routers = start(replicas, redis_server, key_prefix, extra={"a": f"rpm: {rpm}"}, timeout_ms=1000)
    wait_for_room_in_the_minute(6.0)
    turns = 120
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(i: int) -> tuple[int, str]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=10)
            clients.append(local.client)
        return turn(local.client, routers[i % 2])

    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(turns)))
    finally:
        for client in clients:
            client.close()
    assert all(status == 200 for status, _ in results)
    for running in routers:
        assert 'firsttoken_shared_state_fallbacks_total{op="limit"} 0.0' in scrape(running)
    to_a = sum(1 for _, target in results if target == "a")
    assert abs(to_a - rpm) <= 0.05 * rpm, to_a
    assert len(replicas.sims["a"].records) == to_a
    # Each replica alone would have let 40 through (80 together).
    assert 0 < sum(1 for i, (_, t) in enumerate(results) if t == "a" and i % 2 == 0) < rpm


def test_redis_dying_mid_traffic_fails_no_turn_and_state_resyncs_when_it_returns(
    replicas: Replicas, own_redis_server: RedisServer, key_prefix: str
) -> None:
    one, two = start(replicas, own_redis_server, key_prefix, extra={"a": "rpm: 100000"})
    results: list[tuple[int, str]] = []
    with httpx.Client(timeout=10) as client:
        for i in range(60):
            if i == 20:
                own_redis_server.stop()
            results.append(turn(client, (one, two)[i % 2]))
        assert results == [(200, "a")] * 60  # no turn failed because of Redis
        assert "firsttoken_shared_state_up 0.0" in scrape(one)
        outage = scrape(two)
        assert "firsttoken_shared_state_up 0.0" in outage
        assert "firsttoken_shared_state_outages_total 1.0" in outage
        assert 'firsttoken_shared_state_fallbacks_total{op="limit"} 0.0' not in outage
        # During the outage replica one is told to back off a for 20 s.
        replicas.set_behaviour(
            "a", Behaviour(ttft_s=0.005, tokens=2, fault=Fault("rate_limited", retry_after_s=20))
        )
        assert turn(client, one) == (200, "b")
        replicas.set_behaviour("a", QUICK)
        assert turn(client, two) == (200, "a")  # two could not hear it
        own_redis_server.start()  # on the same port, empty
        assert replicas.wait_for(
            lambda: one.router.shared.up and two.router.shared.up,  # type: ignore[union-attr]
            timeout=5,
        )
        assert "firsttoken_shared_state_up 1.0" in scrape(two)
        # Resynced: one sent what it saw meanwhile, and two applied it.
        assert replicas.wait_for(
            lambda: not two.router.runtime.signals["a"].view().available, timeout=2.0
        )
        assert turn(client, two) == (200, "b")


def test_a_follow_up_sent_to_another_replica_reaches_the_target_that_stored_it(
    replicas: Replicas, redis_server: RedisServer, key_prefix: str
) -> None:
    one, two = start(replicas, redis_server, key_prefix, extra={})
    replicas.set_behaviour("a", Behaviour(ttft_s=0.005, tokens=2, fault=Fault("status", 503)))
    with httpx.Client(timeout=10) as client:
        first = client.post(f"{one.base_url}/responses", json={"model": "chat", "input": "hi"})
        assert first.headers["x-firsttoken-target"] == "b"  # a failed: b stored it
        replicas.set_behaviour("a", QUICK)  # `ordered` would now choose a
        follow = {"model": "chat", "input": "more", "previous_response_id": first.json()["id"]}
        # The other replica never saw the response: it asks Redis who stored it.
        again = client.post(f"{two.base_url}/responses", json=follow)
    assert again.status_code == 200, again.text
    assert again.headers["x-firsttoken-target"] == "b"
    assert [r.path for r in replicas.sims["a"].records] == ["/v1/responses"]  # the 503 alone
