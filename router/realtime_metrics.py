"""The realtime sessions' Prometheus metrics: `RealtimeMetrics` is a `SessionEvents`.

It lives beside `router/metrics.py`, on the same registry (the runtime makes
both), so neither grows past one job; `router/realtime/` never imports it.
Labels are configured names (route, target, client key name) and the `Literal`
vocabularies of `router.realtime.events`; a response status outside OpenAI's
four is `other`. Nothing carries a session id, an event or a key.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router.config import Config
from router.errors import UpstreamError
from router.metrics import TTFT_BUCKETS, Children, status_class
from router.realtime.events import MigrationReason, SessionEnd, TranscriptionFailure
from router.realtime.usage import RealtimeUsage

MIGRATION_REASONS: tuple[MigrationReason, ...] = get_args(MigrationReason)
SESSION_ENDS: tuple[SessionEnd, ...] = get_args(SessionEnd)
RESPONSE_STATUSES = ("completed", "cancelled", "failed", "incomplete")
TOKEN_KINDS = ("text_input", "audio_input", "cached_input", "text_output", "audio_output")
CONNECT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
MIGRATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
SESSION_COST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESPONSE_COST_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.sessions = Gauge(
            "firsttoken_realtime_sessions",
            "Realtime sessions open now, by route and the target serving them",
            ["route", "target"],
            registry=r,
        )
        self.ttfa = Histogram(
            "firsttoken_realtime_ttfa_seconds",
            "Time to first audio: response.create (or the commit under server VAD) to "
            "the first response.output_audio.delta, as the router relays it",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.out_of_band_first_delta = Histogram(
            "firsttoken_realtime_out_of_band_first_delta_seconds",
            "Out-of-band responses (conversation: none): their response.create to their "
            "first output delta (audio or text), as the router relays it",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.transcript = Histogram(
            "firsttoken_realtime_transcript_seconds",
            "Time to transcript: a user turn's commit to the first text of its input "
            "transcription (a delta, or the completed transcript), as the router relays it",
            ["route", "target"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.transcription_failures = Counter(
            "firsttoken_realtime_transcription_failures",
            "Committed user turns whose input transcription failed, by cause (server_error:"
            " the target's own, counted by its breaker; other: the audio refused, say)",
            ["route", "target", "cause"],
            registry=r,
        )
        self.migrations = Counter(
            "firsttoken_realtime_migrations",
            "Live sessions moved to a new upstream session, by reason",
            ["route", "reason"],
            registry=r,
        )
        self.migration_seconds = Histogram(
            "firsttoken_realtime_migration_seconds",
            "From the upstream's failure to the new upstream session ready (replay sent)",
            ["route"],
            buckets=MIGRATION_BUCKETS,
            registry=r,
        )
        self.connect = Histogram(
            "firsttoken_realtime_connect_seconds",
            "Upgrade to session.created at a target, for every upstream session opened "
            "(a session's first, and each migration's)",
            ["target"],
            buckets=CONNECT_BUCKETS,
            registry=r,
        )
        self.attempt_failures = Counter(
            "firsttoken_realtime_session_attempt_failures",
            "Sessions a target failed to open (the next target was tried)",
            ["route", "target", "status_class"],
            registry=r,
        )
        self.ended = Counter(
            "firsttoken_realtime_sessions_ended",
            "Realtime sessions by how they ended",
            ["route", "end"],
            registry=r,
        )
        self.duration = Histogram(
            "firsttoken_realtime_session_duration_seconds",
            "Realtime session length",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.responses = Counter(
            "firsttoken_realtime_responses",
            "Responses (response.done) by status",
            ["route", "target", "status"],
            registry=r,
        )
        self.tokens = Counter(
            "firsttoken_realtime_tokens",
            "Realtime tokens by kind (cached input counted once, apart from input)",
            ["route", "target", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "firsttoken_realtime_cost_usd",
            "Realtime spend in US dollars from the targets' YAML prices",
            ["route", "target"],
            registry=r,
        )
        self.response_cost = Histogram(
            "firsttoken_realtime_response_cost_usd",
            "Cost of one response, US dollars",
            ["route", "target"],
            buckets=RESPONSE_COST_BUCKETS,
            registry=r,
        )
        self.session_cost = Histogram(
            "firsttoken_realtime_session_cost_usd",
            "Cost of one whole session, US dollars",
            ["route"],
            buckets=SESSION_COST_BUCKETS,
            registry=r,
        )
        self.client_cost = Counter(
            "firsttoken_realtime_client_cost_usd",
            "Realtime spend by client key name (never the key)",
            ["client"],
            registry=r,
        )
        self._ttfa = Children(self.ttfa)
        self._sessions = Children(self.sessions)

    def configure(self, config: Config) -> None:
        """Each realtime route's series at zero."""
        for route in config.routes:
            targets = [t for t in route.targets if config.target(t).kind in ("realtime", "cascade")]
            if not targets:
                continue
            for target in targets:
                self.sessions.labels(route.name, target)
                self.ttfa.labels(route.name, target)
                self.out_of_band_first_delta.labels(route.name, target)
                self.cost.labels(route.name, target)
                for status in RESPONSE_STATUSES:
                    self.responses.labels(route.name, target, status)
            for reason in MIGRATION_REASONS:
                self.migrations.labels(route.name, reason)
            for end in SESSION_ENDS:
                self.ended.labels(route.name, end)

    # -- SessionEvents -------------------------------------------------------------------

    def session_opened(self, route: str, target: str) -> None:
        self._sessions(route, target).inc()

    def upstream_connected(self, route: str, target: str, connect_s: float) -> None:
        self.connect.labels(target).observe(connect_s)

    def session_attempt_failed(self, route: str, err: UpstreamError) -> None:
        self.attempt_failures.labels(route, err.target or "unknown", status_class(err)).inc()

    def session_closed(
        self,
        route: str,
        target: str,
        end: SessionEnd,
        *,
        duration_s: float,
        usage: RealtimeUsage,
        cost_usd: float,
        client: str | None,
    ) -> None:
        self._sessions(route, target).dec()
        self.ended.labels(route, end).inc()
        self.duration.labels(route).observe(duration_s)
        self.session_cost.labels(route).observe(cost_usd)
        if client is not None:
            self.client_cost.labels(client).inc(cost_usd)

    def ttfa_observed(self, route: str, target: str, seconds: float) -> None:
        self._ttfa(route, target).observe(seconds)

    def out_of_band_delta_observed(self, route: str, target: str, seconds: float) -> None:
        self.out_of_band_first_delta.labels(route, target).observe(seconds)

    def transcript_observed(self, route: str, target: str, seconds: float) -> None:
        self.transcript.labels(route, target).observe(seconds)

    def transcription_billed(self, route: str, target: str, cost_usd: float) -> None:
        self.cost.labels(route, target).inc(cost_usd)

    def transcription_failed(self, route: str, target: str, cause: TranscriptionFailure) -> None:
        self.transcription_failures.labels(route, target, cause).inc()

    def realtime_response_done(
        self,
        route: str,
        target: str,
        status: str,
        *,
        usage: RealtimeUsage | None,
        cost_usd: float,
        client: str | None,
    ) -> None:
        label = status if status in RESPONSE_STATUSES else "other"
        self.responses.labels(route, target, label).inc()
        if usage is None:
            return
        counts = (
            usage.text_input,
            usage.audio_input,
            usage.cached_tokens,
            usage.text_output,
            usage.audio_output,
        )
        for kind, n in zip(TOKEN_KINDS, counts, strict=True):
            if n:
                self.tokens.labels(route, target, kind).inc(n)
        self.cost.labels(route, target).inc(cost_usd)
        self.response_cost.labels(route, target).observe(cost_usd)

    def migrated(
        self, route: str, from_target: str, to_target: str, reason: MigrationReason, seconds: float
    ) -> None:
        self._sessions(route, from_target).dec()
        self._sessions(route, to_target).inc()
        self.migrations.labels(route, reason).inc()
        self.migration_seconds.labels(route).observe(seconds)
