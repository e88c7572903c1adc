"""Response owners over a real Redis: what one replica relayed, another finds at once;
a lookup Redis cannot answer is a failure, never a guess."""

from __future__ import annotations

import pytest

from router.config import ResponsesConfig
from router.responses.owners import Owner, OwnerLookupFailed, ResponseOwners
from tests.replicas.helpers import registry, running, state_config, wait_until
from tests.replicas.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


async def test_an_owner_remembered_by_one_replica_is_found_by_another_and_forgotten(
    redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(redis_server.url, key_prefix)
    async with running(config, registry()) as one, running(config, registry()) as two:
        mine = ResponseOwners(ResponsesConfig(), lambda: 0.0, one.owners)
        theirs = ResponseOwners(ResponsesConfig(), lambda: 0.0, two.owners)
        mine.remember("response", "resp_1", Owner("a", "chat"))
        assert await wait_until(lambda: not one.owners._queue)  # sent without waiting a tick
        assert await theirs.lookup("response", "resp_1") == Owner("a", "chat")
        assert await theirs.lookup("conversation", "resp_1") is None  # kinds kept apart
        mine.forget("response", "resp_1")
        assert await wait_until(lambda: not one.owners._queue)
        theirs.local.forget("r:resp_1")
        assert await theirs.lookup("response", "resp_1") is None


async def test_the_ttl_is_redis_own(redis_server: RedisServer, key_prefix: str) -> None:
    config = state_config(redis_server.url, key_prefix)
    async with running(config, registry()) as state:
        owners = ResponseOwners(ResponsesConfig(owner_ttl_s=0.05), lambda: 0.0, state.owners)
        owners.remember("response", "resp_2", Owner("b", "chat"))
        assert await wait_until(lambda: not state.owners._queue)
        owners.local.forget("r:resp_2")
        key = state.keys.owner("r:resp_2")
        ttl_ms = await state._redis.pttl(key)
        assert 0 < ttl_ms <= 50


async def test_while_redis_is_away_a_lookup_fails_and_writes_wait_for_it(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    config = state_config(own_redis_server.url, key_prefix)
    async with running(config, registry()) as one, running(config, registry()) as two:
        own_redis_server.stop()
        assert await wait_until(lambda: not one.up and not two.up, within=5)
        mine = ResponseOwners(ResponsesConfig(), lambda: 0.0, one.owners)
        theirs = ResponseOwners(ResponsesConfig(), lambda: 0.0, two.owners)
        mine.remember("response", "resp_3", Owner("a", "chat"))
        assert await mine.lookup("response", "resp_3") == Owner("a", "chat")  # memory
        with pytest.raises(OwnerLookupFailed):
            await theirs.lookup("response", "resp_3")
        assert two.link.fallbacks["owners"] >= 1
        own_redis_server.start()
        assert await wait_until(lambda: one.up and two.up, within=10)
        assert await wait_until(lambda: not one.owners._queue, within=5)
        assert await theirs.lookup("response", "resp_3") == Owner("a", "chat")
