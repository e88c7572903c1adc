"""Rate limits: the provider's (from response headers) and the router's own (rpm/tpm).

Provider headroom is read from the headers every response carries:

- OpenAI and Groq: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets
  as Go-style durations (`1s`, `6m0s`, `12ms`, `1m30.5s`); also the unsuffixed
  `x-ratelimit-{limit,remaining,reset}` some OpenAI-compatible hosts send.
- Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
  {limit,remaining,reset}`, resets as RFC 3339 instants.
- `retry-after` (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date, read by
  `router.retry_after`, the parser every reader of the header shares.

Both providers document their limits as token buckets that refill continuously
until "reset" (fully replenished), so a window's headroom `remaining / limit`
recovers linearly to 1.0 at its reset time; headroom is the least over windows.
A Retry-After holds it at 0 until it passes.

The local limits are a sliding-window log (exact counts over the last 60 s; the
"sliding log" of Figma's and Stripe's rate-limiter write-ups).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from router.clock import Clock
from router.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from router.values import value

#: how long a window with no reset header is trusted
DEFAULT_RESET_S = 60.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|μs|ns|m|s)")
_UNIT_S = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ns": 1e-9,
}
#: our latest sends kept to count against a provider's request window (more than any
#: window can hold between two answers)
SENDS_KEPT = 1024
#: a bare number larger than this is an epoch timestamp, not a delay
_EPOCH_THRESHOLD = 1e9

_ANTHROPIC_DIMENSIONS = ("requests", "tokens", "input-tokens", "output-tokens")
#: (window key, header name pattern, reset is an instant) for every window read
_PATTERNS = (
    *((f"openai:{d}", f"x-ratelimit-{{}}-{d}", False) for d in ("requests", "tokens")),
    ("openai", "x-ratelimit-{}", False),
    *((f"anthropic:{d}", f"anthropic-ratelimit-{d}-{{}}", True) for d in _ANTHROPIC_DIMENSIONS),
)
#: each window's (key, (limit, remaining, reset) header names, absolute), formatted once
_WINDOW_HEADERS = tuple(
    (key, (p.format("limit"), p.format("remaining"), p.format("reset")), absolute)
    for key, p, absolute in _PATTERNS
)
#: a response without a header starting so has nothing for these windows
_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (`6m0s`, `1m30.5s`, `12ms`) or a bare number."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) and value >= 0 else None
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 instant (`2024-05-01T12:00:30Z`), or None."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@value
class _Window:
    fraction: float
    seen_at: float
    reset_at: float
    #: a window of requests (not tokens): the size of its bucket, else None
    requests: float | None = None
    #: the send time of the request whose answer reported the window: ours sent later
    #: were not counted in it yet
    basis: float = -math.inf

    def headroom(self, now: float) -> float:
        if now >= self.reset_at:
            return 1.0
        span = self.reset_at - self.seen_at
        return self.fraction + (1.0 - self.fraction) * (now - self.seen_at) / span


class ProviderLimits:
    """Headroom in [0, 1] left under a provider's rate limits, from its headers."""

    __slots__ = ("_blocked_until", "_clock", "_sends", "_wall", "_windows", "max_block_s")

    def __init__(self, clock: Clock, wall_clock: Clock) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._windows: dict[str, _Window] = {}
        self._blocked_until = -math.inf
        #: when our recent requests were sent, oldest first (see `sent`)
        self._sends: deque[float] = deque()
        #: the longest block obeyed (`signals.max_cooldown_s`)
        self.max_block_s = MAX_RETRY_AFTER_S

    def sent(self) -> None:
        """A request of ours to the provider started. Until an answer to it (or to a
        later one) reports the window, the provider has counted it and the last
        headers have not: a burst of turns sent on one stale `remaining` would all
        be let through, and all but the first few answered 429."""
        sends = self._sends
        sends.append(self._clock())
        if len(sends) > SENDS_KEPT:
            sends.popleft()

    def headroom(self) -> float:
        now = self._clock()
        if now < self._blocked_until:
            return 0.0
        if not self._windows:  # no provider headers seen (yet)
            return 1.0
        return min(self._window_headroom(w, now) for w in self._windows.values())

    def _window_headroom(self, window: _Window, now: float) -> float:
        free = window.headroom(now)
        if window.requests is None:
            return free
        # Ours sent since the answer that reported the window; a send older than a
        # whole refill (the default window) has been given back by the bucket anyway.
        after = max(window.basis, now - DEFAULT_RESET_S)
        since = 0
        for t in reversed(self._sends):
            if t <= after:
                break
            since += 1
        left = free - since / window.requests
        # A bucket holding less than one request answers the next with a 429: as the
        # filter reads it, that is no headroom (not the sliver a second of refill adds).
        return left if left * window.requests >= 1.0 - 1e-9 else 0.0

    def exhausted_for_s(self) -> float | None:
        """Seconds until every window now at zero has reset (None if none is at zero)."""
        now = self._clock()
        waits = [
            w.reset_at - now
            for w in self._windows.values()
            if w.fraction <= 0.0 and w.reset_at > now
        ]
        if now < self._blocked_until:
            waits.append(self._blocked_until - now)
        return max(waits) if waits else None

    def block_for(self, seconds: float) -> None:
        if math.isnan(seconds):
            return
        seconds = min(max(seconds, 0.0), self.max_block_s)
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def update(self, headers: Mapping[str, str], sent_at: float | None = None) -> None:
        """Read one response's headers (names in any case); `sent_at`, when the request
        they answer was sent (ours sent after it are not in them; None: all are)."""
        h = {}
        for k, v in headers.items():
            name = k.lower()
            if name.startswith(_PREFIXES):
                h[name] = v
        if not h:  # most answers (a local engine's): nothing to read
            return
        now = self._clock()
        basis = now if sent_at is None else sent_at
        for key, names, absolute in _WINDOW_HEADERS:
            self._read(key, h, names, now, absolute=absolute, basis=basis)
        retry_after = h.get("retry-after")
        if retry_after is not None:
            seconds = parse_retry_after(retry_after, wall_now=self._wall(), max_s=self.max_block_s)
            if seconds is not None:
                self.block_for(seconds)

    def _read(
        self,
        key: str,
        h: Mapping[str, str],
        names: tuple[str, str, str],
        now: float,
        *,
        absolute: bool,
        basis: float,
    ) -> None:
        """One window from its `limit`, `remaining` and `reset` headers (`names`)."""
        limit_name, remaining_name, reset_name = names
        limit_text = h.get(limit_name)
        remaining_text = h.get(remaining_name)
        if limit_text is None or remaining_text is None:
            return
        try:
            limit, remaining = float(limit_text), float(remaining_text)
        except ValueError:
            return
        if not (limit > 0 and math.isfinite(limit) and math.isfinite(remaining)):
            return
        reset_in = self._reset_in(h.get(reset_name), absolute=absolute)
        fraction = min(max(remaining / limit, 0.0), 1.0)
        # Only a window of requests counts our sends (a token window would need each
        # request's tokens); an unsuffixed OpenAI window is requests too.
        requests = limit if key.endswith(":requests") or key == "openai" else None
        self._windows[key] = _Window(fraction, now, now + reset_in, requests, basis)

    def _reset_in(self, text: str | None, *, absolute: bool) -> float:
        if text is None:
            return DEFAULT_RESET_S
        if absolute:
            at = parse_rfc3339(text)
            return DEFAULT_RESET_S if at is None else max(at - self._wall(), 0.0)
        seconds = parse_duration(text)
        if seconds is None:
            return DEFAULT_RESET_S
        if seconds > _EPOCH_THRESHOLD:
            return max(seconds - self._wall(), 0.0)
        return seconds


class LocalLimits:
    """The router's own requests-per-minute and tokens-per-minute for one target.

    With shared state (router/replicas) the limits are global and counted in Redis;
    these local counts are then the fallback, and `share` (this replica's part of a
    global limit, 1/replicas) scales them while Redis is out of reach. `on_record`
    sees every `record(tokens, requests=...)`, so shared state can count it too.
    """

    __slots__ = (
        "_clock",
        "_log",
        "_requests",
        "_tokens",
        "_window",
        "on_record",
        "rpm",
        "share",
        "tpm",
    )

    def __init__(
        self, rpm: int | None, tpm: int | None, clock: Clock, *, window_s: float = 60.0
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._window = window_s
        self._log: deque[tuple[float, int, int]] = deque()
        self._requests = 0
        self._tokens = 0
        #: the fraction of `rpm`/`tpm` this replica may use on its own (0 < share <= 1)
        self.share = 1.0
        #: called with (tokens, requests) on every `record`
        self.on_record: Callable[[int, int], None] | None = None

    def limits(self) -> tuple[int | None, int | None]:
        """(rpm, tpm) in force here: the configured limits times `share`, rounded down."""
        share = self.share
        rpm = None if self.rpm is None else max(math.floor(self.rpm * share), 1)
        tpm = None if self.tpm is None else max(math.floor(self.tpm * share), 1)
        return rpm, tpm

    def usage(self) -> tuple[int, int]:
        """(requests, tokens) recorded over the last window."""
        self._expire()
        return self._requests, self._tokens

    def allow(self, tokens: int = 0) -> bool:
        """Would one more request of `tokens` tokens stay within the limits?"""
        if self.rpm is None and self.tpm is None:  # none configured (most targets)
            return True
        requests, used = self.usage()
        rpm, tpm = self.limits()
        if rpm is not None and requests + 1 > rpm:
            return False
        return tpm is None or used + tokens <= tpm

    @property
    def within(self) -> bool:
        """Some budget is left for another request (whatever its size)."""
        if self.rpm is None and self.tpm is None:  # none configured (most targets)
            return True
        requests, used = self.usage()
        rpm, tpm = self.limits()
        return (rpm is None or requests < rpm) and (tpm is None or used < tpm)

    def record(self, tokens: int, *, requests: int = 1) -> None:
        """Count a request and its tokens (`requests=0` adds tokens to the window only)."""
        if self.rpm is None and self.tpm is None:
            return
        self._expire()
        self._log.append((self._clock(), requests, tokens))
        self._requests += requests
        self._tokens += tokens
        if self.on_record is not None:
            self.on_record(tokens, requests)

    def _expire(self) -> None:
        horizon = self._clock() - self._window
        log = self._log
        while log and log[0][0] <= horizon:
            _, requests, tokens = log.popleft()
            self._requests -= requests
            self._tokens -= tokens
