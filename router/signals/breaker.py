"""A per-target circuit breaker: closed -> open -> half-open -> closed.

The pattern is Nygard's (Release It!, "Circuit Breaker"), with the exponential
backoff between probes of Finagle's `FailureAccrualFactory` and the single
half-open probe of resilience4j / Envoy outlier detection:

- closed: every attempt goes through; `failures` consecutive failures open it.
- open: nothing goes through for the backoff (`base_s`, doubling on each trip
  without a success in between, capped at `max_s`), or for exactly the time a
  provider asked for (`open_for`, from a 429's Retry-After or rate-limit reset).
- half-open: once the open period is over, `try_acquire()` grants exactly one
  probe. Its success closes the breaker; its failure opens it again with the
  next backoff. A probe that ends with no verdict (cancelled, or a 4xx that is the
  client's fault) frees the slot for the next probe.

A success resets the count of consecutive failures. The breaker only measures: it
never raises, and callers decide what to do with `available`.

Replicas share openings: `on_open(seconds, cause)` is called whenever this
breaker opens (`cause` is "retry_after" for `open_for`, "breaker" for a trip),
and `open_remote` applies another replica's opening without calling it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from router.clock import Clock
from router.policy.base import BreakerState

OpenCause = Literal["retry_after", "breaker"]
OnOpen = Callable[[float, OpenCause], None]


class Breaker:
    __slots__ = (
        "_base",
        "_clock",
        "_failures",
        "_max",
        "_open_until",
        "_probe_out",
        "_threshold",
        "_trips",
        "on_open",
    )

    def __init__(self, *, failures: int, base_s: float, max_s: float, clock: Clock) -> None:
        self._threshold = failures
        self._base = base_s
        self._max = max_s
        self._clock = clock
        self._failures = 0
        #: trips since the last close; sets the next backoff
        self._trips = 0
        #: None while closed
        self._open_until: float | None = None
        self._probe_out = False
        #: called with (seconds, cause) whenever this breaker opens (shared state)
        self.on_open: OnOpen | None = None

    def reconfigure(self, *, failures: int, base_s: float, max_s: float) -> None:
        self._threshold, self._base, self._max = failures, base_s, max_s

    @property
    def state(self) -> BreakerState:
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half_open"

    @property
    def available(self) -> bool:
        """An attempt would be let through now."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probe_out)

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def open_remaining_s(self) -> float:
        """Seconds until the open period ends (0 unless open)."""
        if self._open_until is None:
            return 0.0
        return max(self._open_until - self._clock(), 0.0)

    def next_backoff_s(self) -> float:
        return min(self._base * 2.0**self._trips, self._max)

    def try_acquire(self) -> bool:
        """Let one attempt through? In half-open this takes the single probe slot."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probe_out:
            return False
        self._probe_out = True
        return True

    def record_success(self) -> None:
        self._failures = 0
        if self.state == "open":
            # An older attempt finishing does not lift a provider's "wait N seconds".
            return
        self._open_until = None
        self._trips = 0
        self._probe_out = False

    def record_failure(self) -> None:
        state = self.state
        if state == "open":
            return
        if state == "half_open":
            self._trip()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._trip()

    def release_probe(self) -> None:
        """The probe ended with no verdict on the target: let another one through."""
        self._probe_out = False

    def open_for(self, seconds: float) -> None:
        """Open for exactly `seconds` (never shortening a longer open period). A
        non-finite time (a garbled Retry-After) opens it for its longest backoff."""
        if not math.isfinite(seconds):
            seconds = self._max
        until = self._clock() + max(seconds, 0.0)
        if self._open_until is None or self.state != "open" or until > self._open_until:
            self._open_until = until
            if self.on_open is not None:
                self.on_open(seconds, "retry_after")
        self._probe_out = False

    def open_remote(self, seconds: float) -> bool:
        """Apply another replica's opening: open for `seconds` unless already open
        longer. Does not call `on_open` and leaves this breaker's backoff alone.
        Returns whether it changed anything."""
        if not math.isfinite(seconds):
            seconds = self._max
        if seconds <= 0.0:
            return False
        until = self._clock() + seconds
        if self.state == "open" and self._open_until is not None and until <= self._open_until:
            return False
        self._open_until = until
        self._probe_out = False
        return True

    def _trip(self) -> None:
        backoff = self.next_backoff_s()
        self._open_until = self._clock() + backoff
        self._trips += 1
        self._failures = 0
        self._probe_out = False
        if self.on_open is not None:
            self.on_open(backoff, "breaker")
