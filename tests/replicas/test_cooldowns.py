"""Breaker openings and Retry-After cooldowns reach every replica, and survive restarts."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from router.errors import UpstreamConnectError, UpstreamStatusError
from router.replicas import SharedStateCollector
from tests.replicas.helpers import registry, running, state_config, wait_until
from tests.replicas.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def rate_limited(retry_after: str) -> UpstreamStatusError:
    return UpstreamStatusError(
        "429", upstream_status=429, headers={"retry-after": retry_after}, target="a"
    )


async def test_a_retry_after_seen_by_one_replica_keeps_the_others_off_within_a_second(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    one_targets, two_targets = registry(), registry()
    async with running(config, one_targets), running(config, two_targets) as two:
        attempt = one_targets["a"].begin(10)
        attempt.failed(rate_limited("30"))
        attempt.release()
        assert await wait_until(lambda: not two_targets["a"].view().available, within=1.0)
        seen = two_targets["a"].view()
        assert seen.breaker == "open"
        assert seen.ratelimit_headroom == 0.0  # a Retry-After, not just a breaker
        assert 29.0 < two_targets["a"].breaker.open_remaining_s() <= 30.0
        assert two_targets["b"].view().available
        assert two.cooldowns.applied == 1
        # A replica that starts now reads the cooldown still running.
        three_targets = registry()
        async with running(config, three_targets):
            assert await wait_until(lambda: not three_targets["a"].view().available)
            assert 28.0 < three_targets["a"].breaker.open_remaining_s() <= 30.0


async def test_a_breaker_trip_is_shared_and_a_shorter_cooldown_never_cuts_a_longer(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    one_targets, two_targets = registry(), registry()
    async with running(config, one_targets), running(config, two_targets):
        for _ in range(3):  # breaker_failures: 3 (the default)
            attempt = one_targets["b"].begin(1)
            attempt.failed(UpstreamConnectError("refused", target="b"))
            attempt.release()
        assert one_targets["b"].breaker.state == "open"
        assert await wait_until(lambda: two_targets["b"].breaker.state == "open", within=1.0)
        # A 5 s Retry-After, then a 1 s one: the 5 s one stands everywhere.
        for retry_after in ("5", "1"):
            attempt = two_targets["a"].begin(1)
            attempt.failed(rate_limited(retry_after))
            attempt.release()
        assert await wait_until(lambda: one_targets["a"].breaker.state == "open", within=1.0)
        await anyio.sleep(0.2)
        assert one_targets["a"].breaker.open_remaining_s() > 4.0


async def test_cooldowns_from_an_outage_are_sent_when_redis_returns(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(own_redis_server.url, key_prefix)
    one_targets, two_targets = registry(), registry()
    async with running(config, one_targets) as one, running(config, two_targets) as two:
        own_redis_server.stop()
        assert await wait_until(lambda: not one.up and not two.up)
        attempt = one_targets["a"].begin(1)
        attempt.failed(rate_limited("20"))  # seen while Redis is away
        attempt.release()
        metrics = CollectorRegistry()
        metrics.register(SharedStateCollector(one))
        text = generate_latest(metrics).decode()
        assert "firsttoken_shared_state_up 0.0" in text
        assert 'firsttoken_shared_state_fallbacks_total{op="publish"}' in text
        own_redis_server.start()  # empty: no persistence
        assert await wait_until(lambda: one.up and two.up, within=5)
        assert await wait_until(lambda: not two_targets["a"].view().available, within=2)
        assert "firsttoken_shared_state_up 1.0" in generate_latest(metrics).decode()
