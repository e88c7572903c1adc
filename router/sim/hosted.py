"""A hosted-API-like server (think OpenAI or Groq) behind the OpenAI API.

The model, per request, in this order:

1. Rate limits per API key (the Authorization bearer; `anonymous` without one):
   requests and tokens per minute (`router.sim.ratelimit`). Every answer carries
   `x-ratelimit-*` headers; a request over a limit gets 429, `Retry-After`
   (whole seconds, rounded up), `retry-after-ms` and OpenAI's 429 body.
2. 5xx bursts: with `error_burst_probability` a burst starts, and it and the
   next `error_burst_length - 1` requests get `error_status` with OpenAI's
   server-error body (outages come in clumps, not as independent coin flips).
3. TTFT is lognormal with median `ttft_median_s` and shape `ttft_sigma`; with
   `stall_probability` a stall of `stall_s` is added (hosted APIs have
   multi-second tails: modelstats saw p99s of 2.1-21x the p50 across ten APIs).
   Tokens then follow every `itl_s`. The server has no
   queue: a hosted API is elastic until its rate limit.

All randomness comes from one injected `random.Random`, so a run with the same
seed and the same request order is reproducible. A request carrying the
`x-sim-draw-key` header draws its TTFT (and stall) from a generator seeded by the
backend's `salt` and that key instead, whatever the order of requests: runs that
compare policies then give the same turn the same draw on the same server (common
random numbers), and `draw(key)` tells in advance what a request would get (the
routing benchmark's hindsight oracle).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from router.clock import Clock
from router.sim.backend import Generation, NoLifecycle, Rejection
from router.sim.behaviour import Behaviour
from router.sim.openai_server import FixedGeneration, output_tokens
from router.sim.ratelimit import RateLimiter
from router.sim.server import SimServer
from router.sim.wire import SimRequest, error_body

#: a request header whose value keys the request's own TTFT draw (see the docstring)
DRAW_KEY_HEADER = "x-sim-draw-key"


class HostedParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_median_s: float = Field(default=0.5, gt=0.0)
    ttft_sigma: float = Field(default=0.35, ge=0.0)
    stall_probability: float = Field(default=0.01, ge=0.0, le=1.0)
    stall_s: float = Field(default=3.0, ge=0.0)
    itl_s: float = Field(default=0.01, ge=0.0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    error_burst_probability: float = Field(default=0.0, ge=0.0, le=1.0)
    error_burst_length: int = Field(default=5, ge=1)
    error_status: int = Field(default=503, ge=500, le=599)


class HostedBackend(NoLifecycle):
    def __init__(
        self, params: HostedParams, rng: random.Random, clock: Clock, *, salt: str = ""
    ) -> None:
        self.params = params
        self._rng = rng
        self._salt = salt
        self.limiter = RateLimiter(params.rpm, params.tpm, clock)
        self._burst_left = 0

    def begin(
        self, request: SimRequest, behaviour: Behaviour, headers: Mapping[str, str]
    ) -> Generation | Rejection:
        p = self.params
        n = output_tokens(request, behaviour)
        decision = self.limiter.check(request.api_key or "anonymous", request.prompt_tokens + n)
        if not decision.allowed:
            wait = decision.retry_after_s
            limit_headers = {
                **decision.headers,
                "Retry-After": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(math.ceil(wait * 1000)),
            }
            kind = decision.limited_by or "requests"
            message = (
                f"Rate limit reached for {kind} per min (RPM/TPM) on the simulated "
                f"organisation. Please try again in {wait:.3f}s."
            )
            return Rejection(429, error_body(message, kind, "rate_limit_exceeded"), limit_headers)
        if self._burst_left == 0 and self._rng.random() < p.error_burst_probability:
            self._burst_left = p.error_burst_length
        if self._burst_left > 0:
            self._burst_left -= 1
            message = "The server had an error while processing your request. Sorry about that!"
            return Rejection(p.error_status, error_body(message), decision.headers)
        key = headers.get(DRAW_KEY_HEADER)
        ttft = self.draw(key)[0] if key is not None else self.sample_ttft()
        return FixedGeneration(n, ttft, p.itl_s, decision.headers)

    def sample_ttft(self) -> float:
        return sample_ttft(self.params, self._rng)[0]

    def draw(self, key: str) -> tuple[float, bool]:
        """The TTFT a request keyed `key` gets, and whether it includes a stall."""
        return keyed_draw(self.params, self._salt, key)


def sample_ttft(params: HostedParams, rng: random.Random) -> tuple[float, bool]:
    """One TTFT from `rng`, and whether it includes a stall."""
    ttft = rng.lognormvariate(math.log(params.ttft_median_s), params.ttft_sigma)
    stalled = rng.random() < params.stall_probability
    return (ttft + params.stall_s if stalled else ttft), stalled


def keyed_draw(params: HostedParams, salt: str, key: str) -> tuple[float, bool]:
    """The draw of a request carrying `x-sim-draw-key: key` on a backend salted `salt`."""
    return sample_ttft(params, random.Random(f"{salt}:{key}"))


class HostedSim(SimServer):
    """A hosted-API-like server; pass `rng=random.Random(seed)` for reproducible runs."""

    def __init__(
        self,
        params: HostedParams | None = None,
        behaviour: Behaviour | None = None,
        *,
        rng: random.Random | None = None,
        model: str = "sim-model",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        self.hosted = HostedBackend(params or HostedParams(), rng or random.Random(0), clock)
        super().__init__(
            self.hosted,
            behaviour=behaviour,
            model=model,
            host=host,
            port=port,
            clock=clock,
            max_records=max_records,
        )
