"""SharedState instances over real Redis, without a router around them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router.config import StateConfig, parse_config
from router.policy.base import Candidate, Plan
from router.replicas import SharedState
from router.replicas.link import BACKGROUND_TIMEOUT_S
from router.signals.registry import SignalsRegistry

CONFIG = """
targets:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m, rpm: 5}
  - {name: b, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m, tpm: 1000}
  - {name: c, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
routes:
  - {name: r, targets: [a, b, c]}
"""


def registry(text: str = CONFIG) -> SignalsRegistry:
    return SignalsRegistry(parse_config(text), time.monotonic)


def plan(*names: str) -> Plan:
    return Plan(tuple(Candidate(n, 0.1, 0.0, 1.0) for n in names), reason="ordered")


def state_config(url: str, prefix: str, **over: Any) -> StateConfig:
    """A generous per-turn timeout unless a test says otherwise: tests check what is
    counted, not how fast (a loaded CI machine may hold a call for over 5 ms)."""
    data = {"redis_url": url, "key_prefix": prefix, "timeout_ms": 500, **over}
    return StateConfig.model_validate(data)


async def wait_until(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll `predicate` (state that other tasks change) until true or `within` s pass."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await anyio.sleep(0.01)
    return True


@asynccontextmanager
async def running(
    config: StateConfig, targets: SignalsRegistry, **kwargs: Any
) -> AsyncIterator[SharedState]:
    """A SharedState attached to `targets`, its background tasks running and up."""
    state = SharedState(config, **kwargs)
    state.attach(targets)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(state.run)
            assert await wait_until(lambda: state.up), "shared state never came up"
            # Coming up kicks the counters' flush (nothing to send yet); let it run now,
            # or it runs inside the test's first admission and counts as one more call
            # to Redis there (CI saw `assert 2 == 1` in test_limits once).
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            yield state
            tg.cancel_scope.cancel()
    finally:
        await state.aclose()


class CountingRedis(Redis):
    """redis-py's client, noting every command it sends (name, and a script's sha)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, str]] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        self.sent.append((name, str(args[1]) if name == "EVALSHA" else ""))
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def script_calls(self, script: str) -> int:
        """How many times `script` was run so far (EVALSHA, the way redis-py runs one)."""
        sha = hashlib.sha1(script.encode()).hexdigest()  # Redis names a script so
        return sum(1 for name, arg in self.sent if name == "EVALSHA" and arg == sha)


def counting_client(config: StateConfig) -> CountingRedis:
    """A client set up as `router.replicas.link.connect` sets up its own."""
    client = CountingRedis.from_url(
        config.redis_url,
        socket_timeout=BACKGROUND_TIMEOUT_S,
        socket_connect_timeout=BACKGROUND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    assert isinstance(client, CountingRedis)
    return client
