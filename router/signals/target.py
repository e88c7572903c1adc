"""All the live signals of one target, and the handle that measures one attempt.

`TargetSignals` owns the estimators of `ttft`, `inflight`, `breaker`, `ratelimit`
and `engine` for one target and turns them into an immutable `TargetView`.
`begin()` hands out an `Attempt`, which wraps the whole stream as tower's
`load::PeakEwma` handle does: TTFT is recorded at the first content token, the
outcome when the stream ends, and `release()` (idempotent) in `finally`.

Who is at fault decides what is recorded:

- timeouts, connect errors, 5xx, 408/409/425 and protocol errors count toward the
  breaker; a first-token timeout is also a censored TTFT sample (TTFT >= elapsed);
- a 429 (or a 503 or other retryable status with Retry-After) opens the breaker
  for the time the provider asked, or until its exhausted rate-limit window resets;
- other 4xx are the client's fault and leave the target untouched;
- cancellation (the client left, or a hedge loser) is nobody's verdict, but the
  wait is a censored sample (TTFT > the time waited) for the sketch's Kaplan-Meier
  estimate, so a target that keeps losing hedges does not keep looking fast
  (survivorship bias), and one that wins its races does not look slow.

Just over 400 lines, kept whole: an `Attempt` reports into its target's estimators
(what is recorded depends on how the attempt began: alone, into a free slot, as a
probe), and splitting the two would spread one estimator's bookkeeping over two
modules.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import Literal

from router.clock import Clock
from router.config import SignalsConfig, TargetConfig
from router.errors import UpstreamError, UpstreamStatusError, UpstreamTimeout
from router.policy.base import EngineView, TargetView
from router.signals.breaker import Breaker, OpenCause
from router.signals.engine import EngineSample, EngineTracker
from router.signals.inflight import InFlight, Lease
from router.signals.ratelimit import LocalLimits, ProviderLimits
from router.signals.ttft import DecayingQuantiles, Ewma, PeakEwma

Outcome = Literal["finished", "failed", "cancelled"]

#: forward-decay time constant and size of the TTFT quantile sketch: tail
#: quantiles need more history than the EWMA's `ewma_tau_s`
QUANTILE_TAU_S = 60.0
QUANTILE_SIZE = 256


class TargetSignals:
    """Measures one target; `view()` is what policies see."""

    def __init__(
        self,
        config: TargetConfig,
        signals: SignalsConfig,
        clock: Clock,
        *,
        wall_clock: Clock = time.time,
        quantile_tau_s: float = QUANTILE_TAU_S,
        quantile_size: int = QUANTILE_SIZE,
    ) -> None:
        self.config = config
        self._clock = clock
        prior = config.expected_ttft_ms / 1000.0
        tau = signals.ewma_tau_s
        self.ttft = PeakEwma(tau, prior, clock)
        self.ttft_sketch = DecayingQuantiles(quantile_tau_s, prior, clock, size=quantile_size)
        #: vLLM: the TTFT of turns that found a slot free (prefill and the batch's step
        #: time, at today's load), the base the queue's wait is added to
        self.free_ttft = DecayingQuantiles(quantile_tau_s, prior, clock, size=quantile_size)
        self.unloaded_ttft = Ewma(tau, clock)
        self.tpot = Ewma(tau, clock)
        self.output_tokens = Ewma(tau, clock)
        self.in_flight = InFlight()
        self.breaker = Breaker(
            failures=signals.breaker_failures,
            base_s=signals.breaker_base_s,
            max_s=signals.breaker_max_s,
            clock=clock,
        )
        self.provider_limits = ProviderLimits(clock, wall_clock)
        self.local_limits = LocalLimits(config.rpm, config.tpm, clock)
        self.engine = EngineTracker(signals.engine_stale_after_s, clock, config.max_num_seqs)
        self.completion_window_s = tau
        self._degraded_cooldown_s = signals.degraded_cooldown_s
        self._completions: deque[float] = deque()
        #: when the last TTFT (or censored) sample was taken; None: never
        self.measured_at: float | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def prior_ttft_s(self) -> float:
        return self.config.expected_ttft_ms / 1000.0

    def reconfigure(self, config: TargetConfig, signals: SignalsConfig) -> None:
        """Take a reloaded config for the same target, keeping what was measured."""
        self.config = config
        prior = self.prior_ttft_s
        self.ttft.set_prior(prior)
        self.ttft_sketch.set_prior(prior)
        for ewma in (self.ttft, self.unloaded_ttft, self.tpot, self.output_tokens):
            ewma.tau_s = signals.ewma_tau_s
        self.completion_window_s = signals.ewma_tau_s
        self.breaker.reconfigure(
            failures=signals.breaker_failures,
            base_s=signals.breaker_base_s,
            max_s=signals.breaker_max_s,
        )
        self.local_limits.rpm, self.local_limits.tpm = config.rpm, config.tpm
        self.engine.stale_after_s = signals.engine_stale_after_s
        self.engine.capacity = config.max_num_seqs
        self._degraded_cooldown_s = signals.degraded_cooldown_s

    def cooldown_from_peer(self, seconds: float, cause: OpenCause) -> bool:
        """Another replica opened this target's breaker (router/replicas): stay off it
        for `seconds`; a provider's Retry-After also holds its headroom at zero.
        Returns whether it changed anything."""
        if cause == "retry_after":
            self.provider_limits.block_for(seconds)
        return self.breaker.open_remote(seconds)

    def degraded(self, seconds_per_token: float) -> None:
        """A stream slowed to a trickle mid-answer: learn its pace, and stay off the
        target for `degraded_cooldown_s` (then the breaker's half-open probe)."""
        self.tpot.observe(seconds_per_token)
        if self._degraded_cooldown_s > 0:
            self.breaker.open_for(self._degraded_cooldown_s)

    def engine_update(self, sample: EngineSample) -> None:
        """Where the engine scraper pushes each good scrape."""
        self.engine.update(sample)

    def begin(self, prompt_tokens: int, *, representative: bool = True) -> Attempt:
        """Start measuring one attempt; the caller must `release()` it in `finally`.

        In half-open this takes the breaker's single probe; `Attempt.admitted` is
        False if the breaker (open, or probe taken) would not have let it through.
        An attempt that is not `representative` of a turn (an active probe's
        one-word prompt has no prefill to speak of) is not a sample of the unloaded
        TTFT, only of the sketch.
        """
        unloaded = representative and self.in_flight.count == 0 and self._engine_idle()
        free = representative and self._slot_free()
        half_open = self.breaker.state == "half_open"
        admitted = self.breaker.try_acquire()
        self.local_limits.record(prompt_tokens)
        return Attempt(
            self,
            prompt_tokens,
            self.in_flight.acquire(),
            admitted=admitted,
            probe=half_open and admitted,
            unloaded=unloaded,
            free=free,
        )

    def view(self) -> TargetView:
        config = self.config
        engine = self.engine.view() if config.kind == "vllm" or self.engine.scraped else None
        return TargetView(
            name=config.name,
            kind=config.kind,
            price=config.price,
            breaker=self.breaker.state,
            available=self.breaker.available,
            in_flight=self.in_flight.count,
            ttft_ewma_s=self.ttft.value,
            ttft_quantiles=self.ttft_sketch.quantiles(),
            ttft_samples=self.ttft_sketch.count,
            ttft_evidence=self.ttft_sketch.evidence(),
            ttft_optimistic=self.ttft_sketch.lower_bounds(),
            unloaded_ttft_s=self._unloaded_ttft_s(engine),
            free_ttft_quantiles=self.free_ttft.quantiles() if self.free_ttft.count else (),
            tpot_s=self.tpot.value,
            completion_rate=self.completion_rate(),
            mean_output_tokens=self.output_tokens.value,
            ratelimit_headroom=self.provider_limits.headroom(),
            within_local_limits=self.local_limits.within,
            max_context_tokens=config.max_context_tokens,
            engine=engine,
            prior_ttft_s=self.prior_ttft_s,
        )

    def completion_rate(self) -> float | None:
        """Turns finished per second over the last window (None if none finished)."""
        self._expire_completions()
        if not self._completions:
            return None
        return len(self._completions) / self.completion_window_s

    # -- what an Attempt reports --------------------------------------------------------

    def _engine_idle(self) -> bool:
        if self.config.kind != "vllm":
            return True
        view = self.engine.view()
        return not view.stale and view.waiting == 0

    def _slot_free(self) -> bool:
        """A vLLM target's batch has room now: nothing waits, and (batch size known)
        fewer of our turns run than it holds. Other targets always have room."""
        if self.config.kind != "vllm":
            return True
        view = self.engine.view()
        if view.stale or view.waiting > 0:
            return False
        return view.capacity is None or max(view.running, self.in_flight.count) < view.capacity

    def _unloaded_ttft_s(self, engine: EngineView | None) -> float:
        measured = self.unloaded_ttft.value
        if measured is not None:
            return measured
        # The median of all samples bounds the unloaded TTFT from above; before any of
        # ours, the engine's own median (its histogram) beats a guess.
        if self.ttft_sketch.count:
            return min(self.prior_ttft_s, self.ttft_sketch.quantile(0.5))
        if engine is not None and engine.ttft_median_s is not None:
            return engine.ttft_median_s
        return self.prior_ttft_s

    def _record_ttft(self, seconds: float, unloaded: bool, free: bool) -> None:
        self.measured_at = self._clock()
        self.ttft.observe(seconds)
        if free:
            self.free_ttft.observe(seconds)
        self.ttft_sketch.observe(seconds)
        if unloaded:
            self.unloaded_ttft.observe(seconds)

    def _record_censored_ttft(self, at_least: float, free: bool) -> None:
        self.measured_at = self._clock()
        self.ttft_sketch.observe_censored(at_least)
        if free:
            self.free_ttft.observe_censored(at_least)
        self.ttft.observe_lower_bound(at_least)

    def _record_completion(self, completion_tokens: int | None, tpot: float | None) -> None:
        now = self._clock()
        self._completions.append(now)
        self._expire_completions()
        if completion_tokens is not None:
            self.output_tokens.observe(float(completion_tokens))
        if tpot is not None:
            self.tpot.observe(tpot)
        self.breaker.record_success()

    def _record_failure(self, error: UpstreamError) -> bool:
        """Book a failed attempt; returns whether it gave the breaker a verdict."""
        if isinstance(error, UpstreamStatusError):
            if not error.retryable:
                return False  # the request was bad, not the target
            if error.headers:
                self.provider_limits.update(error.headers)
            wait = error.retry_after_s
            if wait is None and error.upstream_status == 429:
                wait = self.provider_limits.exhausted_for_s()
            if wait is not None:
                if error.upstream_status == 429:
                    self.provider_limits.block_for(wait)
                self.breaker.open_for(wait)
                return True
        self.breaker.record_failure()
        return True

    def _expire_completions(self) -> None:
        horizon = self._clock() - self.completion_window_s
        completions = self._completions
        while completions and completions[0] <= horizon:
            completions.popleft()


class Attempt:
    """One attempt at one target, from `begin()` to `release()`.

    Report at most one outcome (`finished`, `failed` or `cancelled`; later ones are
    ignored), then `release()`. As a context manager it releases on exit, books an
    escaping `UpstreamError` as `failed` and cancellation as `cancelled`.
    """

    __slots__ = (
        "_first_token_at",
        "_free",
        "_lease",
        "_outcome",
        "_owner",
        "_probe",
        "_tokens",
        "_unloaded",
        "_verdict",
        "admitted",
        "prompt_tokens",
        "started_at",
    )

    def __init__(
        self,
        owner: TargetSignals,
        prompt_tokens: int,
        lease: Lease,
        *,
        admitted: bool,
        probe: bool,
        unloaded: bool,
        free: bool = False,
    ) -> None:
        self._owner = owner
        self.prompt_tokens = prompt_tokens
        self._lease = lease
        self.admitted = admitted
        self._probe = probe
        self._unloaded = unloaded
        self._free = free
        self.started_at = owner._clock()
        self._first_token_at: float | None = None
        self._tokens: int | None = None
        self._outcome: Outcome | None = None
        self._verdict = False

    @property
    def target(self) -> str:
        return self._owner.name

    @property
    def ttft_s(self) -> float | None:
        at = self._first_token_at
        return None if at is None else at - self.started_at

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    @property
    def is_probe(self) -> bool:
        return self._probe

    def headers(self, headers: Mapping[str, str]) -> None:
        """The response's headers (rate-limit headroom)."""
        self._owner.provider_limits.update(headers)

    def first_token(self) -> None:
        """The first content token arrived: records TTFT from `begin()` (once)."""
        if self._first_token_at is not None or self._outcome is not None:
            return
        now = self._owner._clock()
        self._first_token_at = now
        self._owner._record_ttft(now - self.started_at, self._unloaded, self._free)

    def token_count(self, n: int) -> None:
        """Output tokens seen so far (a running total, used if usage never comes)."""
        self._tokens = n

    def finished(
        self, prompt_tokens: int | None = None, completion_tokens: int | None = None
    ) -> None:
        """The response ended well; token counts from its usage chunk, if any."""
        if self._outcome is not None:
            return
        self._outcome = "finished"
        self._verdict = True
        owner = self._owner
        completion = completion_tokens if completion_tokens is not None else self._tokens
        tpot = None
        if self._first_token_at is not None and completion is not None and completion > 1:
            tpot = (owner._clock() - self._first_token_at) / (completion - 1)
        owner._record_completion(completion, tpot)
        extra = (completion or 0) + (
            prompt_tokens - self.prompt_tokens if prompt_tokens is not None else 0
        )
        if extra:
            owner.local_limits.record(extra, requests=0)

    def failed(self, error: UpstreamError) -> None:
        if self._outcome is not None:
            return
        self._outcome = "failed"
        owner = self._owner
        self._verdict = owner._record_failure(error)
        if isinstance(error, UpstreamTimeout) and self._first_token_at is None:
            owner._record_censored_ttft(owner._clock() - self.started_at, self._free)

    def cancelled(self) -> None:
        """The client went away or this attempt lost a hedge: not the target's fault."""
        if self._outcome is not None:
            return
        self._outcome = "cancelled"
        if self._first_token_at is None:
            owner = self._owner
            owner._record_censored_ttft(owner._clock() - self.started_at, self._free)

    def release(self) -> None:
        """End the attempt's share of in-flight (idempotent; call it in `finally`)."""
        if self._lease.released:
            return
        self._lease.release()
        if self._probe and not self._verdict:
            self._owner.breaker.release_probe()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, UpstreamError):
                self.failed(exc)
            elif exc is not None and not isinstance(exc, Exception):
                self.cancelled()  # CancelledError and trio's Cancelled are BaseExceptions
        finally:
            self.release()
