"""Global rpm/tpm: per-target and per-client-key counters in Redis, one round trip a turn.

The counter is the sliding-window approximation of Cloudflare's rate limiter
("How we built rate limiting capable of scaling to millions of domains", 2017):
one hash per name and minute (`r` requests, `t` tokens); the count over the last
60 s is `current + previous * (1 - elapsed/60)`. Minutes come from the replica's
wall clock (NTP keeps replicas within milliseconds; a skew of s seconds only
moves the previous minute's weight by s/60).

Per turn, `admit` runs one Lua script with the plan's candidates in order: the
client key must have room, then the first target with room (an unlimited one
always has room) is charged one request and the prompt's tokens, atomically, so
N replicas together never pass more than the limit. Candidates before it are
over their global limit and leave the plan. Everything else a target records
locally (completion tokens, fallback and hedge attempts) is added to Redis in the
background (`flush`), never on the turn's path. The reservation the script made
is netted against the local record of the same attempt, so nothing is counted
twice.

Redis clients here are asyncio's (redis.asyncio), so this module is too.
When Redis is down or slower than `timeout_ms`, the turn goes on with the plan
the local limits allowed (fail open), and the local limits are scaled to this
replica's share of the global ones (see `SharedState`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio
from redis.asyncio import Redis

from router.errors import ClientRateLimited, NoTargetAvailable
from router.policy.base import Plan
from router.shared.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link
from router.signals.target import TargetSignals

WINDOW_S = 60
#: a minute's counters live through the next minute (as the previous window)
WINDOW_TTL_MS = 2 * WINDOW_S * 1000 + 5000
FLUSH_EVERY_S = 0.05
OVER_GLOBAL = "over global rpm/tpm limit"

#: KEYS: (current, previous) window of the client key (if any), then of each candidate.
#: ARGV: previous-window weight, ttl ms, prompt tokens, 1 if a client key leads, then
#: (rpm, tpm) per KEYS pair (0 = no limit). Returns the 0-based index of the candidate
#: charged, -1 if the client key is over its limit, -2 if every candidate is.
ADMIT_LUA = """
local w = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local nclient = tonumber(ARGV[4])
local n = #KEYS / 2
local function fits(i)
  local rpm = tonumber(ARGV[3 + 2 * i])
  local tpm = tonumber(ARGV[4 + 2 * i])
  if rpm <= 0 and tpm <= 0 then return true end
  local cur = redis.call('HMGET', KEYS[2 * i - 1], 'r', 't')
  local prev = redis.call('HMGET', KEYS[2 * i], 'r', 't')
  local r = (tonumber(cur[1]) or 0) + w * (tonumber(prev[1]) or 0)
  local t = (tonumber(cur[2]) or 0) + w * (tonumber(prev[2]) or 0)
  return (rpm <= 0 or r + 1 <= rpm) and (tpm <= 0 or t < tpm)
end
local function charge(i)
  if tonumber(ARGV[3 + 2 * i]) <= 0 and tonumber(ARGV[4 + 2 * i]) <= 0 then return end
  redis.call('HINCRBY', KEYS[2 * i - 1], 'r', 1)
  redis.call('HINCRBY', KEYS[2 * i - 1], 't', tokens)
  redis.call('PEXPIRE', KEYS[2 * i - 1], ttl)
end
if nclient == 1 and not fits(1) then return -1 end
for i = nclient + 1, n do
  if fits(i) then
    if nclient == 1 then charge(1) end
    charge(i)
    return i - nclient - 1
  end
end
return -2
"""


@dataclass(frozen=True, slots=True)
class ClientQuota:
    """A client key's own global limits (from `auth.keys[].rpm/tpm`)."""

    name: str
    rpm: int | None
    tpm: int | None


def _limits(signals: TargetSignals) -> tuple[int, int]:
    ll = signals.local_limits
    return ll.rpm or 0, ll.tpm or 0


class SharedLimits:
    """The per-turn admission against global counters, and the background flush."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        link: Link,
        *,
        timeout_s: float,
        wall_clock: Callable[[], float],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._link = link
        self._timeout_s = timeout_s
        self._wall = wall_clock
        self._admit = redis.register_script(ADMIT_LUA)
        self._targets: Mapping[str, TargetSignals] = {}
        #: replicas alive, as the heartbeat last saw them
        self.replicas = 1
        #: requests charged by `admit` whose local record is still to come, by target
        self._prepaid: Counter[str] = Counter()
        #: (target, minute) -> [requests, tokens] recorded locally, not yet in Redis
        self._pending: dict[tuple[str, int], list[int]] = {}
        self._wake = anyio.Event()
        #: per-turn calls that outlived their timeout, still finishing
        self._late: set[asyncio.Future[Any]] = set()

    def attach(self, targets: Mapping[str, TargetSignals]) -> None:
        """Count what every limited target records (call again after each reload)."""
        self._targets = targets
        for name, signals in targets.items():
            signals.local_limits.on_record = self._recorder(name)

    def _window(self) -> tuple[int, float]:
        now = self._wall()
        minute = int(now // WINDOW_S)
        return minute, 1.0 - (now - minute * WINDOW_S) / WINDOW_S

    # -- per turn ------------------------------------------------------------------------

    async def admit(
        self, plan: Plan, prompt_tokens: int, client: ClientQuota | None = None
    ) -> Plan:
        """The plan without the candidates over their global limit, with the first
        remaining one charged. Raises ClientRateLimited / NoTargetAvailable."""
        limited_client = client is not None and bool(client.rpm or client.tpm)
        entries: list[tuple[str, int, int]] = []
        for c in plan.candidates:
            signals = self._targets.get(c.name)
            rpm, tpm = _limits(signals) if signals is not None else (0, 0)
            entries.append((c.name, rpm, tpm))
            if not (rpm or tpm):
                break  # an unlimited target always has room: nothing after it matters
        if not limited_client and not (entries[0][1] or entries[0][2]):
            return plan  # nothing to count on this turn's path: no round trip
        if not self._link.up:
            self._link.fallback("limit")
            return plan
        minute, weight = self._window()
        keys: list[str] = []
        args: list[int | float] = [weight, WINDOW_TTL_MS, prompt_tokens, int(limited_client)]
        if limited_client and client is not None:
            keys += [
                self._keys.window("c", client.name, minute),
                self._keys.window("c", client.name, minute - 1),
            ]
            args += [client.rpm or 0, client.tpm or 0]
        for name, rpm, tpm in entries:
            keys += [self._keys.window("t", name, minute), self._keys.window("t", name, minute - 1)]
            args += [rpm, tpm]
        # The call is not cancelled at the timeout (that would close its connection
        # and make the next turn pay for a new one): it finishes in the background,
        # its charge standing (conservative), while this turn goes on locally.
        call = asyncio.ensure_future(self._admit(keys=keys, args=args))
        try:
            index = int(await asyncio.wait_for(asyncio.shield(call), self._timeout_s))
        except TimeoutError:
            self._late.add(call)
            call.add_done_callback(self._late_done)
            self._link.slow()
            self._link.fallback("limit")
            return self._local(plan, entries)
        except REDIS_ERRORS as exc:
            self._link.lost(exc)
            self._link.fallback("limit")
            return self._local(plan, entries)
        self._link.ok()
        if index == -1:
            assert client is not None
            raise ClientRateLimited(
                f"the key '{client.name}' is over its rate limit", retry_after_s=1.0
            )
        if index < 0:
            raise NoTargetAvailable("every target of the route is over its global rpm/tpm limit")
        chosen = entries[index]
        if chosen[1] or chosen[2]:
            self._prepaid[chosen[0]] += 1
        if index == 0:
            return plan
        skipped = tuple((name, OVER_GLOBAL) for name, _, _ in entries[:index])
        return replace(plan, candidates=plan.candidates[index:], rejected=plan.rejected + skipped)

    def _local(self, plan: Plan, entries: list[tuple[str, int, int]]) -> Plan:
        """This turn's answer without Redis: limited candidates are held to this
        replica's share of their global limit, counted locally."""
        share = 1.0 / max(self.replicas, 1)
        skipped: list[tuple[str, str]] = []
        for name, rpm, tpm in entries:
            if not (rpm or tpm):
                break
            requests, tokens = self._targets[name].local_limits.usage()
            if (not rpm or requests + 1 <= rpm * share) and (not tpm or tokens < tpm * share):
                break
            skipped.append((name, OVER_GLOBAL))
        if not skipped:
            return plan
        if len(skipped) == len(plan.candidates):
            raise NoTargetAvailable("every target of the route is over its rpm/tpm limit")
        return replace(
            plan,
            candidates=plan.candidates[len(skipped) :],
            rejected=plan.rejected + tuple(skipped),
        )

    def _late_done(self, call: asyncio.Future[Any]) -> None:
        self._late.discard(call)
        if not call.cancelled() and call.exception() is None:
            self._link.ok()  # slow once, but it answers: not a strike

    async def warm(self, connections: int) -> None:
        """Load the script and open `connections` pooled connections (after connecting)."""
        await self._redis.script_load(ADMIT_LUA)
        await asyncio.gather(*(self._redis.ping() for _ in range(connections)))

    def cancel_late(self) -> None:
        for call in list(self._late):
            call.cancel()

    # -- in the background ---------------------------------------------------------------

    def _recorder(self, name: str) -> Callable[[int, int], None]:
        def record(tokens: int, requests: int) -> None:
            if requests and self._prepaid[name] > 0:
                # The attempt `admit` already charged (one request and its prompt).
                self._prepaid[name] -= 1
                return
            minute, _ = self._window()
            pending = self._pending.setdefault((name, minute), [0, 0])
            pending[0] += requests
            pending[1] += tokens
            self._wake.set()

        return record

    async def flush(self) -> bool:
        """Add what was recorded locally to the global counters (one pipeline)."""
        if not self._pending:
            return True
        minute, _ = self._window()
        if not self._link.up:
            # Kept for when Redis returns, as long as they still count (bounded:
            # targets x 2 minutes).
            for old in [k for k in self._pending if k[1] < minute - 1]:
                del self._pending[old]
            return False
        pending, self._pending = self._pending, {}
        pipe = self._redis.pipeline(transaction=False)
        for (name, at), (requests, tokens) in pending.items():
            if at < minute - 1:
                continue  # older than the sliding window: it no longer counts
            key = self._keys.window("t", name, at)
            if requests:
                pipe.hincrby(key, "r", requests)
            if tokens:
                pipe.hincrby(key, "t", tokens)
            pipe.pexpire(key, WINDOW_TTL_MS)
        try:
            with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._link.lost(exc)
            self._link.fallback("flush")
            return False
        self._link.ok()
        return True

    async def flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()
            await anyio.sleep(FLUSH_EVERY_S)

    def kick(self) -> None:
        """Flush now (Redis came back)."""
        self._wake.set()
