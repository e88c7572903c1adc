"""What policies see and return: typed requests, immutable target snapshots, plans.

Policies are pure: they take a `RoutingRequest` and `TargetView` snapshots (made by
`signals/`) and return a ranked `Plan`. No I/O, no clock of their own; randomness
comes in through `PlanContext.rng`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from router.config import Price, Slo
from router.upstream.base import Endpoint
from router.values import value

BreakerState = Literal["closed", "open", "half_open"]

#: the quantile points every TTFT sketch reports
QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


@value
class RoutingRequest:
    """One conversational turn, as far as routing cares."""

    route: str
    prompt_tokens: int
    max_output_tokens: int | None = None
    stream: bool = True
    #: a stable key for the conversation (x-session-id, `user`, or a prefix hash)
    session_key: str | None = None
    #: the target that served this conversation's previous turn, if still remembered
    affinity_target: str | None = None
    #: which OpenAI endpoint the client called (`completions` is the legacy one)
    endpoint: Endpoint = "chat"


@value
class EngineView:
    """The last scrape of a vLLM engine's /metrics."""

    waiting: float
    running: float
    kv_usage: float
    age_s: float
    stale: bool
    #: mean TTFT over the last scrape interval, from histogram _sum/_count deltas
    recent_ttft_s: float | None = None
    #: sequences the engine runs at once (its --max-num-seqs): from YAML, or learned
    #: as the running count seen while requests waited; None while unknown
    capacity: float | None = None
    #: the engine's own median TTFT over its histogram's window (anyone's requests)
    ttft_median_s: float | None = None
    #: requests in that window
    ttft_seen: float = 0.0
    #: the most sequences a scrape has seen running (a lower bound on the batch size)
    proven_running: float = 0.0
    #: whether any scrape has shown requests waiting (or the router moved a turn out
    #: of the engine's queue); False: the batch is believed to hold twice the most
    #: seen running (a slow start: `predict.waiting_ahead`) until the engine shows a queue
    queue_seen: bool = True
    #: seconds between tokens over the last second that decoded any (the engine's
    #: inter-token latency histogram, `signals.engine`): the batch's decode pace now
    decode_s: float | None = None
    #: scrapes failed since the last good one, and the kind of the last failure
    #: (`router.vocabulary.ScrapeFailure`): why a stale engine is stale
    scrape_failures: int = 0
    last_scrape_failure: str | None = None


@value
class TargetView:
    """An immutable snapshot of one target's live signals."""

    name: str
    kind: str
    price: Price
    breaker: BreakerState = "closed"
    #: the breaker lets an attempt through now (closed, or the half-open probe is free)
    available: bool = True
    in_flight: int = 0
    #: peak-EWMA of TTFT in seconds (the prior until measured)
    ttft_ewma_s: float = 0.5
    #: (quantile, seconds) pairs for QUANTILES, from the decaying sketch (or the prior)
    ttft_quantiles: tuple[tuple[float, float], ...] = ()
    ttft_samples: int = 0
    #: the sketch's samples decayed to now (about those of the last minute): how sure
    ttft_evidence: float = 0.0
    #: (quantile, seconds) optimistic bounds for QUANTILES given that evidence (0 unmeasured);
    #: read them with `optimistic_points()`, which computes them from `optimistic_from`
    ttft_optimistic: tuple[tuple[float, float], ...] = ()
    #: TTFT seen when the target had nothing queued: the base of the queueing model
    unloaded_ttft_s: float = 0.5
    #: vLLM: (quantile, seconds) of the TTFTs of turns that found a slot free (their
    #: prefill and the batch's step time at today's load); () until there are some
    free_ttft_quantiles: tuple[tuple[float, float], ...] = ()
    #: seconds per output token after the first
    tpot_s: float | None = None
    #: turns completed per second, recently (the service rate behind the queue model)
    completion_rate: float | None = None
    mean_output_tokens: float | None = None
    #: 1.0 = all of the provider's rate limit left, 0.0 = none (1.0 if unknown)
    ratelimit_headroom: float = 1.0
    #: the router's own rpm/tpm limits still allow a turn
    within_local_limits: bool = True
    max_context_tokens: int | None = None
    engine: EngineView | None = None
    #: the YAML prior, expected_ttft_ms in seconds
    prior_ttft_s: float = 0.5
    #: computes `ttft_optimistic` at its first use when the snapshot left it out. The
    #: signals do: only exploration reads the bounds (a bound per quantile per target
    #: per turn was ~2.5 % of a round-robin turn's instructions), and it reads them
    #: within the plan that took the snapshot, so they are what they would have been.
    #: (Asked with `ttft_evidence`, the evidence the bounds are for.)
    optimistic_from: OptimisticBounds | None = field(default=None, repr=False, compare=False)
    #: predictions made from this snapshot, by quantile (`predict.predict_ttft_s`): a
    #: plan, its hedge delay and its backup ask for the same few a dozen times a turn
    #: (not an argument: a `dataclasses.replace` of a view starts with none)
    predicted: dict[float, float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: optimistic TTFTs asked of `optimistic_from`, by quantile (the same kind of memo)
    optimistic: dict[float, float] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def ttft_quantile(self, q: float) -> float:
        """TTFT at quantile q, interpolated between the sketch's points."""
        return interpolate(self.ttft_quantiles, q, self.ttft_ewma_s)

    def optimistic_points(self) -> tuple[tuple[float, float], ...]:
        """`ttft_optimistic`, computed (once) if the snapshot left it to its first use."""
        points = self.ttft_optimistic
        if not points and self.optimistic_from is not None:
            points = self.optimistic_from.lower_bounds(self.ttft_evidence)
            # A memo of a value the snapshot stands for, not a change of the snapshot.
            object.__setattr__(self, "ttft_optimistic", points)
            object.__setattr__(self, "optimistic_from", None)
        return points

    def ttft_optimistic_quantile(self, q: float) -> float:
        """What TTFT at quantile q may well be, given how little was measured: from
        the snapshot's points, or only the bounds that interpolation at q reads (the
        two around it, not one per quantile: exploration asks for one q per target)."""
        source = self.optimistic_from
        if source is not None and not self.ttft_optimistic:
            value = self.optimistic.get(q)
            if value is None:
                value = self.optimistic[q] = source.lower_bound_at(q, self.ttft_evidence)
            return value
        points = self.ttft_optimistic
        return interpolate(points, q, 0.0) if points else self.ttft_quantile(q)


def interpolate(points: tuple[tuple[float, float], ...], q: float, default: float) -> float:
    """The value at q, linear between (quantile, value) points; `default` without any."""
    if not points:
        return default
    if q <= points[0][0]:
        return points[0][1]
    for (q0, v0), (q1, v1) in itertools.pairwise(points):
        if q <= q1:
            return v0 + (v1 - v0) * (q - q0) / (q1 - q0)
    return points[-1][1]


@value
class Candidate:
    """A target that passed the filters, with what the policy predicted for it."""

    name: str
    predicted_ttft_s: float
    expected_cost_usd: float
    score: float


@value
class Plan:
    """Targets best-first (the order of fallback and hedging), and why."""

    candidates: tuple[Candidate, ...]
    reason: str
    #: (target, why it was filtered out)
    rejected: tuple[tuple[str, str], ...] = ()

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.candidates)


class OptimisticBounds(Protocol):
    """Where a view's optimistic TTFT bounds come from (the TTFT sketch)."""

    def lower_bounds(self, evidence: float | None = None) -> tuple[tuple[float, float], ...]:
        """(q, optimistic value) for each of the sketch's quantiles."""
        ...

    def lower_bound_at(self, q: float, evidence: float) -> float:
        """`interpolate(self.lower_bounds(evidence), q, 0.0)`, exactly."""
        ...


class Budget(Protocol):
    """A share of recent turns that may do something costly (explore)."""

    def record_turn(self) -> None: ...

    def try_spend(self) -> bool: ...


@dataclass(slots=True)
class PlanContext:
    """What a policy may use besides the request and the views."""

    rng: random.Random
    slo: Slo | None = None
    #: the route's exploration share; 0 turns exploration off
    exploration: float = 0.0
    #: the route's exploration budget (kept across turns by the route's runtime)
    explore: Budget | None = None


class Policy(Protocol):
    """Ranks the eligible targets of a route for one turn."""

    def plan(
        self, request: RoutingRequest, targets: Sequence[TargetView], ctx: PlanContext
    ) -> Plan: ...
