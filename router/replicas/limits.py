"""Global rpm/tpm: per-target and per-client-key limits across replicas, off the turn's path.

`admit` takes the plan's candidates in order: the client key must have room, then
the first target with room (an unlimited one always has room) is charged one
request and the prompt's tokens; candidates before it are over their global limit
and leave the plan. Each replica keeps a view of every counter it uses
(`counters`: what Redis last said plus its own charges since). Two paths:

- fast: while every counter the turn needs is comfortably below its limit (a
  headroom that covers what the other replicas may have admitted unseen, see
  `views`), the turn is admitted and charged here, with no await; the charge
  goes to Redis with the next flush;
- exact: near a limit, or with a view that is stale or unknown (at start), the
  turn waits for the atomic check in Redis (the client key, then the candidates
  in order, the first with room charged), so N replicas together never pass the
  limit; the checks of one loop tick share one call (`counters`).

Everything else a target records locally (completion tokens, fallback and hedge
attempts) is charged the same way. The charge made by `admit` is netted against
the local record of the same attempt, so nothing is counted twice.

When Redis is down or slower than `timeout_ms`, the turn goes on with the plan
the local limits allowed (fail open), and the local limits are scaled to this
replica's share of the global ones (see `SharedState`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from router.clock import Clock
from router.errors import ClientRateLimited, NoTargetAvailable
from router.policy.base import Plan
from router.replicas.counters import GlobalCounters
from router.replicas.link import Link
from router.replicas.script import CounterKey, Limited
from router.replicas.views import Decision
from router.signals.target import TargetSignals

OVER_GLOBAL = "over global rpm/tpm limit"


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
    """The per-turn admission against the global counters."""

    def __init__(
        self, counters: GlobalCounters, link: Link, *, clock: Clock = time.monotonic
    ) -> None:
        #: this replica's view of the global counters, and the one call to Redis
        self.counters = counters
        self._link = link
        self._clock = clock
        self._targets: Mapping[str, TargetSignals] = {}
        #: replicas alive, as the heartbeat last saw them
        self.replicas = 1
        #: requests charged by `admit` whose local record is still to come, by target
        self._prepaid: Counter[str] = Counter()
        #: turns decided on this replica's views ("view") or by Redis ("redis")
        self.decided: Counter[str] = Counter({"view": 0, "redis": 0})

    def attach(self, targets: Mapping[str, TargetSignals]) -> None:
        """Count what every limited target records (call again after each reload)."""
        self._targets = targets
        for name, signals in targets.items():
            signals.local_limits.on_record = self._recorder(name)

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
            index = await self.counters.check(quota, entries, prompt_tokens)
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
        minute, weight = self.counters.window()
        now = self._clock()
        replicas = self.replicas

        def decide(counter: CounterKey, rpm: int, tpm: int) -> Decision:
            view = self.counters.view(counter)
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
            self.counters.charge(("c", quota[0]), minute, 1, tokens)
        name, rpm, tpm = entries[chosen]
        if rpm or tpm:
            self.counters.charge(("t", name), minute, 1, tokens)
            self._prepaid[name] += 1
        return chosen

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

    # -- in the background ---------------------------------------------------------------

    def _recorder(self, name: str) -> Callable[[int, int], None]:
        def record(tokens: int, requests: int) -> None:
            if requests and self._prepaid[name] > 0:
                # The attempt `admit` already charged (one request and its prompt).
                self._prepaid[name] -= 1
                return
            minute, _ = self.counters.window()
            self.counters.charge(("t", name), minute, requests, tokens)

        return record
