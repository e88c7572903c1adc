"""The live per-target signals as Prometheus gauges, read at scrape time.

Registered by `router.metrics.Metrics`: the values come from the targets' views
when Prometheus scrapes, so they can never be stale or drift from what the
policies see. (The state replicas share has its own collector,
`router.replicas.metrics`.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.policy.base import TargetView

BREAKER_VALUE = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class SignalsCollector(Collector):
    """Breaker, in-flight, rate-limit headroom and engine queue of every target."""

    def __init__(self, views: Callable[[], Iterable[TargetView]]) -> None:
        self._views = views

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the views may not exist yet at registration

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
            "Seconds since the last good engine scrape (since start if none yet)",
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
