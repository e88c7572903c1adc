"""Realtime targets of one config generation, and opening a client's session.

`RealtimeService` is built with every `Runtime` (start and each reload). It keeps
the connector (`RealtimeUpstream`, its connection pool) of a target whose config
did not change, so a reload costs live sessions nothing; the target's signals
come from the signals registry, which outlives configs.

`plan` ranks a realtime route's targets with the route's own policy, as for a
turn, on views whose signals are the realtime ones (time to first audio where
TTFT goes, plus the target's connect time, which a new session waits first; sessions
open as in-flight, `rate_limits.updated` as headroom), and a target at its
`max_sessions` filtered out as over its local limits. A transcription session's
views carry the target's time to transcript where TTFT goes instead
(`transcript_time.py`): it asks for no answer, only its user's words as text.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping

from router.clock import Clock
from router.config import Config, RouteConfig, TargetConfig
from router.policy.base import Plan, PlanContext, Policy, RoutingRequest, TargetView
from router.policy.registry import plan_turn
from router.realtime.limits import SessionLimits
from router.realtime.quota import SessionQuota
from router.realtime.target import Connector, RealtimeTarget
from router.signals.target import TargetSignals
from router.upstream.base import UpstreamSetup
from router.upstream.factory import setup_for
from router.upstream.realtime import RealtimeUpstream


def connector(setup: UpstreamSetup, config: TargetConfig, clock: Clock) -> Connector:
    """The target's upgrade as a chat target's requests: its key (stripped) in its
    `auth_header`, and its `headers` and `headers_env`."""
    assert config.base_url is not None  # checked when the config was loaded
    return RealtimeUpstream(
        name=config.name,
        base_url=config.base_url,
        model=config.model,
        api_key=setup.api_key,
        headers=setup.headers,
        auth_header=config.auth_header,
        connect_s=config.timeouts.connect_s,
        heartbeat_s=config.timeouts.ping_s,
        clock=clock,
    )


def session_limits(route: RouteConfig, quota: SessionQuota | None) -> SessionLimits:
    """A session's limits on `route`; `quota` is the client key's allowance."""
    settings = route.session
    return SessionLimits(
        idle_s=settings.idle_s,
        max_duration_s=settings.max_duration_s,
        max_upstream_s=settings.max_upstream_s,
        regenerate=route.migrate.regenerate,
        transcribe=route.migrate.transcribe,
        input_audio_bytes=route.migrate.input_audio_kib * 1024,
        first_output_s=route.first_token_s,
        quota=quota,
    )


def with_connect_time(view: TargetView, connect_s: float | None) -> TargetView:
    """A target's time to first audio as a new session meets it: the upgrade to
    `session.created` (its EWMA) comes before the first response can start, so a
    target slow to connect ranks behind one as quick to answer but quick to open."""
    if not connect_s:
        return view
    return dataclasses.replace(
        view,
        ttft_ewma_s=view.ttft_ewma_s + connect_s,
        ttft_quantiles=tuple((q, s + connect_s) for q, s in view.ttft_quantiles),
        unloaded_ttft_s=view.unloaded_ttft_s + connect_s,
        prior_ttft_s=view.prior_ttft_s + connect_s,
    )


class RealtimeService:
    def __init__(
        self,
        config: Config,
        signals: Mapping[str, TargetSignals],
        environ: Mapping[str, str],
        clock: Clock,
        previous: RealtimeService | None = None,
        *,
        cascade: Callable[[TargetConfig], Connector] | None = None,
    ) -> None:
        self.clock = clock
        self.targets: dict[str, RealtimeTarget] = {}
        self._configs: dict[str, TargetConfig] = {}
        old = previous.targets if previous is not None else {}
        for t in config.targets:
            if t.kind not in ("realtime", "cascade") or (t.kind == "cascade" and cascade is None):
                continue
            kept = old.get(t.name)
            if kept is not None and previous is not None and previous._configs[t.name] == t:
                conn = kept.connector
            elif cascade is not None and t.kind == "cascade":
                conn = cascade(t)  # served in process (router/voice/)
            else:
                conn = connector(setup_for(config, t, environ), t, clock)
            watched = t.kind == "realtime"  # a cascade's stages keep their own deadlines
            target = RealtimeTarget(
                t.name,
                conn,
                signals[t.name],
                t.price,
                clock=clock,
                max_sessions=t.max_sessions,
                first_output_s=t.timeouts.first_token_s if watched else None,
                silence_s=t.timeouts.idle_s if watched else None,
            )
            if kept is not None and kept.connector is conn:
                target.connect_time = kept.connect_time
            if kept is not None:  # measured on the same target: kept, as its signals are
                target.transcript = kept.transcript
                target.transcript.set_prior(signals[t.name].prior_ttft_s)
            self.targets[t.name] = target
            self._configs[t.name] = t
        kept_connectors = {id(t.connector) for t in self.targets.values()}
        #: connectors of the previous generation no longer used (close them when idle)
        self.retired: list[RealtimeTarget] = [
            t for t in old.values() if id(t.connector) not in kept_connectors
        ]

    def serves(self, route: RouteConfig) -> bool:
        return bool(route.targets) and all(n in self.targets for n in route.targets)

    def plan(
        self,
        route: RouteConfig,
        policy: Policy,
        rng: random.Random,
        *,
        transcription: bool = False,
    ) -> Plan:
        """The route's targets best first; raises NoTargetAvailable if none is eligible.
        A `transcription` session's targets are ranked on their time to transcript."""
        views = []
        for name in route.targets:
            target = self.targets[name]
            view = target.signals.view()
            if transcription:
                view = target.transcript.over(view)
            view = with_connect_time(view, target.connect_time.value)
            if not target.has_room:
                view = dataclasses.replace(view, within_local_limits=False)
            views.append(view)
        ctx = PlanContext(rng=rng, slo=route.slo, exploration=route.exploration)
        return plan_turn(policy, RoutingRequest(route=route.name, prompt_tokens=0), views, ctx)

    def ranked(self, plan: Plan) -> list[RealtimeTarget]:
        return [self.targets[name] for name in plan.order]

    async def aclose(self) -> None:
        for target in self.targets.values():
            await target.connector.aclose()
