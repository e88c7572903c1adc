"""Prometheus metrics, one registry per app (no globals). The table is docs/metrics.md.

Over 400 lines, kept whole: every series the router exports is declared here once,
with its help text, in the order of the table it mirrors (docs/metrics.md); most of
the length is those declarations, and each method is a line or two naming what
happened. The series a turn updates are `router.series`'s lock-free families.

Labels carry only configured names (routes, targets, policy types) and small fixed
vocabularies (outcome, cause, status class, event); never user input such as
session ids, prompts or the model name a client asked for. The vocabularies are
`Literal` types (`router.vocabulary`, `errors.Cause`), so mypy rejects a value
outside them where it is made; what is not typed that way (a plan's free-text
reason, an HTTP status) is folded into its vocabulary here, so no label can grow
without bound.

Live per-target state (breaker, in-flight, engine queue) is read from the signals
at scrape time (`router.signals.metrics`), so it can never be stale or drift.
`configure` is called with every config the router runs (start and reload): it
publishes which targets serve which route and creates the series a route will
have, at zero, so `rate()` sees a turn's first increase and dashboards show 0
rather than no data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Generic, Literal, TypeVar, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router.config import Config
from router.errors import Cause, UpstreamError, UpstreamStatusError
from router.loopcpu import register_process_collectors
from router.policy.base import Candidate, Plan, TargetView
from router.policy.registry import FACTORIES
from router.series import FastCounter, FastHistogram
from router.signals.metrics import SignalsCollector
from router.vocabulary import (
    HedgeEvent,
    Outcome,
    OverheadPhase,
    ParsePlace,
    RelayedCall,
    RelayedCallOutcome,
    ScrapeFailure,
)

M = TypeVar("M", Counter, Gauge, Histogram)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once.

    prometheus_client's `labels()` validates the values and takes a lock on every
    call (about 3 microseconds); a turn records a dozen series. The values are
    bounded (configured names, fixed vocabularies), and so is this memo."""

    __slots__ = ("_memo", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._memo: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._memo.get(values)
        if child is None:
            child = self._memo[values] = self.metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        self._memo.pop(values, None)
        self.metric.remove(*values)


# 10 ms .. 30 s, denser where voice SLOs live (200-800 ms). 0.5 is the bucket the
# deploy rules use as the TTFT SLO threshold: keep it (rules need an exact `le`).
# fmt: off
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5, 2.0,
    3.0, 5.0, 8.0, 12.0, 20.0, 30.0,
)
# fmt: on
SLO_TTFT_BUCKET = 0.5
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

ReloadOutcome = Literal["ok", "invalid"]

# The vocabularies of the labels that are not configured names.
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
HEDGE_EVENTS: tuple[HedgeEvent, ...] = get_args(HedgeEvent)
OVERHEAD_PHASES: tuple[OverheadPhase, ...] = get_args(OverheadPhase)
RELOAD_OUTCOMES: tuple[ReloadOutcome, ...] = get_args(ReloadOutcome)
PARSE_PLACES: tuple[ParsePlace, ...] = get_args(ParsePlace)
#: the target label of a turn that no target answered (all failed, none eligible, or
#: the client left before the first token)
NO_TARGET = "none"


def cause_label(cause: Cause) -> str:
    """The `cause` label: the cause itself, but a target skipped because its breaker
    opened after the plan was made counts as `error` (no request reached it)."""
    return "error" if cause == "breaker_open" else cause


def status_class(err: UpstreamError) -> str:
    """`4xx` / `5xx` for a status from the target, else the cause (connect, timeout...)."""
    if isinstance(err, UpstreamStatusError):
        klass = err.upstream_status // 100
        return f"{klass}xx" if 1 <= klass <= 5 else "error"
    return cause_label(err.cause)


def policy_type(reason: str) -> str:
    """The decision label: the policy type that prefixes a plan's reason, or `other`."""
    prefix = reason.split(":", 1)[0].split(" ", 1)[0]
    return prefix if prefix in FACTORIES else "other"


class Metrics:
    """Everything the router exports. Methods are named for what happened."""

    def __init__(self, views: Callable[[], Iterable[TargetView]] | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = FastCounter(
            "firsttoken_requests",
            "Turns by route, target that answered (none if no target did) and outcome",
            ["route", "target", "outcome"],
            registry=r,
        )
        self.ttft = FastHistogram(
            "firsttoken_ttft_seconds",
            "Time to first token as the client sees it: arrival to response start "
            "(fallbacks and hedge delays included; a whole answer when not streaming)",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.first_answer = FastHistogram(
            "firsttoken_time_to_first_answer_seconds",
            "Time to the first answer token (content or a tool call) as the client sees "
            "it, from arrival: after any reasoning (streams only)",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = FastHistogram(
            "firsttoken_time_per_output_token_seconds",
            "Seconds per output token after the first",
            ["route", "target"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.duration = FastHistogram(
            "firsttoken_request_duration_seconds",
            "End-to-end turn duration",
            ["route", "target"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.overhead = FastHistogram(
            "firsttoken_router_overhead_seconds",
            "Time the router itself adds: arrival to upstream send (pre_upstream), "
            "upstream first token to client write (first_token_relay)",
            ["phase"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.predicted_ttft = Gauge(
            "firsttoken_predicted_ttft_seconds",
            "Predicted TTFT of each candidate at the route's last decision",
            ["route", "target"],
            registry=r,
        )
        self.score = Gauge(
            "firsttoken_score",
            "Policy score of each candidate at the route's last decision",
            ["route", "target"],
            registry=r,
        )
        self.decisions = FastCounter(
            "firsttoken_decisions",
            "First choice of each plan, by policy type",
            ["route", "target", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "firsttoken_fallbacks",
            "Turns moved to another target before the first token",
            ["route", "from_target", "to_target", "cause"],
            registry=r,
        )
        self.fallbacks_skipped = Counter(
            "firsttoken_fallbacks_skipped",
            "Fallbacks not tried: the target was predicted past its first_token_s",
            ["route", "target"],
            registry=r,
        )
        self.hedges = Counter(
            "firsttoken_hedges",
            "Hedged attempts: started, won, lost (primary won), cancelled; capped (held back"
            " by the route's max_cost_share)",
            ["route", "event"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "firsttoken_upstream_errors",
            "Failed attempts by target and status class",
            ["target", "status_class"],
            registry=r,
        )
        self.tokens = FastCounter(
            "firsttoken_tokens",
            "Tokens by route, target and direction: input, output, and of those the input "
            "read from the target's prompt cache (cached_input) and the output spent "
            "reasoning (reasoning)",
            ["route", "target", "direction"],
            registry=r,
        )
        self.cost = FastCounter(
            "firsttoken_cost_usd",
            "Spend in US dollars from the targets' YAML prices",
            ["route", "target"],
            registry=r,
        )
        self.target_rejections = Counter(
            "firsttoken_target_rejections",
            "Requests a target refused as one it cannot serve (unknown model, unsupported "
            "parameter, context length, endpoint): the turn moved to the next target",
            ["target", "reason"],
            registry=r,
        )
        self.upstream_connections = FastCounter(
            "firsttoken_upstream_connections",
            "Connections upstream requests got, by target: new or reused (keep-alive)",
            ["target", "kind"],
            registry=r,
        )
        self.upstream_pools = Gauge(
            "firsttoken_upstream_pools",
            "Upstream connection pools open: the running config's, plus those of a "
            "reloaded config still finishing their turns",
            registry=r,
        )
        self.rejections = Counter(
            "firsttoken_rejected_requests",
            "Requests answered with an error status before or instead of a turn",
            ["status"],
            registry=r,
        )
        self.relayed_calls = Counter(
            "firsttoken_relayed_calls",
            "Calls relayed to one target without a turn (no hedge, no TTFT sample): on "
            "Responses state stored upstream, and the unary calls around it, by target, "
            "call and outcome",
            ["target", "call", "outcome"],
            registry=r,
        )
        self.reloads = Counter(
            "firsttoken_config_reloads",
            "Policy reloads by outcome (ok, invalid)",
            ["outcome"],
            registry=r,
        )
        self.route_target = Gauge(
            "firsttoken_route_target_info",
            "1 for each target a route lists, from the running config",
            ["route", "target"],
            registry=r,
        )
        self.target_info = Gauge(
            "firsttoken_target_info",
            "1 for each configured target, with its kind and upstream model",
            ["target", "kind", "model"],
            registry=r,
        )
        self.route_slo = Gauge(
            "firsttoken_route_slo_ttft_seconds",
            "The TTFT SLO a route's policy aims at (routes with an slo only)",
            ["route"],
            registry=r,
        )
        self.engine_scrape_failures = Counter(
            "firsttoken_engine_scrape_failures",
            "Failed scrapes of a vLLM engine's /metrics, by reason (timeout, connect,"
            " status, page, transport, unexpected)",
            ["target", "reason"],
            registry=r,
        )
        self.slow_streams = Counter(
            "firsttoken_slow_streams",
            "Streams that slowed to a trickle after their first token; the target was "
            "marked degraded",
            ["route", "target"],
            registry=r,
        )
        self.client_tokens = FastCounter(
            "firsttoken_client_tokens",
            "Tokens by client key name (never the key) and direction (input, output)",
            ["client", "direction"],
            registry=r,
        )
        self.client_cost = FastCounter(
            "firsttoken_client_cost_usd",
            "Spend in US dollars by client key name (never the key)",
            ["client"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "firsttoken_event_loop_lag_seconds",
            "How late the router's event loop ran a timer (sampled every 0.1 s with turns or "
            "sessions in flight, every 1 s without): time every stream on this replica "
            "waited for the router itself",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.body_parses = FastCounter(
            "firsttoken_request_body_parses",
            "Request bodies parsed, by where: on the event loop (small) or in a worker "
            "process (large)",
            ["place"],
            registry=r,
        )
        self._planned: dict[str, set[str]] = {}
        #: each route's last plan's candidates, read by the last-decision gauges when
        #: scraped (a turn stores one tuple instead of setting two gauges per target)
        self._last_candidates: dict[str, tuple[Candidate, ...]] = {}
        # the series a turn records: their own children are a dict lookup away
        # (`router.series`); the last-decision gauges are prometheus_client's, memoised
        self._requests = self.requests.labels
        self._ttft = self.ttft.labels
        self._first_answer = self.first_answer.labels
        self._tpot = self.tpot.labels
        self._duration = self.duration.labels
        self._tokens = self.tokens.labels
        self._cost = self.cost.labels
        self._predicted = Children(self.predicted_ttft)
        self._score = Children(self.score)
        self._decisions = self.decisions.labels
        self._overhead = self.overhead.labels
        self._hedges = Children(self.hedges)
        self._body_parses = self.body_parses.labels
        self._zero_fixed_series()
        if views is not None:
            r.register(SignalsCollector(views))
        self.loop_cpu = register_process_collectors(r)

    def _zero_fixed_series(self) -> None:
        """The series whose labels are a fixed vocabulary, created at zero."""
        for phase in OVERHEAD_PHASES:
            self.overhead.labels(phase)
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        for place in PARSE_PLACES:
            self.body_parses.labels(place)

    # -- the running config ------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """Publish route membership and create each route's series at zero.

        Called at start and after every good reload. Series of routes and targets a
        reload removed stay (a counter must not go backwards) except the per-decision
        gauges and the info gauges, which describe the present only.
        """
        self.route_target.clear()
        self.target_info.clear()
        self.route_slo.clear()
        for t in config.targets:
            self.target_info.labels(t.name, t.kind, t.model).set(1)
        routes = {r.name: r for r in config.routes}
        for route, planned in list(self._planned.items()):
            keep = set(routes[route].targets) if route in routes else set()
            self._forget(route, planned - keep)
        for r in config.routes:
            if r.slo is not None:
                self.route_slo.labels(r.name).set(r.slo.ttft_ms / 1000.0)
            for target in r.targets:
                self.route_target.labels(r.name, target).set(1)
                for outcome in OUTCOMES:
                    self.requests.labels(r.name, target, outcome)
                self.ttft.labels(r.name, target)
                self.first_answer.labels(r.name, target)
                self.tpot.labels(r.name, target)
                self.duration.labels(r.name, target)
                self.tokens.labels(r.name, target, "input")
                self.tokens.labels(r.name, target, "output")
                self.cost.labels(r.name, target)
                self.decisions.labels(r.name, target, policy_type(r.policy.type))
            for outcome in ("error", "client_cancelled"):
                self.requests.labels(r.name, NO_TARGET, outcome)
            if r.hedge is not None:
                for event in HEDGE_EVENTS:
                    self.hedges.labels(r.name, event)

    def _forget(self, route: str, targets: Iterable[str]) -> None:
        planned = self._planned.get(route, set())
        for target in targets:
            self._predicted.remove(route, target)
            self._score.remove(route, target)
            planned.discard(target)

    # -- decisions ---------------------------------------------------------------------

    def decided(self, route: str, plan: Plan) -> None:
        candidates = plan.candidates
        self._last_candidates[route] = candidates
        names = {c.name for c in candidates}
        planned = self._planned.setdefault(route, set())
        if names != planned:
            if planned - names:  # filtered out this time: no prediction was made for them
                self._forget(route, planned - names)
            for name in names - planned:
                self._predicted(route, name).set_function(
                    functools.partial(self._last_decision, route, name, predicted=True)
                )
                self._score(route, name).set_function(
                    functools.partial(self._last_decision, route, name, predicted=False)
                )
            planned |= names
        if candidates:
            self._decisions(route, candidates[0].name, policy_type(plan.reason)).inc()

    def _last_decision(self, route: str, target: str, *, predicted: bool) -> float:
        for c in self._last_candidates.get(route, ()):
            if c.name == target:
                return c.predicted_ttft_s if predicted else c.score
        return math.nan

    # -- attempts ----------------------------------------------------------------------

    def attempt_failed(self, route: str, err: UpstreamError) -> None:
        self.upstream_errors.labels(err.target or "unknown", status_class(err)).inc()
        if isinstance(err, UpstreamStatusError) and err.rejection is not None:
            self.target_rejections.labels(err.target or "unknown", err.rejection).inc()

    def connection_counter(self, target: str) -> Callable[[bool], None]:
        """What an upstream pool calls for each connection a request gets."""
        new = self.upstream_connections.labels(target, "new")
        reused = self.upstream_connections.labels(target, "reused")

        def count(was_reused: bool) -> None:
            (reused if was_reused else new).inc()

        return count

    def fell_back(self, route: str, from_target: str, to_target: str, cause: Cause) -> None:
        self.fallbacks.labels(route, from_target, to_target, cause_label(cause)).inc()

    def fallback_skipped(self, route: str, target: str) -> None:
        self.fallbacks_skipped.labels(route, target).inc()

    def hedge(self, route: str, event: HedgeEvent) -> None:
        self._hedges(route, event).inc()

    # -- turns -------------------------------------------------------------------------

    def turn_done(
        self,
        route: str,
        target: str,
        outcome: Outcome,
        *,
        ttft_s: float | None,
        first_answer_s: float | None = None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        streamed: bool = True,
    ) -> None:
        """One turn that a target answered (`ttft_s` from arrival to response start); a
        unary answer (`streamed` false) has no time per output token."""
        self._requests(route, target, outcome).inc()
        if first_answer_s is not None:
            self._first_answer(route, target).observe(first_answer_s)
        if ttft_s is not None:
            self._ttft(route, target).observe(ttft_s)
            if streamed and completion_tokens > 1:
                tpot = max(0.0, duration_s - ttft_s) / (completion_tokens - 1)
                self._tpot(route, target).observe(tpot)
        self._duration(route, target).observe(duration_s)
        if prompt_tokens:
            self._tokens(route, target, "input").inc(prompt_tokens)
        if completion_tokens:
            self._tokens(route, target, "output").inc(completion_tokens)
        if cached_tokens:
            self._tokens(route, target, "cached_input").inc(cached_tokens)
        if reasoning_tokens:
            self._tokens(route, target, "reasoning").inc(reasoning_tokens)
        if cost_usd:
            self._cost(route, target).inc(cost_usd)

    def turn_unanswered(self, route: str, *, cancelled: bool) -> None:
        """A turn no target answered: all failed or none was eligible, or the client left
        before the first token."""
        outcome = "client_cancelled" if cancelled else "error"
        self._requests(route, NO_TARGET, outcome).inc()

    def overhead_observed(self, phase: OverheadPhase, seconds: float) -> None:
        self._overhead(phase).observe(seconds)

    def loop_lag_observed(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)

    def body_parsed(self, place: ParsePlace) -> None:
        self._body_parses(place).inc()

    def relayed_call(self, target: str, call: RelayedCall, outcome: RelayedCallOutcome) -> None:
        self.relayed_calls.labels(target, call, outcome).inc()

    def rejected(self, status: int) -> None:
        self.rejections.labels(str(status) if 100 <= status <= 599 else "other").inc()

    def engine_scrape_failed(self, target: str, reason: ScrapeFailure) -> None:
        self.engine_scrape_failures.labels(target, reason).inc()

    def stream_degraded(self, route: str, target: str) -> None:
        self.slow_streams.labels(route, target).inc()

    def client_usage(
        self, client: str, prompt_tokens: int, completion_tokens: int, cost_usd: float
    ) -> None:
        """Usage of one client key, labelled by its configured name."""
        self.client_tokens.labels(client, "input").inc(prompt_tokens)
        self.client_tokens.labels(client, "output").inc(completion_tokens)
        self.client_cost.labels(client).inc(cost_usd)

    def reloaded(self, outcome: ReloadOutcome) -> None:
        self.reloads.labels(outcome).inc()
