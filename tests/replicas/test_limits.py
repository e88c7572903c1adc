"""Global rpm/tpm over a real Redis: atomic across replicas, netted, fail-open."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis

from router.errors import ClientRateLimited, NoTargetAvailable
from router.policy.base import Plan
from router.replicas import ClientQuota, SharedState
from router.replicas.limits import OVER_GLOBAL
from router.replicas.script import SYNC_LUA
from tests.replicas.helpers import (
    CountingRedis,
    counting_client,
    plan,
    registry,
    running,
    state_config,
    wait_until,
)
from tests.replicas.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

#: 10 s into a minute, so a test never straddles a window boundary
MINUTE_START = 60.0 * 28_600_000 + 10.0


def fixed_wall(at: float = MINUTE_START) -> list[float]:
    return [at]


async def test_an_rpm_limit_holds_exactly_across_replicas_under_concurrency(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    served: dict[str, list[str]] = {"one": [], "two": []}
    async with (
        running(config, registry(), wall_clock=lambda: wall[0]) as one,
        running(config, registry(), wall_clock=lambda: wall[0]) as two,
    ):

        async def turn(state: SharedState, who: str) -> None:
            admitted = await state.admit(plan("a", "c"), 10)
            served[who].append(admitted.candidates[0].name)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(turn, one, "one")
                tg.start_soon(turn, two, "two")
    to_a = served["one"].count("a") + served["two"].count("a")
    assert to_a == 5  # rpm: 5, whatever the interleaving
    assert len(served["one"]) + len(served["two"]) == 40  # the rest spilled to c


async def test_over_limit_candidates_leave_the_plan_with_a_reason(
    redis_server: RedisServer, key_prefix: str
) -> None:
    wall = fixed_wall()
    async with running(
        state_config(redis_server.url, key_prefix), registry(), wall_clock=lambda: wall[0]
    ) as state:
        for _ in range(5):
            assert (await state.admit(plan("a", "b"), 10)).order == ("a", "b")
        admitted = await state.admit(plan("a", "b"), 10)
        assert admitted.order == ("b",)
        assert ("a", OVER_GLOBAL) in admitted.rejected
        # b has tpm 1000: a request may start while any budget is left
        assert (await state.admit(plan("b"), 995)).order == ("b",)
        with pytest.raises(NoTargetAvailable):
            await state.admit(plan("a", "b"), 10)


async def test_the_previous_minute_counts_with_a_sliding_weight(
    redis_server: RedisServer, key_prefix: str
) -> None:
    wall = fixed_wall(MINUTE_START + 45.0)  # 55 s into the minute
    async with running(
        state_config(redis_server.url, key_prefix), registry(), wall_clock=lambda: wall[0]
    ) as state:
        for _ in range(5):
            assert (await state.admit(plan("a", "c"), 1)).order[0] == "a"
        wall[0] += 20.0  # 15 s into the next minute: 5 * 45/60 = 3.75 still count
        assert (await state.admit(plan("a", "c"), 1)).order[0] == "a"  # 4.75 <= 5
        assert (await state.admit(plan("a", "c"), 1)).order[0] == "c"
        wall[0] += 30.0  # 45 s in: 5 * 15/60 + 1 = 2.25
        for _ in range(2):
            assert (await state.admit(plan("a", "c"), 1)).order[0] == "a"
        assert (await state.admit(plan("a", "c"), 1)).order[0] == "c"


async def test_a_client_key_limit_is_global(redis_server: RedisServer, key_prefix: str) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    quota = ClientQuota("team-a", rpm=3, tpm=None)
    async with (
        running(config, registry(), wall_clock=lambda: wall[0]) as one,
        running(config, registry(), wall_clock=lambda: wall[0]) as two,
    ):
        await one.admit(plan("c"), 1, quota)
        await two.admit(plan("c"), 1, quota)
        await one.admit(plan("c"), 1, quota)
        with pytest.raises(ClientRateLimited):
            await two.admit(plan("c"), 1, quota)
        await two.admit(plan("c"), 1, ClientQuota("team-b", rpm=3, tpm=None))


async def test_what_is_recorded_locally_reaches_redis_once(
    redis_server: RedisServer, key_prefix: str
) -> None:
    wall = fixed_wall()
    targets = registry()
    async with running(
        state_config(redis_server.url, key_prefix), targets, wall_clock=lambda: wall[0]
    ) as state:
        await state.admit(plan("b"), 100)  # charged in Redis: 1 request, 100 tokens
        attempt = targets["b"].begin(100)  # the same attempt, recorded locally: netted
        attempt.finished(prompt_tokens=100, completion_tokens=50)  # +50 flushed later
        attempt.release()
        hedge = targets["b"].begin(100)  # an attempt admit never saw: flushed later
        hedge.cancelled()
        hedge.release()
        minute = int(wall[0] // 60)
        key = state.keys.window("t", "b", minute)
        client = Redis.from_url(redis_server.url)
        try:

            async def counted() -> dict[bytes | str, bytes | str]:
                return await client.hgetall(key)

            expected = {b"r": b"2", b"t": b"250"}
            for _ in range(100):  # flushed in the background, every 50 ms
                if await counted() == expected:
                    break
                await anyio.sleep(0.02)
            assert await counted() == expected
        finally:
            await client.aclose()


async def test_unlimited_first_choices_cost_no_round_trip(
    redis_server: RedisServer, key_prefix: str
) -> None:
    async with running(state_config(redis_server.url, key_prefix), registry()) as state:
        redis_server.pause()
        try:
            took = []
            for _ in range(100):
                started = time.perf_counter()
                assert (await state.admit(plan("c", "a"), 10)).order == ("c", "a")
                took.append(time.perf_counter() - started)
            # A round trip to the paused Redis would cost each admit its 500 ms timeout;
            # the median, not the sum, so a loaded machine's stalls do not count.
            assert statistics.median(took) < 0.05
            assert sum(state.link.fallbacks.values()) == 0
        finally:
            redis_server.resume()


async def test_a_hung_redis_costs_a_turn_at_most_the_timeout_then_nothing(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(own_redis_server.url, key_prefix, timeout_ms=5)
    targets = registry()
    async with running(config, targets) as state:
        own_redis_server.pause()
        try:
            for _ in range(10):
                started = time.perf_counter()
                assert (await state.admit(plan("a", "c"), 10)).order == ("a", "c")
                # 5 ms, plus a loaded CI's jitter; a hung call would hold it for good
                assert time.perf_counter() - started < 0.5
            assert not state.up  # ten timeouts in a row: down, logged once
            took = []
            for _ in range(50):
                started = time.perf_counter()
                await state.admit(plan("a", "c"), 10)
                took.append(time.perf_counter() - started)
            # No Redis call while down: a call would cost each admit its 5 ms timeout
            # (the median, so a loaded machine's stalls do not count).
            assert statistics.median(took) < 0.004
            assert state.link.fallbacks["limit"] == 60
            # Local limits now hold this replica's share of the global one.
            assert targets["a"].local_limits.share == 1.0 / state.replicas
        finally:
            own_redis_server.resume()
        assert await wait_until(lambda: state.up, within=5)
        assert targets["a"].local_limits.share == 1.0


async def test_while_redis_is_down_the_local_limits_are_this_replicas_share(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(own_redis_server.url, key_prefix)
    one_targets, two_targets = registry(), registry()
    async with (
        running(config, one_targets) as one,
        running(config, two_targets),
    ):
        assert await wait_until(lambda: one.replicas == 2)
        own_redis_server.stop()
        assert await wait_until(lambda: not one.up)
        limits = one_targets["a"].local_limits  # rpm 5 over 2 replicas: 2 here
        assert limits.limits() == (2, None)
        for _ in range(2):
            assert limits.within
            limits.record(1)
        assert not limits.within


BIG = """
targets:
  - {name: big, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m, rpm: 100000}
  - {name: a, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m, rpm: 100}
  - {name: c, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
routes:
  - {name: r, targets: [big, a, c]}
"""


async def admit_counting(
    state: SharedState, client: CountingRedis, admitted: Plan, tokens: int = 10
) -> tuple[str, int]:
    """(the target the turn goes to, limit calls sent to Redis while it waited)."""
    before = client.script_calls(SYNC_LUA)
    result = await state.admit(admitted, tokens)
    return result.candidates[0].name, client.script_calls(SYNC_LUA) - before


async def window_count(url: str, key: str) -> dict[bytes | str, bytes | str]:
    client = Redis.from_url(url)
    try:
        counted: dict[bytes | str, bytes | str] = await client.hgetall(key)
        return counted
    finally:
        await client.aclose()


async def test_far_below_the_limit_a_turn_does_not_wait_for_redis(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    targets = registry(BIG)
    client = counting_client(config)
    async with running(config, targets, wall_clock=lambda: wall[0], redis=client) as state:
        # Cold: nothing is known of the counter yet, so Redis decides.
        assert await admit_counting(state, client, plan("big", "c")) == ("big", 1)
        paths = []
        for _ in range(50):
            paths.append(await admit_counting(state, client, plan("big", "c")))
            attempt = targets["big"].begin(10)  # the admitted attempt, recorded locally
            attempt.finished(prompt_tokens=10, completion_tokens=5)
            attempt.release()
            await anyio.lowlevel.checkpoint()  # the flush may run between turns, never within one
        assert paths == [("big", 0)] * 50  # no Redis call while any of these waited
        # The charges reached Redis in the background, in a few batched calls, once.
        key = state.keys.window("t", "big", int(wall[0] // 60))
        expected = {b"r": b"51", b"t": str(51 * 10 + 50 * 5).encode()}
        assert await wait_until_async(lambda: window_count(redis_server.url, key), expected)
        assert client.script_calls(SYNC_LUA) < 51


async def wait_until_async(
    read: Callable[[], Awaitable[object]], expected: object, within: float = 3.0
) -> bool:
    deadline = time.monotonic() + within
    while await read() != expected:
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.02)
    return True


async def test_near_the_limit_admission_switches_to_the_exact_check(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    client = counting_client(config)
    async with running(config, registry(BIG), wall_clock=lambda: wall[0], redis=client) as state:
        paths = []
        for _ in range(130):
            paths.append(await admit_counting(state, client, plan("a", "c")))
            await anyio.lowlevel.checkpoint()
    to_a = [calls for target, calls in paths if target == "a"]
    assert len(to_a) == 100  # rpm 100, exactly
    assert 0 in to_a  # far from the limit, some went without waiting for Redis
    # The last 5 % before the limit was all decided by Redis, atomically.
    assert all(calls >= 1 for calls in to_a[-5:])
    assert [target for target, _ in paths[100:]] == ["c"] * 30


async def test_checks_arriving_in_one_loop_tick_share_one_round_trip(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    client = counting_client(config)
    served: list[str] = []
    async with running(
        config, registry(), wall_clock=lambda: wall[0], redis=client
    ) as state:  # cold: every check must be exact

        async def turn() -> None:
            served.append((await state.admit(plan("a", "c"), 10)).candidates[0].name)

        before = client.script_calls(SYNC_LUA)
        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(turn)
        assert client.script_calls(SYNC_LUA) - before == 1
        key = state.keys.window("t", "a", int(wall[0] // 60))
        assert await window_count(redis_server.url, key) == {b"r": b"5", b"t": b"50"}
    assert sorted(served) == ["a"] * 5 + ["c"] * 7  # rpm 5, checked turn by turn


async def test_two_replicas_mixing_both_paths_stay_within_the_limit(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    wall = fixed_wall()
    rpm = 300
    text = BIG.replace("rpm: 100}", f"rpm: {rpm}}}")
    clients = [counting_client(config), counting_client(config)]
    paths: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
    async with (
        running(config, registry(text), wall_clock=lambda: wall[0], redis=clients[0]) as one,
        running(config, registry(text), wall_clock=lambda: wall[0], redis=clients[1]) as two,
    ):
        assert await wait_until(lambda: one.replicas == two.replicas == 2)

        async def turn(i: int, state: SharedState) -> None:
            paths[i].append(await admit_counting(state, clients[i], plan("a", "c")))

        for _ in range(30):  # waves of 8 concurrent turns on each replica
            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(turn, 0, one)
                    tg.start_soon(turn, 1, two)
            await anyio.sleep(0.01)
        key = one.keys.window("t", "a", int(wall[0] // 60))
        to_a = sum(1 for i in (0, 1) for target, _ in paths[i] if target == "a")
        expected = {b"r": str(to_a).encode(), b"t": str(10 * to_a).encode()}
        assert await wait_until_async(lambda: window_count(redis_server.url, key), expected)
    assert rpm <= to_a <= rpm * 1.05, to_a
    for i in (0, 1):  # each replica admitted some turns on its own view, some exactly
        calls = [n for target, n in paths[i] if target == "a"]
        assert 0 in calls
        assert any(n >= 1 for n in calls)


async def test_charges_made_during_an_outage_reach_redis_when_it_returns(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(own_redis_server.url, key_prefix)
    wall = fixed_wall()
    targets = registry(BIG)
    client = counting_client(config)
    async with running(config, targets, wall_clock=lambda: wall[0], redis=client) as state:
        key = state.keys.window("t", "big", int(wall[0] // 60))
        assert (await admit_counting(state, client, plan("big")))[1] == 1  # cold: Redis
        targets["big"].begin(10).release()  # each admitted attempt, as the router records it
        assert await admit_counting(state, client, plan("big")) == ("big", 0)  # its view
        targets["big"].begin(10).release()
        expected = {b"r": b"2", b"t": b"20"}
        assert await wait_until_async(lambda: window_count(own_redis_server.url, key), expected)
        own_redis_server.stop()
        assert await wait_until(lambda: not state.up)
        assert await admit_counting(state, client, plan("big")) == ("big", 0)  # fail open
        for _ in range(3):  # that turn's attempt and two hedges, recorded locally
            targets["big"].begin(10).release()
        own_redis_server.start()  # empty, as after a crash
        assert await wait_until(lambda: state.up, within=5)
        expected = {b"r": b"3", b"t": b"30"}
        assert await wait_until_async(lambda: window_count(own_redis_server.url, key), expected)
        # Counting goes on from what the new Redis holds, each turn once.
        assert (await admit_counting(state, client, plan("big")))[0] == "big"
        targets["big"].begin(10).release()
        expected = {b"r": b"4", b"t": b"40"}
        assert await wait_until_async(lambda: window_count(own_redis_server.url, key), expected)
