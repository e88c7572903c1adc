"""Per-key request and token limits the way OpenAI reports them.

Each API key has two token buckets, requests per minute and tokens per minute,
each refilled continuously (`limit / 60` per second) up to `limit`. A request
costs one request and `prompt_tokens + max_tokens` tokens (OpenAI counts the
requested completion up front). Headers name the limit, what remains and how
long until the bucket is full again, in OpenAI's duration format (`1s`, `6m0s`,
`12ms`, `1.574s`). A request that does not fit is refused with the time until it
would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from router.clock import Clock


def openai_duration(seconds: float) -> str:
    """Go-style durations as OpenAI's headers use them: `12ms`, `1.5s`, `6m0s`, `1h0m0s`."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    text = f"{round(secs, 3):.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


@dataclass(slots=True)
class _Bucket:
    limit: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.updated) * self.limit / 60.0)
        self.updated = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` fits (0 if it fits now)."""
        missing = min(cost, self.limit) - self.level
        return max(0.0, missing * 60.0 / self.limit)

    def reset_in(self) -> float:
        return (self.limit - self.level) * 60.0 / self.limit


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    headers: dict[str, str]
    #: seconds until the refused request would fit (0 when allowed)
    retry_after_s: float
    #: which limit refused it: "requests" or "tokens"
    limited_by: str | None


class RateLimiter:
    def __init__(self, rpm: int | None, tpm: int | None, clock: Clock) -> None:
        self._rpm = rpm
        self._tpm = tpm
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, key: str, kind: str, limit: int, now: float) -> _Bucket:
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            bucket = self._buckets[(key, kind)] = _Bucket(float(limit), float(limit), now)
        bucket.refill(now)
        return bucket

    def would_allow(self, key: str, tokens: int) -> bool:
        """Whether `check` would allow this request now (nothing is consumed)."""
        now = self._clock()
        for kind, limit, cost in (("requests", self._rpm, 1), ("tokens", self._tpm, tokens)):
            if limit is not None and self._bucket(key, kind, limit, now).wait_for(cost) > 0.0:
                return False
        return True

    def check(self, key: str, tokens: int) -> Decision:
        now = self._clock()
        limits = [("requests", self._rpm, 1), ("tokens", self._tpm, tokens)]
        buckets = [
            (kind, self._bucket(key, kind, limit, now), cost)
            for kind, limit, cost in limits
            if limit is not None
        ]
        waits = [(bucket.wait_for(cost), kind) for kind, bucket, cost in buckets]
        wait, limited_by = max(waits, default=(0.0, None))
        allowed = wait <= 0.0
        if allowed:
            for _, bucket, cost in buckets:
                bucket.level -= min(cost, bucket.limit)
        headers: dict[str, str] = {}
        for kind, bucket, _ in buckets:
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.limit))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{kind}"] = openai_duration(bucket.reset_in())
        return Decision(allowed, headers, 0.0 if allowed else wait, None if allowed else limited_by)
