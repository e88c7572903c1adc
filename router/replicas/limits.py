"""Global rpm/tpm: per-target and per-client-key counters in Redis, off the turn's path.

The counter is the sliding-window approximation of Cloudflare's rate limiter
("How we built rate limiting capable of scaling to millions of domains", 2017):
one hash per name and minute (`r` requests, `t` tokens); the count over the last
60 s is `current + previous * (1 - elapsed/60)`. Minutes come from the replica's
wall clock (NTP keeps replicas within milliseconds; a skew of s seconds only
moves the previous minute's weight by s/60).

`admit` takes the plan's candidates in order: the client key must have room, then
the first target with room (an unlimited one always has room) is charged one
request and the prompt's tokens; candidates before it are over their global limit
and leave the plan. Each replica keeps a view of every counter it uses (`views`):
what Redis last said plus its own charges since. Two paths:

- fast: while every counter the turn needs is comfortably below its limit (a
  headroom that covers what the other replicas may have admitted unseen, see
  `views`), the turn is admitted and charged here, with no await; the charge
  goes to Redis with the next flush;
- exact: near a limit, or with a view that is stale or unknown (at start), the
  turn waits for the atomic check in Redis (the client key, then the candidates
  in order, the first with room charged), so N replicas together never pass the
  limit. The checks queued in one loop tick go in one call, checked one after
  the other, so a burst costs one Redis round trip, not one per turn.

Every call is the one script (`SYNC_LUA`): it first adds this replica's pending
charges (so its own are never unseen by the checks), then checks and charges the
queued turns, then returns the current counts of every counter this replica is
using, so the flush every `TICK_S` while they are in use also tells each replica
what the others charged. Everything else a target records locally (completion
tokens, fallback and hedge attempts) is added the same way. The charge made by
`admit` is netted against the local record of the same attempt, so nothing is
counted twice.

Redis clients here are asyncio's (redis.asyncio), so this module is too.
When Redis is down or slower than `timeout_ms`, the turn goes on with the plan
the local limits allowed (fail open), and the local limits are scaled to this
replica's share of the global ones (see `SharedState`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import anyio
from redis.asyncio import Redis

from router.clock import Clock
from router.errors import ClientRateLimited, NoTargetAvailable
from router.policy.base import Plan
from router.replicas.link import BACKGROUND_TIMEOUT_S, REDIS_ERRORS, Keys, Link
from router.replicas.script import SYNC_LUA, CounterKey, Limited, SyncCall
from router.replicas.views import TICK_S, CounterView, Decision
from router.signals.target import TargetSignals

WINDOW_S = 60
#: a minute's counters live through the next minute (as the previous window)
WINDOW_TTL_MS = 2 * WINDOW_S * 1000 + 5000
FLUSH_EVERY_S = TICK_S
#: views consulted this recently are refreshed every tick, charges or not
KEEP_FRESH_S = 1.0
OVER_GLOBAL = "over global rpm/tpm limit"


@dataclass(frozen=True, slots=True)
class ClientQuota:
    """A client key's own global limits (from `auth.keys[].rpm/tpm`)."""

    name: str
    rpm: int | None
    tpm: int | None


@dataclass(slots=True)
class _Check:
    """One turn waiting for the exact check."""

    tokens: int
    client: Limited | None
    entries: list[Limited]
    answer: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


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
        self._targets: Mapping[str, TargetSignals] = {}
        #: replicas alive, as the heartbeat last saw them
        self.replicas = 1
        #: requests charged by `admit` whose local record is still to come, by target
        self._prepaid: Counter[str] = Counter()
        #: (counter, minute) -> [requests, tokens] charged here, not yet sent to Redis
        self._pending: dict[tuple[CounterKey, int], list[int]] = {}
        self._views: dict[CounterKey, CounterView] = {}
        #: turns waiting for the exact check, sent together at the next loop tick
        self._queue: list[_Check] = []
        self._wake = anyio.Event()
        #: calls under way (they outlive a turn's timeout, and finish in the background)
        self._calls: set[asyncio.Task[bool]] = set()
        #: turns decided on this replica's views ("view") or by Redis ("redis"), and
        #: calls sent to Redis (flushes and batches of checks), for the metrics
        self.decided: Counter[str] = Counter({"view": 0, "redis": 0})
        self.calls = 0

    def attach(self, targets: Mapping[str, TargetSignals]) -> None:
        """Count what every limited target records (call again after each reload)."""
        self._targets = targets
        for name, signals in targets.items():
            signals.local_limits.on_record = self._recorder(name)

    def _window(self) -> tuple[int, float]:
        now = self._wall()
        minute = int(now // WINDOW_S)
        return minute, 1.0 - (now - minute * WINDOW_S) / WINDOW_S

    def _view(self, counter: CounterKey) -> CounterView:
        view = self._views.get(counter)
        if view is None:
            view = self._views[counter] = CounterView()
        return view

    # -- per turn ------------------------------------------------------------------------

    async def admit(
        self, plan: Plan, prompt_tokens: int, client: ClientQuota | None = None
    ) -> Plan:
        """The plan without the candidates over their global limit, with the first
        remaining one charged. Raises ClientRateLimited / NoTargetAvailable."""
        quota: Limited | None = None
        if client is not None and (client.rpm or client.tpm):
            quota = (client.name, client.rpm or 0, client.tpm or 0)
        entries: list[Limited] = []
        for c in plan.candidates:
            signals = self._targets.get(c.name)
            rpm, tpm = _limits(signals) if signals is not None else (0, 0)
            entries.append((c.name, rpm, tpm))
            if not (rpm or tpm):
                break  # an unlimited target always has room: nothing after it matters
        if quota is None and not (entries[0][1] or entries[0][2]):
            return plan  # nothing to count on this turn's path
        if not self._link.up:
            self._link.fallback("limit")
            return plan
        index = self._fast(quota, entries, prompt_tokens)
        if index is not None:
            self.decided["view"] += 1
        else:
            index = await self._exact(quota, entries, prompt_tokens)
            if index is None:
                return self._local(plan, entries)
            self.decided["redis"] += 1
            if index >= 0 and (entries[index][1] or entries[index][2]):
                self._prepaid[entries[index][0]] += 1
        if index == -1:
            assert quota is not None
            raise ClientRateLimited(
                f"the key '{quota[0]}' is over its rate limit", retry_after_s=1.0
            )
        if index < 0:
            raise NoTargetAvailable("every target of the route is over its global rpm/tpm limit")
        if index == 0:
            return plan
        skipped = tuple((name, OVER_GLOBAL) for name, _, _ in entries[:index])
        return replace(plan, candidates=plan.candidates[index:], rejected=plan.rejected + skipped)

    def _fast(self, quota: Limited | None, entries: list[Limited], tokens: int) -> int | None:
        """The answer from this replica's views, charged here; None if only the exact
        check can tell (the same answers as `SYNC_LUA`'s)."""
        minute, weight = self._window()
        now = self._clock()
        replicas = self.replicas

        def decide(counter: CounterKey, rpm: int, tpm: int) -> Decision:
            view = self._view(counter)
            view.used_at = now
            return view.decide(
                rpm=rpm,
                tpm=tpm,
                tokens=tokens,
                minute=minute,
                weight=weight,
                now=now,
                replicas=replicas,
            )

        if quota is not None:
            verdict = decide(("c", quota[0]), quota[1], quota[2])
            if verdict is Decision.OVER:
                return -1
            if verdict is Decision.UNSURE:
                return None
        chosen = -2
        for i, (name, rpm, tpm) in enumerate(entries):
            if not (rpm or tpm):
                chosen = i
                break
            verdict = decide(("t", name), rpm, tpm)
            if verdict is Decision.UNSURE:
                return None
            if verdict is Decision.FITS:
                chosen = i
                break
        if chosen < 0:
            return chosen
        if quota is not None:
            self._charge(("c", quota[0]), minute, 1, tokens)
        name, rpm, tpm = entries[chosen]
        if rpm or tpm:
            self._charge(("t", name), minute, 1, tokens)
            self._prepaid[name] += 1
        return chosen

    async def _exact(
        self, quota: Limited | None, entries: list[Limited], tokens: int
    ) -> int | None:
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

    def _local(self, plan: Plan, entries: list[Limited]) -> Plan:
        """This turn's answer without Redis: limited candidates are held to this
        replica's share of their global limit, counted locally."""
        self._link.fallback("limit")
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

    def _charge(self, counter: CounterKey, minute: int, requests: int, tokens: int) -> None:
        pending = self._pending.setdefault((counter, minute), [0, 0])
        pending[0] += requests
        pending[1] += tokens
        view = self._view(counter)
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
        minute, weight = self._window()
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
            self._view(key).update(seq, minute, values, now)
        for check, result in zip(checks, results, strict=True):
            if result >= 0:
                if check.client is not None:
                    self._view(("c", check.client[0])).charged(1, check.tokens, now)
                name, rpm, tpm = check.entries[result]
                if rpm or tpm:
                    self._view(("t", name)).charged(1, check.tokens, now)
            _answer(check, result)
        return True

    def _settle(self, carried: dict[CounterKey, list[int]]) -> None:
        for key, (requests, tokens) in carried.items():
            unsynced = self._view(key).unsynced
            unsynced[0] -= requests
            unsynced[1] -= tokens

    # -- in the background ---------------------------------------------------------------

    def _recorder(self, name: str) -> Callable[[int, int], None]:
        def record(tokens: int, requests: int) -> None:
            if requests and self._prepaid[name] > 0:
                # The attempt `admit` already charged (one request and its prompt).
                self._prepaid[name] -= 1
                return
            minute, _ = self._window()
            self._charge(("t", name), minute, requests, tokens)

        return record

    def _in_use(self) -> bool:
        now = self._clock()
        return any(now - view.used_at <= KEEP_FRESH_S for view in self._views.values())

    async def flush(self) -> bool:
        """Add what was charged here to the global counters, and refresh the views in
        use (one call)."""
        if not self._link.up:
            if self._pending:
                # Kept for when Redis returns, as long as they still count (bounded:
                # counters x 2 minutes).
                minute, _ = self._window()
                for old in [k for k in self._pending if k[1] < minute - 1]:
                    requests, tokens = self._pending.pop(old)
                    self._settle({old[0]: [requests, tokens]})
            return False
        if not self._pending and not self._in_use():
            return True
        return await self._call([])

    async def flush_loop(self) -> None:
        while True:
            if not self._pending and not self._in_use():
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
