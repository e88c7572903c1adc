"""Breaker openings and Retry-After cooldowns, shared by every replica.

A cooldown is stored twice: as a key `cooldown:<target>` whose TTL is the cooldown
(so a replica that starts, or comes back after an outage, reads the ones still
running) and as a message on the `cooldowns` channel (so running replicas apply it
at once). The key only ever grows: a shorter cooldown does not cut a longer one.

A breaker opening calls `opened()` synchronously on the turn's path; it only
notes the cooldown in an outbox, which `publish_loop` sends in the background.
While Redis is away the outbox keeps the latest cooldown per target and sends
what is left of it when Redis returns. Pub/sub delivers at most once, so the
listener re-reads every key each time it (re)subscribes and every `RESYNC_EVERY_S`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
from redis.asyncio import Redis

from router.clock import Clock
from router.replicas.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link
from router.signals.breaker import OpenCause
from router.signals.target import TargetSignals

log = logging.getLogger("firsttoken.shared")

#: cooldowns shorter than this are not worth a round trip
MIN_COOLDOWN_S = 0.05
RESYNC_EVERY_S = 5.0
RETRY_SUBSCRIBE_S = 0.5

#: KEYS[1] the cooldown key; ARGV: ttl ms, value, channel, message. Sets the key
#: only if it would outlive the current one, and publishes only then. Returns 1 if set.
SET_LUA = """
local ttl = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) >= ttl then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

_CAUSES: tuple[OpenCause, ...] = ("retry_after", "breaker")


class SharedCooldowns:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        link: Link,
        *,
        replica: str,
        clock: Clock,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._link = link
        self._replica = replica
        self._clock = clock
        self._set = redis.register_script(SET_LUA)
        self._targets: Mapping[str, TargetSignals] = {}
        #: target -> (until, on `clock`; cause) not yet stored in Redis
        self._outbox: dict[str, tuple[float, OpenCause]] = {}
        self._wake = anyio.Event()
        self._resync_due = False
        #: cooldowns applied from other replicas (for tests and /admin)
        self.applied = 0

    def attach(self, targets: Mapping[str, TargetSignals]) -> None:
        """Publish every breaker opening (call again after each reload)."""
        self._targets = targets
        for name, signals in targets.items():
            signals.breaker.on_open = self._opener(name)

    # -- outgoing ------------------------------------------------------------------------

    def _opener(self, name: str) -> Callable[[float, OpenCause], None]:
        def opened(seconds: float, cause: OpenCause) -> None:
            if not seconds >= MIN_COOLDOWN_S or not math.isfinite(seconds):
                return  # nan and inf never reach Redis (nor `math.ceil`)
            until = self._clock() + seconds
            queued = self._outbox.get(name)
            if queued is None or until > queued[0]:
                self._outbox[name] = (until, cause)
                self._wake.set()

        return opened

    def kick(self) -> None:
        """Redis came back: send the outbox and re-read every cooldown soon."""
        self._wake.set()
        self._resync_due = True

    async def publish(self) -> bool:
        """Send the outbox; what could not be sent stays for the next try."""
        now = self._clock()
        for name, (until, cause) in list(self._outbox.items()):
            if not math.isfinite(until):
                self._outbox.pop(name, None)
                continue
            remaining_ms = math.ceil((until - now) * 1000)
            if remaining_ms < MIN_COOLDOWN_S * 1000:
                self._outbox.pop(name, None)
                continue
            if not self._link.up:
                return False
            value = json.dumps({"from": self._replica, "cause": cause})
            message = json.dumps(
                {"target": name, "ms": remaining_ms, "cause": cause, "from": self._replica}
            )
            try:
                with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                    await self._set(
                        keys=[self._keys.cooldown(name)],
                        args=[remaining_ms, value, self._keys.channel, message],
                    )
            except REDIS_ERRORS as exc:
                self._link.lost(exc)
                self._link.fallback("publish")
                return False
            self._link.ok()
            if self._outbox.get(name) == (until, cause):
                del self._outbox[name]
        return True

    async def publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if not await self.publish():
                await anyio.sleep(RETRY_SUBSCRIBE_S)

    # -- incoming ------------------------------------------------------------------------

    def _apply(self, name: str, ms: int, cause: object, origin: object) -> None:
        if origin == self._replica or ms <= 0:
            return
        signals = self._targets.get(name)
        if signals is None:
            return  # a target this replica's config does not have
        why: OpenCause = cause if cause in _CAUSES else "breaker"
        seconds = ms / 1000.0
        if signals.breaker.open_remaining_s() >= seconds - MIN_COOLDOWN_S:
            return  # already known (a message and a resync both told us)
        if signals.cooldown_from_peer(seconds, why):
            self.applied += 1
            log.info("target %s: cooling down %.3f s as a peer saw (%s)", name, ms / 1e3, why)

    def _on_message(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            name, ms = str(msg["target"]), int(msg["ms"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed cooldown message: %r", data[:200])
            return
        self._apply(name, ms, msg.get("cause"), msg.get("from"))

    async def resync(self) -> bool:
        """Read every target's running cooldown from Redis and apply it."""
        names = list(self._targets)
        if not names:
            return True
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            key = self._keys.cooldown(name)
            pipe.get(key)
            pipe.pttl(key)
        try:
            with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                replies: list[Any] = await pipe.execute()
        except REDIS_ERRORS as exc:
            self._link.lost(exc)
            self._link.fallback("sync")
            return False
        self._link.ok()
        for i, name in enumerate(names):
            value, ttl = replies[2 * i], replies[2 * i + 1]
            if value is None or not isinstance(ttl, int) or ttl <= 0:
                continue
            try:
                meta = json.loads(value)
            except ValueError:
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
            self._apply(name, ttl, meta.get("cause"), meta.get("from"))
        return True

    async def listen_loop(self) -> None:
        """Subscribe, resync, apply messages; on any error start over (bounded retries)."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                    await pubsub.subscribe(self._keys.channel)
                await self.resync()
                next_resync = self._clock() + RESYNC_EVERY_S
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=RETRY_SUBSCRIBE_S
                    )
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
                    if self._resync_due or self._clock() >= next_resync:
                        self._resync_due = False
                        next_resync = self._clock() + RESYNC_EVERY_S
                        if self._link.up:
                            await self.resync()
            except REDIS_ERRORS as exc:
                self._link.lost(exc)
            finally:
                with anyio.CancelScope(shield=True):
                    # redis-py typed `aclose` in 8.2; through a typed name it checks on both
                    close: Callable[[], Awaitable[None]] = pubsub.aclose
                    await close()
            await anyio.sleep(RETRY_SUBSCRIBE_S)
