"""Response owners in Redis, so that any replica sends a follow-up to the target that
stored the response (router/responses/owners.py keeps them in memory first).

`remember` is called on the turn's path, at the commit point: it only queues the
id, and wakes the writer, which sends everything queued in one pipeline at once
(not on a tick: a client may send its follow-up to another replica the moment the
answer ends). Each id is a key `resp:<id>` holding `target\\x00route`, expiring
after `responses.owner_ttl_s`. `lookup` is one GET, bounded by `state.timeout_ms`;
when Redis is down or slow it raises `OwnerLookupFailed` (the replica cannot tell
whether another one saw the id). While Redis is down, queued writes are kept (at
most `MAX_QUEUED`, the newest) and sent when it returns.
"""

from __future__ import annotations

import logging

import anyio
from redis.asyncio import Redis

from router.replicas.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link
from router.responses.owners import Owner, OwnerLookupFailed

log = logging.getLogger("firsttoken.shared")

#: writes kept while Redis is away (the oldest are dropped past this)
MAX_QUEUED = 10_000
_SEP = "\x00"


class SharedOwners:
    """The `SharedOwnerStore` of router/responses/owners.py, on Redis."""

    def __init__(self, redis: Redis, keys: Keys, link: Link, *, timeout_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._link = link
        self._timeout_s = timeout_s
        #: key -> (value, ttl ms), or None for a delete; in arrival order
        self._queue: dict[str, tuple[str, int] | None] = {}
        self._wake = anyio.Event()

    def remember(self, key: str, owner: Owner, ttl_s: float) -> None:
        self._queue.pop(key, None)
        self._queue[key] = (owner.target + _SEP + owner.route, max(1, int(ttl_s * 1000)))
        self._trim()
        self._wake.set()

    def forget(self, key: str) -> None:
        self._queue.pop(key, None)
        self._queue[key] = None
        self._trim()
        self._wake.set()

    def _trim(self) -> None:
        while len(self._queue) > MAX_QUEUED:
            del self._queue[next(iter(self._queue))]
            self._link.fallback("owners")

    async def lookup(self, key: str) -> Owner | None:
        if not self._link.up:
            self._link.fallback("owners")
            raise OwnerLookupFailed("shared state (Redis) is unavailable")
        try:
            with anyio.fail_after(self._timeout_s):
                value = await self._redis.get(self._keys.owner(key))
        except TimeoutError as exc:
            self._link.slow()
            self._link.fallback("owners")
            raise OwnerLookupFailed("shared state (Redis) did not answer in time") from exc
        except REDIS_ERRORS as exc:
            self._link.lost(exc)
            self._link.fallback("owners")
            raise OwnerLookupFailed("shared state (Redis) is unavailable") from exc
        self._link.ok()
        if value is None:
            return None
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        target, _, route = text.partition(_SEP)
        return Owner(target, route)

    async def flush(self) -> bool:
        """Send what is queued (one pipeline); keep it for later if Redis is away."""
        if not self._queue or not self._link.up:
            return not self._queue
        batch, self._queue = self._queue, {}
        try:
            with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, entry in batch.items():
                        if entry is None:
                            pipe.delete(self._keys.owner(key))
                        else:
                            pipe.set(self._keys.owner(key), entry[0], px=entry[1])
                    await pipe.execute()
        except REDIS_ERRORS as exc:
            self._link.lost(exc)
            self._queue = {**batch, **self._queue}  # newer entries win
            self._trim()
            return False
        return True

    async def flush_loop(self) -> None:
        while True:
            if not self._queue or not self._link.up:
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    def kick(self) -> None:
        """Send what waited (Redis came back)."""
        self._wake.set()
