"""The connection to Redis and whether it can be trusted right now.

`Link` is the one place that decides "up" or "down". Every Redis call in this
package is bounded (the client's socket timeouts, and `fail_after` around each
call); a connection error or three per-turn timeouts in a row mark the link down,
the heartbeat marks it up again. A change is logged once (at most once per
`LOG_EVERY_S` while it flaps), never per turn; turns that had to use local state
while it was down are counted by operation for the metrics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from router.clock import Clock
from router.config import StateConfig

log = logging.getLogger("firsttoken.shared")

#: what a Redis call may raise when Redis is away or slow (OSError covers refused
#: connects that escape redis-py's wrapping; TimeoutError covers `fail_after`)
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

#: socket timeouts of the background calls (heartbeat, publish, flush, resync)
BACKGROUND_TIMEOUT_S = 0.5
#: per-turn checks that time out in a row before the link counts as down
SLOW_STRIKES = 10
#: at most one "down"/"up" log line per this many seconds while the link flaps
LOG_EVERY_S = 30.0

#: operations that fall back to local state (the `op` label of the fallback counter)
OPS = ("limit", "publish", "flush", "sync", "owners")


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


def connect(config: StateConfig) -> Redis:
    """A client with bounded socket timeouts and no retries of its own (we fail open)."""
    client: Redis = Redis.from_url(
        config.redis_url,
        socket_timeout=BACKGROUND_TIMEOUT_S,
        socket_connect_timeout=BACKGROUND_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


@dataclass(frozen=True, slots=True)
class Keys:
    """Every Redis key and channel this package uses, under one prefix."""

    prefix: str

    @property
    def channel(self) -> str:
        return f"{self.prefix}cooldowns"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}replicas"

    @property
    def sequence(self) -> str:
        """Counts the limit calls, so a replica can tell which of two replies is newer."""
        return f"{self.prefix}rl:seq"

    def cooldown(self, target: str) -> str:
        return f"{self.prefix}cooldown:{target}"

    def owner(self, key: str) -> str:
        """The target that stored a response (or conversation) id: `key` is `r:<id>`."""
        return f"{self.prefix}resp:{key}"

    def window(self, kind: str, name: str, minute: int) -> str:
        """The counter of `kind` ("t" target, "c" client key) `name` for one minute."""
        return f"{self.prefix}rl:{kind}:{name}:{minute}"


class Link:
    """Up or down, with the reason, the transitions logged once, and fallback counts."""

    def __init__(
        self,
        url_for_logs: str,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.up = False
        self.fallbacks: Counter[str] = Counter({op: 0 for op in OPS})
        self.outages = 0
        self._where = url_for_logs
        self._on_change = on_change
        self._clock = clock
        self._strikes = 0
        self._logged_at = -LOG_EVERY_S
        self._ever_up = False

    def ok(self) -> None:
        """A call succeeded (the heartbeat's word is what brings the link up)."""
        self._strikes = 0

    def came_up(self) -> None:
        self._strikes = 0
        if self.up:
            return
        self.up = True
        if self._ever_up:
            self._log(logging.WARNING, "shared state at %s is back; resyncing", self._where)
        else:
            log.info("shared state at %s is up", self._where)
        self._ever_up = True
        if self._on_change is not None:
            self._on_change(True)

    def lost(self, why: BaseException | str) -> None:
        self._strikes = 0
        if not self.up and self.outages:
            return  # already down, and already said so
        self.up = False
        self.outages += 1
        self._log(
            logging.WARNING,
            "shared state at %s is unavailable (%s); routing on local state until it returns",
            self._where,
            why if isinstance(why, str) else f"{type(why).__name__}: {why}",
        )
        if self._on_change is not None:
            self._on_change(False)

    def slow(self) -> None:
        """A per-turn call timed out: a few in a row and the link counts as down."""
        self._strikes += 1
        if self._strikes >= SLOW_STRIKES:
            self.lost(f"{SLOW_STRIKES} per-turn calls in a row timed out")

    def fallback(self, op: str) -> None:
        self.fallbacks[op] += 1

    def _log(self, level: int, msg: str, *args: object) -> None:
        now = self._clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.log(level, msg, *args)
