"""All the live signals of one target, and the handle that measures one attempt.

`TargetSignals` owns the estimators of `ttft`, `inflight`, `breaker`, `ratelimit`
and `engine` for one target and turns them into an immutable `TargetView`.
`begin()` hands out an `Attempt`, which wraps the whole stream as tower's
`load::PeakEwma` handle does: TTFT is recorded at the first token of any kind
(reasoning included), the time to first answer (content or a tool call) when that
comes, the outcome when the stream ends, and `release()` (idempotent) in `finally`.
A unary attempt measures no TTFT at all (its latency is a whole answer's). `view(on)`
predicts the figure a route's SLO names (`slo.on: first_token | first_answer`).

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

A call relayed without a turn (`relayed()`: a stored response's GET, a moderation)
gives the breaker its verdict the same way, and nothing else. The module is kept
whole past 400 lines: every verdict on a target is booked here, on one set of
estimators.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque

from router.clock import Clock
from router.config import SignalsConfig, SloOn, TargetConfig
from router.errors import UpstreamError, UpstreamStatusError
from router.policy.base import EngineView, TargetView
from router.signals.attempt import Attempt
from router.signals.breaker import Breaker, OpenCause
from router.signals.engine import EngineSample, EngineTracker
from router.signals.inflight import InFlight
from router.signals.ratelimit import LocalLimits, ProviderLimits
from router.signals.ttft import DecayingQuantiles, Ewma, PeakEwma

__all__ = ["Attempt", "TargetSignals"]  # Attempt lives in attempt.py; realtime imports it here

#: forward-decay time constant and size of the TTFT quantile sketch: tail
#: quantiles need more history than the EWMA's `ewma_tau_s`

QUANTILE_TAU_S = 60.0
QUANTILE_SIZE = 256


def timed_on(
    view: TargetView, ewma_s: float, sketch: DecayingQuantiles, unloaded_s: float
) -> TargetView:
    """`view` with its TTFT figures taken from another latency of the same target (the
    time to first answer, a realtime target's time to transcript): its EWMA, sketch and
    unloaded figure; load, breaker, limits and price stay the target's."""
    return dataclasses.replace(
        view,
        ttft_ewma_s=ewma_s,
        ttft_quantiles=sketch.quantiles(),
        ttft_samples=sketch.count,
        ttft_evidence=sketch.evidence(),
        ttft_optimistic=(),
        optimistic_from=sketch,
        unloaded_ttft_s=unloaded_s,
        free_ttft_quantiles=(),
    )


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
        # the time to the first answer token (after any reasoning), for `slo.on: first_answer`
        self.answer = PeakEwma(tau, prior, clock)
        self.answer_sketch = DecayingQuantiles(quantile_tau_s, prior, clock, size=quantile_size)
        self.unloaded_answer = Ewma(tau, clock)
        self.max_cooldown_s = signals.max_cooldown_s
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
        #: a turn (not a probe) has begun here: the warm-up is over
        self._turn_begun = False

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
        self.answer.set_prior(prior)
        self.answer_sketch.set_prior(prior)
        self.max_cooldown_s = signals.max_cooldown_s
        self.provider_limits.max_block_s = signals.max_cooldown_s
        for ewma in (
            self.ttft,
            self.unloaded_ttft,
            self.answer,
            self.unloaded_answer,
            self.tpot,
            self.output_tokens,
        ):
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
        seconds = self.cooldown_s(seconds)
        if cause == "retry_after":
            self.provider_limits.block_for(seconds)
        return self.breaker.open_remote(seconds)

    def cooldown_s(self, seconds: float) -> float:
        """A cooldown within [0, `signals.max_cooldown_s`]; nan and inf never pass."""
        if math.isnan(seconds):
            return 0.0
        return min(max(seconds, 0.0), self.max_cooldown_s)

    def degraded(self, seconds_per_token: float) -> None:
        """A stream slowed to a trickle mid-answer: learn its pace, and stay off the
        target for `degraded_cooldown_s` (then the breaker's half-open probe)."""
        self.tpot.observe(seconds_per_token)
        if self._degraded_cooldown_s > 0:
            self.breaker.open_for(self._degraded_cooldown_s)

    def engine_update(self, sample: EngineSample) -> None:
        """Where the engine scraper pushes each good scrape."""
        self.engine.update(sample)

    def begin(
        self, prompt_tokens: int, *, measures_ttft: bool = True, representative: bool = True
    ) -> Attempt:
        """Start measuring one attempt; the caller must `release()` it in `finally`.

        In half-open this takes the breaker's single probe; `Attempt.admitted` is
        False if the breaker (open, or probe taken) would not have let it through.
        `measures_ttft=False` (a unary turn): no TTFT sample, not even a censored one.
        An attempt that is not `representative` of a turn (an active probe's
        one-word prompt has no prefill to speak of) is not a sample of the unloaded
        TTFT, only of the sketch.

        The first turn on a vLLM engine that a probe has measured is its warm-up: it
        pays the prefill of a prompt prefix the engine has not cached yet (a route's
        shared system prompt), once. Its TTFT is not a sample: as the only turn sample
        of the engine it would be the engine's p90, free-slot and unloaded TTFT until
        ten newer ones outweigh it, and a policy seldom sends those to a target that
        looks slower than another (issue 17: `latency` sent 0 % of a cold start's
        turns to the fastest engine on 2 of 100 tuning fleets). The probe's TTFT
        stands for the engine until its next turn.
        """
        vllm = self.config.kind == "vllm"
        warmup = (
            representative
            and measures_ttft
            and vllm
            and not self._turn_begun
            and self.ttft_sketch.count > 0
        )
        if representative and measures_ttft:
            self._turn_begun = True
        unloaded = representative and self.in_flight.count == 0 and self._engine_idle()
        # Only a vLLM target's free-slot TTFTs are read (`predict.free_slot_ttft_s`).
        free = representative and vllm and self._slot_free()
        half_open = self.breaker.state == "half_open"
        admitted = self.breaker.try_acquire()
        self.local_limits.record(prompt_tokens)
        if admitted:
            self.provider_limits.sent()
        return Attempt(
            self,
            prompt_tokens,
            self.in_flight.acquire(),
            admitted=admitted,
            probe=half_open and admitted,
            unloaded=unloaded,
            measures_ttft=measures_ttft,
            free=free,
            warmup=warmup,
        )

    def view(self, on: SloOn = "first_token") -> TargetView:
        """What policies see; with `on="first_answer"` its TTFT figures are the time to
        the first answer token."""
        view = self._view()
        if on == "first_token":
            return view
        unloaded_s = self._unloaded_s(self.unloaded_answer, self.answer_sketch, None)
        return timed_on(view, self.answer.value, self.answer_sketch, unloaded_s)

    def _view(self) -> TargetView:
        # A plan makes one per target per turn: each signal is read once, and the
        # breaker's clock once (its `available` reads the state again).
        config = self.config
        kind = config.kind
        engine_tracker = self.engine
        engine = engine_tracker.view() if kind == "vllm" or engine_tracker.scraped else None
        breaker = self.breaker
        state = breaker.state
        sketch = self.ttft_sketch
        free = self.free_ttft
        # Positional: a class called with keywords builds a dict of them first (TargetView
        # by keyword took 990 ns, by position 330; a plan makes one per target). The
        # field each goes to is named beside it; `test_a_view_names_every_signal` checks.
        return TargetView(
            config.name,  # name
            kind,  # kind
            config.price,  # price
            state,  # breaker
            state == "closed" or breaker.available,  # available
            self.in_flight.count,  # in_flight
            self.ttft.value,  # ttft_ewma_s
            sketch.quantiles(),  # ttft_quantiles
            sketch.count,  # ttft_samples
            sketch.evidence(),  # ttft_evidence
            (),  # ttft_optimistic: computed from optimistic_from, if read
            self._unloaded_s(self.unloaded_ttft, sketch, engine),  # unloaded_ttft_s
            free.placed_quantiles() if free.count else (),  # free_ttft_quantiles
            self.tpot.value,  # tpot_s
            self.completion_rate(),  # completion_rate
            self.output_tokens.value,  # mean_output_tokens
            self.provider_limits.headroom(),  # ratelimit_headroom
            self.local_limits.within,  # within_local_limits
            config.max_context_tokens,  # max_context_tokens
            engine,  # engine
            config.expected_ttft_ms / 1000.0,  # prior_ttft_s
            sketch,  # optimistic_from
        )

    def completion_rate(self) -> float | None:
        """Turns finished per second over the last window (None if none finished)."""
        self._expire_completions()
        if not self._completions:
            return None
        return len(self._completions) / self.completion_window_s

    def relayed(self, error: UpstreamError | None) -> None:
        """A call relayed without a turn ended (router/gateway/stateful.py): its
        verdict for the breaker, as a turn's; no TTFT, no completion."""
        if error is None:
            self.breaker.record_success()
        else:
            self._record_failure(error)

    # -- what an Attempt reports --------------------------------------------------------

    def _engine_idle(self) -> bool:
        if self.config.kind != "vllm":
            return True
        view = self.engine.view()
        return not view.stale and view.waiting == 0

    def _slot_free(self) -> bool:
        """A vLLM target's batch has room now, as `predict.slots_needed` reads it:
        nothing waits, and fewer of our turns run than the batch holds (size known),
        or (size unknown) none of ours was sent beyond what the scrape saw running,
        since the policy counts those as waiting. Other targets always have room."""
        if self.config.kind != "vllm":
            return True
        view = self.engine.view()
        if view.stale or view.waiting > 0:
            return False
        if view.capacity is None:
            return self.in_flight.count <= view.running
        return max(view.running, self.in_flight.count) < view.capacity

    def _found_free(self, free: bool, started_at: float) -> bool:
        """An attempt that began with a slot free is a free-slot sample only if no
        scrape saw a queue before its answer: a scrape is up to an interval old when
        the attempt begins, and a burst's turns that queued behind a batch the scrape
        had not yet seen full would teach a drained engine the burst's wait."""
        return free and not self.engine.queued_since(started_at)

    def _found_unloaded(self, unloaded: bool, started_at: float) -> bool:
        """An attempt that began on an idle engine is an unloaded sample only if the
        engine stayed in sight until its answer: across a gap in the scrapes (the
        machine or the engine's API server stalled) its TTFT is the stall's, and one
        4 s sample moved a 150 ms unloaded EWMA to 2.3 s on the real vLLM burst, which
        then priced the fastest engine out for the rest of the burst."""
        if not unloaded or self.config.kind != "vllm":
            return unloaded
        return self.engine.seen_since(started_at)

    def _unloaded_s(
        self, unloaded: Ewma, sketch: DecayingQuantiles, engine: EngineView | None
    ) -> float:
        measured = unloaded.value
        if measured is not None:
            return measured
        # The median of all samples bounds the unloaded TTFT from above; before any of
        # ours, the engine's own median (its histogram) beats a guess.
        if sketch.count:
            return min(self.prior_ttft_s, sketch.median())
        if engine is not None and engine.ttft_median_s is not None:
            return engine.ttft_median_s
        return self.prior_ttft_s

    def _record_ttft(self, seconds: float, unloaded: bool, free: bool = False) -> None:
        self.measured_at = self._clock()
        self.ttft.observe(seconds)
        if self._found_free(free, self.measured_at - seconds):
            self.free_ttft.observe(seconds)
        self.ttft_sketch.observe(seconds)
        if self._found_unloaded(unloaded, self.measured_at - seconds):
            self.unloaded_ttft.observe(seconds)

    def _record_answer(self, seconds: float, unloaded: bool) -> None:
        self.answer.observe(seconds)
        self.answer_sketch.observe(seconds)
        if self._found_unloaded(unloaded, self._clock() - seconds):
            self.unloaded_answer.observe(seconds)

    def _record_censored_ttft(
        self, at_least: float, *, token: bool = True, free: bool = False
    ) -> None:
        """No first token (or, `token=False`, no first answer token) after `at_least`
        seconds: a censored sample for each sketch still waiting."""
        if token:
            self.measured_at = self._clock()
            self.ttft_sketch.observe_censored(at_least)
            if self._found_free(free, self.measured_at - at_least):
                self.free_ttft.observe_censored(at_least)
            self.ttft.observe_lower_bound(at_least)
        self.answer_sketch.observe_censored(at_least)
        self.answer.observe_lower_bound(at_least)

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
            if error.rejection is not None:
                return False  # this target cannot serve this request: not a failure of it
            wait = error.retry_after_s
            if wait is None and error.upstream_status == 429:
                wait = self.provider_limits.exhausted_for_s()
            if wait is not None:
                wait = self.cooldown_s(wait)
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
