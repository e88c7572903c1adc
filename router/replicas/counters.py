"""This replica's view of the global rpm/tpm counters in Redis, and the one call that
keeps it in step.

The counter is the sliding-window approximation of Cloudflare's rate limiter
("How we built rate limiting capable of scaling to millions of domains", 2017):
one hash per name and minute (`r` requests, `t` tokens); the count over the last
60 s is `current + previous * (1 - elapsed/60)`. Minutes come from the replica's
wall clock (NTP keeps replicas within milliseconds; a skew of s seconds only
moves the previous minute's weight by s/60).

Every call is the one script (`SYNC_LUA`): it first adds this replica's pending
charges (so its own are never unseen by the checks), then checks and charges the
queued turns (`check`: the exact path of `limits`; the checks queued in one loop
tick go in one call, checked one after the other, so a burst costs one Redis
round trip, not one per turn), then returns the current counts of every counter
this replica is using, so the flush every `TICK_S` while they are in use also
tells each replica what the others charged.

Redis clients here are asyncio's (redis.asyncio), so this module is too. A call
slower than `timeout_s` is not cancelled (that would close its connection and
make the next turn pay for a new one): it finishes in the background, its charge
standing (conservative), while the turn goes on without it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import anyio
from redis.asyncio import Redis

from router.clock import Clock
from router.replicas.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link
from router.replicas.script import SYNC_LUA, CounterKey, Limited, SyncCall
from router.replicas.views import TICK_S, CounterView

WINDOW_S = 60
#: a minute's counters live through the next minute (as the previous window)
WINDOW_TTL_MS = 2 * WINDOW_S * 1000 + 5000
FLUSH_EVERY_S = TICK_S
#: views consulted this recently are refreshed every tick, charges or not
KEEP_FRESH_S = 1.0


@dataclass(slots=True)
class _Check:
    """One turn waiting for the exact check."""

    tokens: int
    client: Limited | None
    entries: list[Limited]
    answer: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GlobalCounters:
    """The views of every counter this replica uses, its charges not yet in Redis,
    and the turns waiting for the exact check."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        link: Link,
        *,
        timeout_s: float,
        wall_clock: Clock,
        clock: Clock = time.monotonic,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._link = link
        self._timeout_s = timeout_s
        self._wall = wall_clock
        self._clock = clock
        self._sync = redis.register_script(SYNC_LUA)
        #: (counter, minute) -> [requests, tokens] charged here, not yet sent to Redis
        self._pending: dict[tuple[CounterKey, int], list[int]] = {}
        self._views: dict[CounterKey, CounterView] = {}
        #: turns waiting for the exact check, sent together at the next loop tick
        self._queue: list[_Check] = []
        self._wake = anyio.Event()
        #: calls under way (they outlive a turn's timeout, and finish in the background)
        self._calls: set[asyncio.Task[bool]] = set()
        #: calls sent to Redis (flushes and batches of checks), for the metrics
        self.calls = 0

    def window(self) -> tuple[int, float]:
        now = self._wall()
        minute = int(now // WINDOW_S)
        return minute, 1.0 - (now - minute * WINDOW_S) / WINDOW_S

    def view(self, counter: CounterKey) -> CounterView:
        view = self._views.get(counter)
        if view is None:
            view = self._views[counter] = CounterView()
        return view

    async def check(self, quota: Limited | None, entries: list[Limited], tokens: int) -> int | None:
        """The atomic check in Redis, batched with the others of this loop tick; None
        if Redis did not answer in time (the caller falls back to local limits)."""
        check = _Check(tokens, quota, entries)
        self._queue.append(check)
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._send_queue)
        # At the timeout the call is not cancelled (that would close its connection
        # and make the next turn pay for a new one): it finishes in the background,
        # its charge standing (conservative), while this turn goes on locally.
        try:
            return await asyncio.wait_for(check.answer, self._timeout_s)
        except TimeoutError:
            self._link.slow()
            return None

    def _send_queue(self) -> None:
        checks, self._queue = self._queue, []
        if not self._link.up:
            for check in checks:
                _answer(check, None)
            return
        task = asyncio.ensure_future(self._call(checks))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def warm(self, connections: int) -> None:
        """Load the script and open `connections` pooled connections (after connecting)."""
        await self._redis.script_load(SYNC_LUA)
        await asyncio.gather(*(self._redis.ping() for _ in range(connections)))

    def cancel_late(self) -> None:
        for task in list(self._calls):
            task.cancel()

    def forget(self) -> None:
        """Redis went away or came back: no view is to be trusted until read again."""
        for view in self._views.values():
            view.forget()

    # -- the one call --------------------------------------------------------------------

    def charge(self, counter: CounterKey, minute: int, requests: int, tokens: int) -> None:
        pending = self._pending.setdefault((counter, minute), [0, 0])
        pending[0] += requests
        pending[1] += tokens
        view = self.view(counter)
        view.unsynced[0] += requests
        view.unsynced[1] += tokens
        view.charged(requests, tokens, self._clock())
        self._wake.set()

    async def _call(self, checks: list[_Check]) -> bool:
        """One run of `SYNC_LUA`: this replica's pending charges, the queued checks,
        and a fresh read of every counter in use. Never raises for Redis."""
        try:
            return await self._run(checks)
        finally:
            for check in checks:  # cancelled, or worse: no turn waits for an answer
                _answer(check, None)

    async def _run(self, checks: list[_Check]) -> bool:
        minute, weight = self.window()
        now = self._clock()
        call = SyncCall(minute)
        for check in checks:
            call.check(check.tokens, check.client, check.entries)
        pending, self._pending = self._pending, {}
        carried: dict[CounterKey, list[int]] = {}
        for (key, at), (requests, tokens) in pending.items():
            sent = carried.setdefault(key, [0, 0])
            sent[0] += requests
            sent[1] += tokens
            if at in (minute, minute - 1):  # older ones no longer count
                call.increment(key, at, requests, tokens)
        for key, view in self._views.items():
            if now - view.used_at <= KEEP_FRESH_S:
                call.counter(key)
        if not call.index:
            self._settle(carried)
            return True
        self.calls += 1
        try:
            with anyio.fail_after(BACKGROUND_TIMEOUT_S * 2):
                reply = await self._sync(
                    keys=call.keys(self._keys.window, self._keys.sequence),
                    args=call.args(weight, WINDOW_TTL_MS),
                )
        except REDIS_ERRORS as exc:
            self._settle(carried)  # landed or not, the next read tells
            self._link.lost(exc)
            if carried:
                self._link.fallback("flush")
            return False
        self._link.ok()
        self._settle(carried)
        seq, results, counts = call.read(reply)
        for key, values in counts.items():
            self.view(key).update(seq, minute, values, now)
        for check, result in zip(checks, results, strict=True):
            if result >= 0:
                if check.client is not None:
                    self.view(("c", check.client[0])).charged(1, check.tokens, now)
                name, rpm, tpm = check.entries[result]
                if rpm or tpm:
                    self.view(("t", name)).charged(1, check.tokens, now)
            _answer(check, result)
        return True

    def _settle(self, carried: dict[CounterKey, list[int]]) -> None:
        for key, (requests, tokens) in carried.items():
            unsynced = self.view(key).unsynced
            unsynced[0] -= requests
            unsynced[1] -= tokens

    # -- in the background ---------------------------------------------------------------

    def in_use(self) -> bool:
        now = self._clock()
        return any(now - view.used_at <= KEEP_FRESH_S for view in self._views.values())

    async def flush(self) -> bool:
        """Add what was charged here to the global counters, and refresh the views in
        use (one call)."""
        if not self._link.up:
            if self._pending:
                # Kept for when Redis returns, as long as they still count (bounded:
                # counters x 2 minutes).
                minute, _ = self.window()
                for old in [k for k in self._pending if k[1] < minute - 1]:
                    requests, tokens = self._pending.pop(old)
                    self._settle({old[0]: [requests, tokens]})
            return False
        if not self._pending and not self.in_use():
            return True
        return await self._call([])

    async def flush_loop(self) -> None:
        while True:
            if not self._pending and not self.in_use():
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()
            await anyio.sleep(FLUSH_EVERY_S)

    def kick(self) -> None:
        """Flush now (Redis came back)."""
        self._wake.set()


def _answer(check: _Check, result: int | None) -> None:
    if not check.answer.done():
        check.answer.set_result(result)
