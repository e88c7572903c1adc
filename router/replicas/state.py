"""`SharedState`: what the app wires in when the policy has a `state:` block.

    router = Router(config)              # builds SharedState(config.state)
    shared.attach(runtime.signals)       # after every compile (start and reload)
    tg.start_soon(shared.run)            # heartbeat, listener, publisher, flusher
    plan = await shared.admit(plan, prompt_tokens, client)   # once per turn
    await shared.aclose()

The heartbeat (every `HEARTBEAT_S`) is a sorted set of live replicas, so each
replica knows how many share a global limit; while Redis is down, every
target's local rpm/tpm is scaled to `1 / replicas` of the configured (global)
one, which is the local estimate of the global count.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping

import anyio
from redis.asyncio import Redis

from router.clock import Clock
from router.config import StateConfig
from router.policy.base import Plan
from router.replicas.cooldowns import SharedCooldowns
from router.replicas.counters import GlobalCounters
from router.replicas.limits import ClientQuota, SharedLimits
from router.replicas.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link, connect, redacted
from router.replicas.owners import SharedOwners
from router.signals.target import TargetSignals

log = logging.getLogger("firsttoken.shared")

HEARTBEAT_S = 0.5
#: a replica that has not beaten for this long no longer counts
REPLICA_TTL_S = 3.0
#: the heartbeat must come back this much faster than a background call's timeout
#: for the link to count as up (a Redis this slow would time out every turn's check)
UP_RTT_FACTOR = 10.0
#: pooled connections opened when Redis (re)appears, so the first turns find them
WARM_CONNECTIONS = 8

#: KEYS[1] the replicas sorted set; ARGV: this replica, now ms, ttl ms. Returns how
#: many replicas are alive.
HEARTBEAT_LUA = """
local now = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return redis.call('ZCARD', KEYS[1])
"""


class SharedState:
    """Cooldowns and global limits shared by the replicas of one router through Redis."""

    def __init__(
        self,
        config: StateConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        replica: str | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.config = config
        self.replica = replica or uuid.uuid4().hex[:12]
        self._clock = clock
        self._wall = wall_clock
        self._redis = redis if redis is not None else connect(config)
        self.keys = Keys(config.key_prefix)
        self.link = Link(redacted(config.redis_url), on_change=self._link_changed, clock=clock)
        self.replicas = 1
        counters = GlobalCounters(
            self._redis,
            self.keys,
            self.link,
            timeout_s=config.timeout_ms / 1000.0,
            wall_clock=wall_clock,
            clock=clock,
        )
        self.limits = SharedLimits(counters, self.link, clock=clock)
        self.cooldowns = SharedCooldowns(
            self._redis, self.keys, self.link, replica=self.replica, clock=clock
        )
        #: which target stored each response id (the Responses API's state)
        self.owners = SharedOwners(
            self._redis, self.keys, self.link, timeout_s=config.timeout_ms / 1000.0
        )
        self._heartbeat = self._redis.register_script(HEARTBEAT_LUA)
        self._targets: Mapping[str, TargetSignals] = {}

    @property
    def up(self) -> bool:
        return self.link.up

    def attach(self, targets: Mapping[str, TargetSignals]) -> None:
        """Hook every target's breaker and local limits (after start and each reload)."""
        self._targets = targets
        self.cooldowns.attach(targets)
        self.limits.attach(targets)
        self._apply_share()

    async def admit(
        self, plan: Plan, prompt_tokens: int, client: ClientQuota | None = None
    ) -> Plan:
        """One turn's global limits: see `SharedLimits.admit`."""
        return await self.limits.admit(plan, prompt_tokens, client)

    async def run(self) -> None:
        """The background tasks; runs until cancelled, never raises for Redis."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat_loop)
            tg.start_soon(self.cooldowns.listen_loop)
            tg.start_soon(self.cooldowns.publish_loop)
            tg.start_soon(self.limits.counters.flush_loop)
            tg.start_soon(self.owners.flush_loop)

    async def beat(self) -> bool:
        """One heartbeat: registers this replica and learns how many are alive."""
        started = self._clock()
        try:
            with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                count = await self._heartbeat(
                    keys=[self.keys.replicas],
                    args=[self.replica, int(self._wall() * 1000), int(REPLICA_TTL_S * 1000)],
                )
        except REDIS_ERRORS as exc:
            self.link.lost(exc)
            return False
        self.replicas = self.limits.replicas = max(int(count), 1)
        if not self.link.up:
            # Not back while it is this slow: every turn's check would time out.
            # (While up, slowness is the per-turn timeouts' to notice.)
            rtt = self._clock() - started
            if rtt > UP_RTT_FACTOR * self.config.timeout_ms / 1000.0:
                return False
            try:
                with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                    await self.limits.counters.warm(WARM_CONNECTIONS)
            except REDIS_ERRORS as exc:
                self.link.lost(exc)
                return False
            self.link.came_up()
        self._apply_share()
        return True

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.beat()
            await anyio.sleep(HEARTBEAT_S)

    def _link_changed(self, up: bool) -> None:
        self._apply_share()
        self.limits.counters.forget()
        if up:
            # Resync both ways: send what opened here meanwhile, flush what was
            # counted here, and re-read the others' cooldowns.
            self.cooldowns.kick()
            self.limits.counters.kick()
            self.owners.kick()

    def _apply_share(self) -> None:
        share = 1.0 if self.link.up else 1.0 / max(self.replicas, 1)
        for signals in self._targets.values():
            signals.local_limits.share = share

    async def aclose(self) -> None:
        self.limits.counters.cancel_late()
        with anyio.CancelScope(shield=True):
            await self._redis.aclose()
