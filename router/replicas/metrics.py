"""The shared state's health as Prometheus metrics, read at scrape time.

firsttoken_shared_state_up                 1 while Redis is reachable and fast
firsttoken_shared_state_replicas           replicas alive, as last seen in Redis
firsttoken_shared_state_fallbacks_total    operations that used local state
                                           instead, by op (limit: a turn's
                                           limit check, publish, flush, sync)
firsttoken_shared_state_outages_total      times the link went down
firsttoken_shared_state_limit_decisions_total  turns' global-limit checks, by
                                           path (view: on this replica's view
                                           of the counters, no wait; redis: the
                                           exact check in Redis)
firsttoken_shared_state_limit_calls_total  limit calls sent to Redis (flushes
                                           and batches of exact checks)
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.replicas.link import OPS
from router.replicas.state import SharedState


class SharedStateCollector(Collector):
    def __init__(self, state: SharedState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        state = self._state
        up = GaugeMetricFamily(
            "firsttoken_shared_state_up",
            "1 while the shared state (Redis) is reachable; 0 while replicas route on local state",
        )
        up.add_metric([], 1.0 if state.up else 0.0)
        replicas = GaugeMetricFamily(
            "firsttoken_shared_state_replicas",
            "Router replicas alive, as last seen in the shared state",
        )
        replicas.add_metric([], float(state.replicas))
        fallbacks = CounterMetricFamily(
            "firsttoken_shared_state_fallbacks",
            "Shared-state operations that fell back to local state (Redis down or slow)",
            labels=["op"],
        )
        for op in OPS:
            fallbacks.add_metric([op], float(state.link.fallbacks[op]))
        outages = CounterMetricFamily(
            "firsttoken_shared_state_outages",
            "Times the shared state became unavailable",
        )
        outages.add_metric([], float(state.link.outages))
        decisions = CounterMetricFamily(
            "firsttoken_shared_state_limit_decisions",
            "Global-limit checks of turns, by path: this replica's view (no wait) or Redis",
            labels=["path"],
        )
        for path in ("view", "redis"):
            decisions.add_metric([path], float(state.limits.decided[path]))
        calls = CounterMetricFamily(
            "firsttoken_shared_state_limit_calls",
            "Global-limit calls sent to Redis (flushes and batches of exact checks)",
        )
        calls.add_metric([], float(state.limits.counters.calls))
        yield from (up, replicas, fallbacks, outages, decisions, calls)
