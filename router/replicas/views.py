"""This replica's view of a global counter, and when it may admit on that view alone.

A counter (one target's or one client key's requests and tokens in the sliding
minute, see `limits`) is known here as the values Redis last returned for it
(`cur`/`prev`: this minute's and the previous minute's hash), stamped with the
Redis-wide sequence number of the call that read them, so a late reply never
replaces a newer one, plus this replica's own charges not yet in those values
(`unsynced`: queued for the next flush, or sent and not answered yet).

`decide` answers for one admission:

- OVER: even this lower bound of the global count leaves no room (the exact
  check could only say the same), so the candidate leaves the plan at no cost;
- FITS: the count is comfortably below the limit, so the turn is admitted here
  and charged to Redis by the next flush;
- UNSURE: the view is unknown or stale, or the count is near the limit: the
  exact atomic check in Redis decides.

The headroom a FITS needs covers what the other replicas may have admitted that
this view cannot show yet. Three parts, per dimension (requests, tokens) with
limit L, `n` = replicas (at least 2, so a replica that has not yet seen its
peers' heartbeat is not over-confident):

- what they hold unflushed: each replica keeps its own unflushed charges under
  `cap = max(cost, MARGIN_FRACTION * L / n)`, so at most `(n - 1) * cap`;
- what they flushed since this view was read, and what arrives before this
  charge lands (one flush tick): `RATE_FACTOR * rate * (age + TICK_S)`, where
  `rate` is the largest of the global growth per second (decayed over
  `RATE_TAU_S`, and between the last two reads, at most one tick apart in the
  division, so a burst counts at once) and `n` times this replica's own rate (a
  balancer spreads load evenly), doubled for a load that is still rising;
- a step in load the rates have not seen yet: `MARGIN_FRACTION * L`, taken as a
  floor under the rate part.

So `margin = (n - 1) * cap + max(MARGIN_FRACTION * L, RATE_FACTOR * rate * (age + TICK_S))`
and a FITS needs `count + cost + margin <= L` and `unsynced + cost <= cap`.
"""

from __future__ import annotations

import enum
import math

#: how often pending charges are flushed (and views refreshed) while in use
TICK_S = 0.05
#: a view older than this (since its read was sent) is not used: the exact check decides
STALE_S = 0.25
#: the floor of the headroom, and each replica's cap on its unflushed charges (x 1/n)
MARGIN_FRACTION = 0.05
#: the rate part of the headroom allows for a load this many times the measured one
RATE_FACTOR = 2.0
#: time constant of the rate estimates
RATE_TAU_S = 1.0


class Decision(enum.Enum):
    FITS = "fits"
    OVER = "over"
    UNSURE = "unsure"


class Rate:
    """Events per second, exponentially decayed (a sum of amount x e^(-age/tau) / tau)."""

    __slots__ = ("_at", "_tau", "_value")

    def __init__(self, tau: float = RATE_TAU_S) -> None:
        self._tau = tau
        self._value = 0.0
        self._at = 0.0

    def get(self, now: float) -> float:
        if now <= self._at:
            return self._value
        return self._value * math.exp(-(now - self._at) / self._tau)

    def add(self, amount: float, now: float) -> None:
        self._value = self.get(now) + amount / self._tau
        self._at = max(now, self._at)


class CounterView:
    """What this replica knows of one global counter (see the module docstring)."""

    __slots__ = (
        "cur",
        "last",
        "minute",
        "own",
        "prev",
        "read_at",
        "seen",
        "seq",
        "unsynced",
        "used_at",
    )

    def __init__(self) -> None:
        #: the Redis-wide sequence number of the read (0: never read)
        self.seq = 0
        self.minute = 0
        #: [requests, tokens] in the view's minute and the one before, as read
        self.cur = [0, 0]
        self.prev = [0, 0]
        #: when the call that read them was sent (monotonic)
        self.read_at = -math.inf
        #: this replica's charges not in `cur` yet
        self.unsynced = [0, 0]
        #: this replica's charges per second, and the global growth seen between reads
        self.own = (Rate(), Rate())
        self.seen = (Rate(), Rate())
        #: the global growth per second between the last two reads (a burst shows
        #: here at once, and in `seen` only as it builds up)
        self.last = [0.0, 0.0]
        #: last consulted (monotonic): views in use are refreshed every tick
        self.used_at = -math.inf

    def forget(self) -> None:
        """Unknown from now on (Redis went away: what it said may no longer hold)."""
        self.seq = 0
        self.read_at = -math.inf

    def charged(self, requests: int, tokens: int, now: float) -> None:
        """This replica charged the counter (`unsynced` is the caller's to keep)."""
        self.own[0].add(requests, now)
        self.own[1].add(tokens, now)

    def update(self, seq: int, minute: int, counts: list[int], read_at: float) -> None:
        """Counts `[cur r, cur t, prev r, prev t]` read by call `seq` for `minute`."""
        if seq <= self.seq:
            return  # a reply that overtook this one was newer
        self.last = [0.0, 0.0]
        if self.seq:
            dt = read_at - self.read_at
            for i in (0, 1):
                if minute == self.minute:
                    grew = counts[i] - self.cur[i]
                elif minute == self.minute + 1:
                    grew = counts[2 + i] - self.cur[i] + counts[i]
                else:
                    grew = counts[i]
                if dt > 0 and grew > 0:
                    self.seen[i].add(grew, read_at)
                    self.last[i] = grew / max(dt, TICK_S)
        self.seq = seq
        self.minute = minute
        self.cur = [counts[0], counts[1]]
        self.prev = [counts[2], counts[3]]
        self.read_at = read_at

    def count(self, minute: int, weight: float) -> tuple[float, float]:
        """(requests, tokens) over the sliding minute: what Redis said, plus `unsynced`."""
        if minute == self.minute:
            base = [c + weight * p for c, p in zip(self.cur, self.prev, strict=True)]
        elif minute == self.minute + 1:
            base = [weight * c for c in self.cur]
        else:
            base = [0.0, 0.0]
        return base[0] + self.unsynced[0], base[1] + self.unsynced[1]

    def decide(
        self,
        *,
        rpm: int,
        tpm: int,
        tokens: int,
        minute: int,
        weight: float,
        now: float,
        replicas: int,
    ) -> Decision:
        age = now - self.read_at
        if not self.seq or age > STALE_S:
            return Decision.UNSURE
        counted = self.count(minute, weight)
        # The exact check's rule (a request may start while any token budget is left).
        if (rpm > 0 and counted[0] + 1 > rpm) or (tpm > 0 and counted[1] >= tpm):
            return Decision.OVER
        n = max(replicas, 2)
        for i, limit, cost in ((0, rpm, 1), (1, tpm, tokens)):
            if limit <= 0:
                continue
            cap = max(cost, MARGIN_FRACTION * limit / n)
            if self.unsynced[i] + cost > cap:
                return Decision.UNSURE
            rate = max(self.seen[i].get(now), self.last[i], n * self.own[i].get(now))
            margin = (n - 1) * cap + max(
                MARGIN_FRACTION * limit, RATE_FACTOR * rate * (age + TICK_S)
            )
            if counted[i] + cost + margin > limit:
                return Decision.UNSURE
        return Decision.FITS
