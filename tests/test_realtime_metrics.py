"""The realtime metrics: documented, bounded, and fed by `SessionEvents`."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from router.realtime.usage import RealtimeUsage
from router.realtime_metrics import RealtimeMetrics

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_every_realtime_metric_is_documented() -> None:
    registry = CollectorRegistry()
    RealtimeMetrics(registry)
    text = DOCS.read_text()
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in text, name


def test_labels_stay_in_their_vocabulary() -> None:
    registry = CollectorRegistry()
    metrics = RealtimeMetrics(registry)
    usage = RealtimeUsage(text_input=10, cached_audio_input=5, audio_output=20)
    metrics.realtime_response_done("voice", "rt", "weird", usage=usage, cost_usd=0.5, client="app")
    value = registry.get_sample_value
    labels = {"route": "voice", "target": "rt"}
    assert value("firsttoken_realtime_responses_total", {**labels, "status": "other"}) == 1
    assert value("firsttoken_realtime_tokens_total", {**labels, "kind": "cached_input"}) == 5
    assert value("firsttoken_realtime_cost_usd_total", labels) == 0.5
    metrics.session_opened("voice", "rt")
    metrics.upstream_connected("voice", "rt", 0.05)
    metrics.upstream_connected("voice", "rt2", 0.07)  # a migration's connect counts too
    connects = {"target": "rt2"}
    assert value("firsttoken_realtime_connect_seconds_count", connects) == 1
    metrics.migrated("voice", "rt", "rt2", "session_expired", 0.2)
    assert value("firsttoken_realtime_sessions", labels) == 0
    assert value("firsttoken_realtime_sessions", {"route": "voice", "target": "rt2"}) == 1
    migrations = {"route": "voice", "reason": "session_expired"}
    assert value("firsttoken_realtime_migrations_total", migrations) == 1
