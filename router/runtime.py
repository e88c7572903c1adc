"""`Router`: wiring, runtimes, reload and lifespan. No singletons: everything hangs off it.

`Router` holds the current `Runtime` (config, compiled routes, upstreams) as one
reference that a reload swaps atomically: a turn takes the runtime once at its
start and finishes on it, so streams in flight finish on the plan they began with.
Live signals outlive runtimes; a reload keeps those of targets that still exist.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import anyio
import httpx
from anyio.abc import TaskGroup

from router.clock import Clock
from router.config import (
    Config,
    Probe,
    RouteConfig,
    TargetConfig,
    load_config,
    missing_secrets,
)
from router.errors import ConfigError, ConfigIssue, Draining, ModelNotFound, NoTargetAvailable
from router.gateway.auth import Authenticator, Client
from router.gateway.request import ParsedRequest
from router.metrics import Metrics
from router.policy.base import Plan, PlanContext, Policy, RoutingRequest, TargetView
from router.policy.explore import ExplorationBudget
from router.policy.registry import build_policy, plan_turn
from router.replicas import ClientQuota, SharedState, SharedStateCollector
from router.signals import engine, probe
from router.signals.registry import SignalsRegistry
from router.turn.hedge import HedgeBudget
from router.turn.relay import Turn
from router.turn.sink import Sink
from router.turn.types import TargetRuntime, TurnRequest, TurnResult
from router.upstream.base import Upstream
from router.upstream.openai import OpenAIUpstream

log = logging.getLogger("firsttoken")

UpstreamFactory = Callable[[TargetConfig, str | None], Upstream]
#: the longest a target's warm-up may hold back readiness
WARM_UP_S = 10.0


def default_upstream(config: TargetConfig, api_key: str | None) -> Upstream:
    if config.kind == "litellm":
        from router.upstream.litellm import LitellmUpstream  # heavy: only when used

        return LitellmUpstream(config, api_key)
    return OpenAIUpstream(config, api_key)


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    config: RouteConfig
    policy: Policy
    budget: HedgeBudget
    explore: ExplorationBudget


@dataclass(frozen=True, slots=True)
class Runtime:
    config: Config
    routes: Mapping[str, RouteRuntime]
    targets: Mapping[str, TargetRuntime]
    signals: SignalsRegistry
    auth: Authenticator


class Router:
    """The application core: routes turns, owns signals, swaps configs."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        upstream_factory: UpstreamFactory = default_upstream,
        config_path: str | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.environ = os.environ if environ is None else environ
        self.config_path = config_path
        #: `firsttoken serve` listens for SIGHUP (only a main thread can)
        self.reload_on_sighup = False
        self._upstream_factory = upstream_factory
        self.metrics = Metrics(views=self.views)
        self.last_plans: dict[str, Plan] = {}
        self.ready = False
        self.draining = False
        #: turns between arrival and their last byte (what a drain waits for)
        self.active_turns = 0
        self._retiring: list[TargetRuntime] = []
        self.runtime = self._compile(config, SignalsRegistry(config, clock), previous=None)
        self.metrics.configure(config)
        #: cooldowns and global limits shared with the other replicas (Redis), if configured
        self.shared = SharedState(config.state, clock=clock) if config.state else None
        if self.shared is not None:
            self.shared.attach(self.runtime.signals)
            self.metrics.registry.register(SharedStateCollector(self.shared))

    # -- runtimes ----------------------------------------------------------------------

    def _compile(
        self, config: Config, signals: SignalsRegistry, previous: Runtime | None
    ) -> Runtime:
        missing = missing_secrets(config, self.environ)
        if missing:
            raise ConfigError(
                [ConfigIssue(self.config_path or "<config>", None, "", m) for m in missing]
            )
        targets: dict[str, TargetRuntime] = {}
        for t in config.targets:
            old = previous.targets.get(t.name) if previous else None
            if old is not None and old.config == t:
                upstream = old.upstream  # unchanged target: keep its warm connection pool
            else:
                key = self.environ.get(t.api_key_env) if t.api_key_env else None
                upstream = self._upstream_factory(t, key)
            targets[t.name] = TargetRuntime(t, upstream, signals[t.name])
        routes = {}
        for r in config.routes:
            old_route = previous.routes.get(r.name) if previous else None
            keep = old_route is not None and old_route.config == r
            if keep and old_route:
                routes[r.name] = old_route
            else:
                routes[r.name] = RouteRuntime(
                    r,
                    build_policy(r.policy),
                    HedgeBudget(r.hedge.max_rate if r.hedge else 0.0),
                    ExplorationBudget(r.exploration),
                )
        auth = Authenticator(
            config.auth, self.environ, self.clock, previous.auth if previous else None
        )
        return Runtime(config, routes, targets, signals, auth)

    def reload(self, config: Config) -> None:
        """Swap in a new config atomically; turns in flight keep the runtime they took."""
        previous = self.runtime
        missing = missing_secrets(config, self.environ)
        if missing:
            self.metrics.reloaded("invalid")
            raise ConfigError(
                [ConfigIssue(self.config_path or "<config>", None, "", m) for m in missing]
            )
        self.runtime = self._compile(config, previous.signals.rebuilt(config), previous)
        if self.shared is not None:
            self.shared.attach(self.runtime.signals)
        if config.state != previous.config.state:
            log.warning("the state block changed: it takes effect at the next restart")
        kept = {id(t.upstream) for t in self.runtime.targets.values()}
        self._retiring.extend(t for t in previous.targets.values() if id(t.upstream) not in kept)
        self.metrics.configure(config)
        self.metrics.reloaded("ok")
        log.info("config reloaded: %d targets, %d routes", len(config.targets), len(config.routes))

    async def reload_from_file(self) -> None:
        """Re-read the policy file (SIGHUP, POST /admin/reload); keep serving if invalid."""
        if self.config_path is None:
            raise ConfigError([ConfigIssue("<config>", None, "", "no policy file to reload")])
        try:
            config = load_config(self.config_path)
        except ConfigError as err:
            self.metrics.reloaded("invalid")
            log.error("reload rejected, the old config keeps serving:\n%s", err.message)
            raise
        previous = self.runtime
        self.reload(config)
        kept = {id(t.upstream) for t in previous.targets.values()}
        await self._warm_up(t for t in self.runtime.targets.values() if id(t.upstream) not in kept)

    async def _watch_sighup(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                # An invalid file is logged and counted; the old config keeps serving.
                with contextlib.suppress(ConfigError):
                    await self.reload_from_file()

    def views(self) -> list[TargetView]:
        return list(self.runtime.signals.views())

    # -- turns -------------------------------------------------------------------------

    def plan(
        self, runtime: Runtime, route: RouteRuntime, request: RoutingRequest
    ) -> tuple[Plan, dict[str, TargetView]]:
        views = {name: runtime.targets[name].signals.view() for name in route.config.targets}
        ctx = PlanContext(
            rng=self.rng,
            slo=route.config.slo,
            exploration=route.config.exploration,
            explore=route.explore,
        )
        plan = plan_turn(route.policy, request, list(views.values()), ctx)
        self.last_plans[route.config.name] = plan
        self.metrics.decided(route.config.name, plan)
        return plan, views

    async def handle(
        self,
        parsed: ParsedRequest,
        sink: Sink,
        forward_headers: Mapping[str, str],
        arrived: float,
        client: Client | None = None,
    ) -> TurnResult:
        if self.draining:
            raise Draining("this replica is shutting down; retry on another")
        runtime = self.runtime
        route = runtime.routes.get(parsed.model)
        if route is None:
            raise ModelNotFound(
                f"the model '{parsed.model}' does not exist; "
                f"routes here: {', '.join(runtime.routes)}"
            )
        affinity_target = None
        if route.config.affinity.enabled and parsed.session_key:
            affinity_target = runtime.signals.affinity.get(parsed.session_key)
        routing = RoutingRequest(
            route=route.config.name,
            endpoint=parsed.endpoint,
            prompt_tokens=parsed.prompt_tokens,
            max_output_tokens=parsed.max_output_tokens,
            stream=parsed.stream,
            session_key=parsed.session_key,
            affinity_target=affinity_target,
        )
        runtime.auth.admit(client, route.config.name, parsed.prompt_tokens)
        try:
            plan, views = self.plan(runtime, route, routing)
            if self.shared is not None:
                quota = None
                if client is not None and client.limits is not None:
                    quota = ClientQuota(client.name, client.limits.rpm, client.limits.tpm)
                plan = await self.shared.admit(plan, parsed.prompt_tokens, quota)
        except NoTargetAvailable:
            self.metrics.turn_unanswered(route.config.name, cancelled=False)
            raise
        turn = Turn(
            route=route.config,
            plan=plan,
            views=views,
            targets=runtime.targets,
            budget=route.budget,
            events=self.metrics,
            clock=self.clock,
            arrived=arrived,
        )
        request = TurnRequest(
            endpoint=parsed.endpoint,
            body=parsed.body,
            stream=parsed.stream,
            client_wants_usage=parsed.client_wants_usage,
            routing=routing,
            forward_headers=forward_headers,
        )
        self.metrics.overhead_observed("pre_upstream", self.clock() - arrived)
        self.active_turns += 1
        try:
            result = await turn.run(request, sink)
        finally:
            self.active_turns -= 1
        if client is not None:
            self.metrics.client_usage(
                client.name, result.prompt_tokens, result.completion_tokens, result.cost_usd
            )
            if client.limits is not None:
                client.limits.record(result.completion_tokens, requests=0)
        if parsed.session_key and result.target and result.outcome != "error":
            runtime.signals.affinity.put(
                parsed.session_key, result.target, ttl_s=route.config.affinity.ttl_s
            )
        return result

    # -- lifespan ----------------------------------------------------------------------

    def engine_targets(self) -> Iterable[TargetConfig]:
        return (t for t in self.runtime.config.targets if t.kind == "vllm")

    async def run_background(
        self, tg: TaskGroup, *, scrape_client: httpx.AsyncClient | None = None
    ) -> None:
        """Start the engine scrapers (one per vLLM target), the probes (one per target
        that has them, `probe.probe_for`) and the upstream retirer.

        `scrape_client` replaces the scrapers' own HTTP client (a simulation serves
        the engines' /metrics in-process through an `httpx.MockTransport`)."""
        interval = self.runtime.config.signals.engine_scrape_interval_s
        client = scrape_client or httpx.AsyncClient(timeout=httpx.Timeout(1.0))
        self._scrape_client = client
        for t in self.engine_targets():
            url = t.engine_metrics_url()
            assert url is not None
            tg.start_soon(
                engine.run, client, url, interval, self.runtime.signals[t.name].engine_update
            )
        await self._warm_up(self.runtime.targets.values())
        for target in self.runtime.targets.values():
            settings = probe.probe_for(self.runtime.config, target.config)
            if settings is not None:
                tg.start_soon(self._probe, target, settings)
        tg.start_soon(self._retire_loop)
        if self.shared is not None:
            tg.start_soon(self.shared.run)
        if self.reload_on_sighup and self.config_path is not None:
            tg.start_soon(self._watch_sighup)
        self.ready = True

    async def _probe(self, target: TargetRuntime, settings: Probe) -> None:
        await probe.run(target.upstream, target.signals, target.config, settings, clock=self.clock)

    async def _warm_up(self, targets: Iterable[TargetRuntime]) -> None:
        """Pay each upstream's first-call cost (litellm: ~0.4 s) before traffic does."""
        for t in targets:
            with anyio.move_on_after(WARM_UP_S) as scope:
                try:
                    await t.upstream.warm_up()
                except Exception as exc:  # a failed warm-up only costs the first turn
                    log.warning("warm-up of %s failed: %s", t.config.name, type(exc).__name__)
            if scope.cancelled_caught:
                log.warning("warm-up of %s took over %gs; going on", t.config.name, WARM_UP_S)

    async def _retire_loop(self) -> None:
        # Upstreams dropped by a reload close once no stream uses them (bounded wait).
        while True:
            await anyio.sleep(5.0)
            still = []
            for old in self._retiring:
                if old.signals.in_flight.count == 0:
                    await old.upstream.aclose()
                else:
                    still.append(old)
            self._retiring = still

    async def aclose(self) -> None:
        self.ready = False
        with anyio.CancelScope(shield=True):
            for t in self.runtime.targets.values():
                await t.upstream.aclose()
            for old in self._retiring:
                await old.upstream.aclose()
            client = getattr(self, "_scrape_client", None)
            if client is not None:
                await client.aclose()
            if self.shared is not None:
                await self.shared.aclose()
