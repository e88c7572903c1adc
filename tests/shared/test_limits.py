"""Global rpm/tpm over a real Redis: atomic across replicas, netted, fail-open."""

from __future__ import annotations

import time

import anyio
import pytest
from redis.asyncio import Redis

from router.errors import ClientRateLimited, NoTargetAvailable
from router.shared import ClientQuota, SharedState
from router.shared.limits import OVER_GLOBAL
from tests.shared.helpers import plan, registry, running, state_config, wait_until
from tests.shared.redis_server import RedisServer

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
            started = time.perf_counter()
            for _ in range(100):
                assert (await state.admit(plan("c", "a"), 10)).order == ("c", "a")
            assert time.perf_counter() - started < 0.05
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
                assert time.perf_counter() - started < 0.1  # 5 ms, plus a loaded CI's jitter
            assert not state.up  # ten timeouts in a row: down, logged once
            started = time.perf_counter()
            for _ in range(50):
                await state.admit(plan("a", "c"), 10)
            assert time.perf_counter() - started < 0.05  # no Redis call while down
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
