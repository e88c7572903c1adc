"""Prometheus metrics, one registry per app (no globals).

Labels carry only configured names (routes, targets) and small fixed vocabularies
(outcome, cause, status class); never user input such as session ids or prompts.
Live per-target state (breaker, in-flight, engine queue) is read from the signals
at scrape time by a collector, so it can never be stale or drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.errors import UpstreamError, UpstreamStatusError
from router.policy.base import Plan, TargetView

# 10 ms .. 30 s, denser where voice SLOs live (200-800 ms).
TTFT_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.65,
    0.8,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    8.0,
    12.0,
    20.0,
    30.0,
)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)

BREAKER_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def status_class(err: UpstreamError) -> str:
    if isinstance(err, UpstreamStatusError):
        return f"{err.upstream_status // 100}xx"
    return err.cause


class _SignalsCollector(Collector):
    def __init__(self, views: Callable[[], Iterable[TargetView]]) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "firsttoken_breaker_state",
            "Breaker per target: 0 closed, 1 half-open, 2 open",
            labels=["target"],
        )
        inflight = GaugeMetricFamily(
            "firsttoken_inflight", "Turns in flight at the router per target", labels=["target"]
        )
        headroom = GaugeMetricFamily(
            "firsttoken_ratelimit_headroom",
            "Provider rate-limit headroom, 1 = all left",
            labels=["target"],
        )
        waiting = GaugeMetricFamily(
            "firsttoken_engine_waiting", "vLLM waiting requests as last scraped", labels=["target"]
        )
        running = GaugeMetricFamily(
            "firsttoken_engine_running", "vLLM running requests as last scraped", labels=["target"]
        )
        kv = GaugeMetricFamily(
            "firsttoken_engine_kv_usage",
            "vLLM KV-cache usage (0-1) as last scraped",
            labels=["target"],
        )
        age = GaugeMetricFamily(
            "firsttoken_engine_scrape_age_seconds",
            "Seconds since the last good engine scrape",
            labels=["target"],
        )
        stale = GaugeMetricFamily(
            "firsttoken_engine_stale", "1 when engine stats are too old to trust", labels=["target"]
        )
        for v in self._views():
            breaker.add_metric([v.name], BREAKER_VALUE[v.breaker])
            inflight.add_metric([v.name], float(v.in_flight))
            headroom.add_metric([v.name], v.ratelimit_headroom)
            if v.engine is not None:
                waiting.add_metric([v.name], v.engine.waiting)
                running.add_metric([v.name], v.engine.running)
                kv.add_metric([v.name], v.engine.kv_usage)
                age.add_metric([v.name], v.engine.age_s)
                stale.add_metric([v.name], 1.0 if v.engine.stale else 0.0)
        yield from (breaker, inflight, headroom, waiting, running, kv, age, stale)


class Metrics:
    """Everything the router exports. Methods are named for what happened."""

    def __init__(self, views: Callable[[], Iterable[TargetView]] | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "firsttoken_requests",
            "Turns by route, target and outcome",
            ["route", "target", "outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            "firsttoken_ttft_seconds",
            "Time to first token seen by the client",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "firsttoken_time_per_output_token_seconds",
            "Seconds per output token after the first",
            ["route", "target"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "firsttoken_request_duration_seconds",
            "End-to-end turn duration",
            ["route", "target"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "firsttoken_router_overhead_seconds",
            "Time the router itself adds: arrival to upstream send (pre_upstream), "
            "upstream first token to client write (first_token_relay)",
            ["phase"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.predicted_ttft = Gauge(
            "firsttoken_predicted_ttft_seconds",
            "Predicted TTFT at the last decision",
            ["route", "target"],
            registry=r,
        )
        self.score = Gauge(
            "firsttoken_score", "Policy score at the last decision", ["route", "target"], registry=r
        )
        self.decisions = Counter(
            "firsttoken_decisions",
            "First choice of each plan, by policy reason",
            ["route", "target", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "firsttoken_fallbacks",
            "Turns moved to another target before the first token",
            ["route", "from_target", "to_target", "cause"],
            registry=r,
        )
        self.hedges = Counter(
            "firsttoken_hedges",
            "Hedged attempts: started, won, lost (primary won), cancelled",
            ["route", "event"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "firsttoken_upstream_errors",
            "Failed attempts by target and status class",
            ["target", "status_class"],
            registry=r,
        )
        self.tokens = Counter(
            "firsttoken_tokens",
            "Tokens by route, target and direction (input, output)",
            ["route", "target", "direction"],
            registry=r,
        )
        self.cost = Counter(
            "firsttoken_cost_usd",
            "Spend in US dollars from the targets' YAML prices",
            ["route", "target"],
            registry=r,
        )
        self.rejections = Counter(
            "firsttoken_rejected_requests",
            "Requests refused before routing, by HTTP status",
            ["status"],
            registry=r,
        )
        self.reloads = Counter(
            "firsttoken_config_reloads",
            "Policy reloads by outcome (ok, invalid)",
            ["outcome"],
            registry=r,
        )
        if views is not None:
            r.register(_SignalsCollector(views))

    # -- decisions ---------------------------------------------------------------------

    def decided(self, route: str, plan: Plan) -> None:
        for c in plan.candidates:
            self.predicted_ttft.labels(route, c.name).set(c.predicted_ttft_s)
            self.score.labels(route, c.name).set(c.score)
        if plan.candidates:
            reason = plan.reason.split(":", 1)[0].split(" ", 1)[0] or "none"
            self.decisions.labels(route, plan.candidates[0].name, reason).inc()

    # -- attempts ----------------------------------------------------------------------

    def attempt_failed(self, route: str, err: UpstreamError) -> None:
        self.upstream_errors.labels(err.target or "unknown", status_class(err)).inc()

    def fell_back(self, route: str, from_target: str, to_target: str, cause: str) -> None:
        self.fallbacks.labels(route, from_target, to_target, cause).inc()

    def hedge(self, route: str, event: str) -> None:
        self.hedges.labels(route, event).inc()

    # -- turns -------------------------------------------------------------------------

    def turn_done(
        self,
        route: str,
        target: str,
        outcome: str,
        *,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        self.requests.labels(route, target, outcome).inc()
        if ttft_s is not None:
            self.ttft.labels(route, target).observe(ttft_s)
            if completion_tokens > 1:
                tpot = max(0.0, duration_s - ttft_s) / (completion_tokens - 1)
                self.tpot.labels(route, target).observe(tpot)
        self.duration.labels(route, target).observe(duration_s)
        if prompt_tokens:
            self.tokens.labels(route, target, "input").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(route, target, "output").inc(completion_tokens)
        if cost_usd:
            self.cost.labels(route, target).inc(cost_usd)

    def overhead_observed(self, phase: str, seconds: float) -> None:
        self.overhead.labels(phase).observe(seconds)

    def rejected(self, status: int) -> None:
        self.rejections.labels(str(status)).inc()

    def reloaded(self, outcome: str) -> None:
        self.reloads.labels(outcome).inc()
