"""`Router`: the current runtime and its swap, a turn's entry, and lifespan. No singletons:
everything hangs off it.

`Router` holds the current `Runtime` (config, compiled routes, upstreams) as one
reference that a reload swaps atomically: a turn takes the runtime once at its
start and finishes on it, so streams in flight finish on the plan they began with.
Live signals outlive runtimes; a reload keeps those of targets that still exist.
A reload's dropped upstreams close once its turns are done (router/upstream/
retiring.py); a dead background task takes the process down (router/lifespan.py).

What a config compiles to (`Runtime`, `RouteRuntime`, and what a reload carries over)
is `wiring.py`. Over 400 lines (about 520), kept whole: the state every room shares (the
runtime, the drain and the turns and sessions in flight, the retirer, Redis) and the
tasks that keep it, a few lines each (the per-target ones kept in step with reloads by
`keepers.py`); a room whose wiring grows past that gets its own
module, as `realtime/service.py` did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial

import anyio
import httpx
from anyio.abc import TaskGroup

from router.capabilities import not_served
from router.clock import Clock
from router.config import (
    Config,
    Probe,
    TargetConfig,
    load_config,
)
from router.errors import (
    AllTargetsFailed,
    ConfigError,
    ConfigIssue,
    Draining,
    ModelNotFound,
    NoTargetAvailable,
)
from router.gateway.auth import Client
from router.gateway.request import ParsedRequest
from router.keepers import TargetTasks
from router.lifespan import guarded, warm_up, while_needed
from router.looplag import sample_loop_lag
from router.metrics import Metrics
from router.policy.base import Plan, PlanContext, RoutingRequest, TargetView
from router.policy.registry import plan_turn
from router.realtime.target import RealtimeTarget
from router.realtime_metrics import RealtimeMetrics
from router.replicas import ClientQuota, SharedState, SharedStateCollector
from router.responses.owners import Owner, ResponseOwners
from router.responses.pinning import Pin, find_pin, pinned_targets
from router.signals import probe, scraper
from router.signals.registry import SignalsRegistry
from router.signals.target import TargetSignals
from router.turn.dialect import CHAT, EMBEDDINGS, Dialect
from router.turn.relay import Turn
from router.turn.responses_wire import RESPONSES
from router.turn.scopes import Deadlines
from router.turn.sink import Sink
from router.turn.types import TargetRuntime, TurnRequest, TurnResult
from router.upstream.base import Endpoint, Upstream
from router.upstream.factory import default_upstream, import_litellm_upstream
from router.upstream.retiring import Retirer
from router.vocabulary import ScrapeFailure
from router.voice.wiring import cascades
from router.voice_metrics import VoiceMetrics
from router.wiring import (
    RouteRuntime,
    Runtime,
    UpstreamFactory,
    Wiring,
    check_secrets,
    compile_runtime,
)

log = logging.getLogger("firsttoken")

RETIRE_EVERY_S = 0.5  # how often retiring upstreams are checked for turns on them
#: how each endpoint's answers read
DIALECTS: Mapping[Endpoint, Dialect] = {
    "chat": CHAT,
    "completions": CHAT,
    "responses": RESPONSES,
    "embeddings": EMBEDDINGS,
}


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
        self.metrics = Metrics(views=self.views)
        #: the deadlines of every turn's body and attempts, on one timer (turn/scopes.py)
        self.deadlines = Deadlines()
        #: the realtime sessions' metrics, on the same registry
        self.realtime_metrics = RealtimeMetrics(self.metrics.registry)
        self.voice_metrics = VoiceMetrics(self.metrics.registry)
        self.last_plans: dict[str, Plan] = {}
        self.ready = False
        self.draining = False
        #: turns between arrival and their last byte (what a drain waits for)
        self.active_turns = 0
        self._retirer = Retirer(clock, self._upstreams, self.metrics.upstream_pools.set)
        self._retiring_realtime: list[RealtimeTarget] = []
        #: set by a reload: the retirer sweeps only while something is retiring
        self._retire_wake = asyncio.Event()
        # the engine scrapers' HTTP client and the per-target tasks (run_background)
        self._scrape_client: httpx.AsyncClient | None = None
        self._scrapers: TargetTasks | None = None
        self._probes: TargetTasks | None = None
        #: realtime sessions open (the gateway counts them)
        self.active_sessions = 0
        #: called once, with the reason kept in `fatal`, if a background task dies
        self.on_fatal: Callable[[str], None] | None = None
        self.fatal: str | None = None
        self._wiring = Wiring(
            self.environ,
            clock,
            upstream_factory,
            self.metrics.connection_counter,
            cascades(self),
            config_path,
        )
        self.runtime = self._compile(config, SignalsRegistry(config, clock), previous=None)
        self.metrics.configure(config)
        self.realtime_metrics.configure(config)
        self._retirer.count()
        #: cooldowns and global limits shared with the other replicas (Redis), if configured
        self.shared = SharedState(config.state, clock=clock) if config.state else None
        if self.shared is not None:
            self.shared.attach(self.runtime.signals)
            self.metrics.registry.register(SharedStateCollector(self.shared))
        #: which target stored each response id (Redis too, with `state:`)
        shared_owners = self.shared.owners if self.shared is not None else None
        self.owners = ResponseOwners(config.responses, clock, shared_owners)

    # -- runtimes ----------------------------------------------------------------------

    def _compile(
        self, config: Config, signals: SignalsRegistry, previous: Runtime | None
    ) -> Runtime:
        return compile_runtime(config, signals, previous, self._wiring, self._retirer.closing())

    def reload(self, config: Config) -> None:
        """Swap in a new config atomically; turns in flight keep the runtime they took."""
        previous = self.runtime
        try:
            check_secrets(config, self._wiring)
        except ConfigError:
            self.metrics.reloaded("invalid")
            raise
        self.runtime = self._compile(config, previous.signals.rebuilt(config), previous)
        if self.shared is not None:
            self.shared.attach(self.runtime.signals)
        if config.state != previous.config.state:
            log.warning("the state block changed: it takes effect at the next restart")
        self.owners.configure(config.responses)
        kept = {id(t.upstream) for t in self.runtime.targets.values()}
        dropped = [t.upstream for t in previous.targets.values() if id(t.upstream) not in kept]
        self._retirer.retire(previous, dropped, config.server.drain_s)
        self._retiring_realtime.extend(self.runtime.realtime.retired)
        self._retire_wake.set()
        self._sync_target_tasks()
        self.metrics.configure(config)
        self.realtime_metrics.configure(config)
        self.metrics.reloaded("ok")
        log.info("config reloaded: %d targets, %d routes", len(config.targets), len(config.routes))

    async def reload_from_file(self) -> None:
        """Re-read the policy file (SIGHUP, POST /admin/reload); keep serving if invalid."""
        if self.config_path is None:
            raise ConfigError([ConfigIssue("<config>", None, "", "no policy file to reload")])
        try:
            config = await anyio.to_thread.run_sync(load_config, self.config_path)
            if any(t.kind == "litellm" for t in config.targets):
                await anyio.to_thread.run_sync(import_litellm_upstream)
        except ConfigError as err:
            self.metrics.reloaded("invalid")
            log.error("reload rejected, the old config keeps serving:\n%s", err.message)
            raise
        previous = self.runtime
        self.reload(config)
        kept = {id(t.upstream) for t in previous.targets.values()}
        await warm_up(t for t in self.runtime.targets.values() if id(t.upstream) not in kept)

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
        self,
        runtime: Runtime,
        route: RouteRuntime,
        request: RoutingRequest,
        names: Iterable[str] | None = None,
    ) -> tuple[Plan, dict[str, TargetView]]:
        """The plan over `names` (the route's targets serving the request's endpoint).
        The caller books it (`decided`): a turn, once its request is written upstream."""
        on = route.config.slo.on if route.config.slo is not None else "first_token"
        names = route.serving.get(request.endpoint, ()) if names is None else names
        views = {name: runtime.targets[name].signals.view(on) for name in names}
        ctx = PlanContext(
            rng=self.rng,
            slo=route.config.slo,
            exploration=route.config.exploration,
            explore=route.explore,
        )
        plan = plan_turn(route.policy, request, list(views.values()), ctx)
        return plan, views

    def decided(self, route: str, plan: Plan) -> None:
        """Book a route's decision: the admin's last plan, the decision metrics."""
        self.last_plans[route] = plan
        self.metrics.decided(route, plan)

    def _route_for(self, runtime: Runtime, model: str, client: Client | None) -> RouteRuntime:
        """The route a client names, or a 404 that lists only the routes it may use."""
        route = runtime.routes.get(model)
        if route is None:
            usable = ", ".join(self.models(client, runtime)) or "(none for this key)"
            raise ModelNotFound(f"the model '{model[:200]}' does not exist; routes here: {usable}")
        return route

    def precheck(self, model: str, client: Client | None) -> None:
        """Before a body is walked: the replica is not draining, the route exists, and
        the client's key may use it and has requests left (503, 404, 403, 429)."""
        if self.draining:
            raise Draining("this replica is shutting down; retry on another")
        runtime = self.runtime
        self._route_for(runtime, model, client)
        runtime.auth.precheck(client, model)

    def models(self, client: Client | None, runtime: Runtime | None = None) -> list[str]:
        """The routes a client may use (all of them without keys)."""
        runtime = runtime or self.runtime
        return [name for name in runtime.routes if runtime.auth.may_use(client, name)]

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
        route = self._route_for(runtime, parsed.model, client)
        names = route.serving.get(parsed.endpoint, ())
        if not names:
            raise not_served(route.config.name, parsed.endpoint, route.capabilities)
        pin = None
        if parsed.endpoint == "responses":
            pin = await find_pin(self.owners, parsed.previous_response_id, parsed.conversation)
            names = pinned_targets(pin, route.config.name, names) if pin else names
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
            plan, views = self.plan(runtime, route, routing, names)
            # Booked once the request is written upstream (`Deadlines.after_send`).
            self.deadlines.after_send(self.decided, route.config.name, plan)
            if self.shared is not None:
                quota = None
                if client is not None and client.limits is not None:
                    quota = ClientQuota(client.name, client.limits.rpm, client.limits.tpm)
                plan = await self.shared.admit(plan, parsed.prompt_tokens, quota)
        except NoTargetAvailable as err:
            self.metrics.turn_unanswered(route.config.name, cancelled=False)
            if pin is not None:
                raise pin.unavailable(err.message.rpartition(": ")[2]) from err
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
            max_event_bytes=runtime.config.upstream.max_event_bytes,
            deadlines=self.deadlines,
        )
        request = TurnRequest(
            endpoint=parsed.endpoint,
            body=parsed.body,
            stream=parsed.stream,
            client_wants_usage=parsed.client_wants_usage,
            routing=routing,
            forward_headers=forward_headers,
            dialect=DIALECTS[parsed.endpoint],
            on_commit=self._storing(parsed, route.config.name, pin),
        )
        self.deadlines.after_send(
            self.metrics.overhead_observed, "pre_upstream", self.clock() - arrived
        )
        self.active_turns += 1
        runtime.active += 1
        try:
            result = await turn.run(request, sink)
        except AllTargetsFailed as err:
            if pin is not None and err.client_error is None:
                raise pin.unavailable(err.failures[-1].message if err.failures else "") from err
            raise
        finally:
            self.active_turns -= 1
            runtime.active -= 1
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

    def _storing(
        self, parsed: ParsedRequest, route: str, pin: Pin | None
    ) -> Callable[[str, str | None], None] | None:
        """For a Responses turn: remember, at its commit point, which target stores its
        answer (and its conversation), so follow-ups, GETs and DELETEs go there; for a
        chat turn with `store: true`, which target stored the completion."""
        if parsed.endpoint == "chat" and parsed.store:

            def stored_chat(target: str, completion_id: str | None) -> None:
                if completion_id is not None:
                    self.owners.remember("chat_completion", completion_id, Owner(target, route))

            return stored_chat
        if parsed.endpoint != "responses":
            return None

        def remember(target: str, response_id: str | None) -> None:
            owner = Owner(target, route)
            if response_id is not None and parsed.store:
                self.owners.remember("response", response_id, owner)
            if parsed.conversation is not None and pin is None:
                self.owners.remember("conversation", parsed.conversation, owner)

        return remember

    # -- realtime sessions -------------------------------------------------------------

    def plan_session(
        self,
        runtime: Runtime,
        route: RouteRuntime,
        *,
        transcription: bool = False,
        book: bool = True,
    ) -> list[RealtimeTarget]:
        """A realtime route's targets, best first, by its policy (NoTargetAvailable);
        a transcription session's on their time to transcript. Not `book`: an order to
        search in (for a call that exists), not a decision where to send one."""
        plan = runtime.realtime.plan(
            route.config, route.policy, self.rng, transcription=transcription
        )
        if book:
            self.decided(route.config.name, plan)
        return runtime.realtime.ranked(plan)

    # -- lifespan ----------------------------------------------------------------------

    def _scrape_failed(self, signals: TargetSignals, reason: ScrapeFailure) -> None:
        """A scrape of a target's engine failed: counted, and told to its signals (the
        admin view then says why its stats are stale)."""
        self.metrics.engine_scrape_failed(signals.name, reason)
        signals.engine.scrape_failed(reason)

    def _sync_target_tasks(self, *, with_probes: bool = True) -> None:
        """One engine scraper per vLLM target and one probe per target that has them,
        for the running config (`keepers.TargetTasks`: at start, and after a reload)."""
        scrapers, probes, client = self._scrapers, self._probes, self._scrape_client
        if scrapers is None or probes is None or client is None:
            return  # not started: run_background syncs them
        runtime = self.runtime
        interval = runtime.config.signals.engine_scrape_interval_s
        wanted: dict[str, tuple[object, Callable[[], Awaitable[object]]]] = {}
        for t in self.engine_targets():
            url, signals = t.engine_metrics_url(), runtime.signals[t.name]
            assert url is not None
            failed = partial(self._scrape_failed, signals)
            run = partial(scraper.run, client, url, interval, signals.engine_update, failed=failed)
            wanted[t.name] = ((url, signals, interval), run)
        scrapers.sync(wanted)
        if with_probes:
            probes.sync(
                {
                    name: (
                        (target.upstream, target.signals, settings),
                        partial(self._probe, target, settings),
                    )
                    for name, target in runtime.targets.items()
                    if (settings := probe.probe_for(runtime.config, target.config)) is not None
                }
            )

    def engine_targets(self) -> Iterable[TargetConfig]:
        return (t for t in self.runtime.config.targets if t.kind == "vllm")

    async def run_background(
        self, tg: TaskGroup, *, scrape_client: httpx.AsyncClient | None = None
    ) -> None:
        """Start the engine scrapers (one per vLLM target), the probes (one per target
        that has them, `probe.probe_for`), the upstream retirer and the loop's lag
        sampler.

        `scrape_client` replaces the scrapers' own HTTP client (a simulation serves
        the engines' /metrics in-process through an `httpx.MockTransport`)."""
        self._scrape_client = scrape_client or httpx.AsyncClient(timeout=httpx.Timeout(1.0))
        self._scrapers = TargetTasks(tg, self.die, "engine scraper")
        self._probes = TargetTasks(tg, self.die, "probe")
        self._sync_target_tasks(with_probes=False)
        await warm_up(self.runtime.targets.values())
        self._sync_target_tasks()
        retire = partial(while_needed, RETIRE_EVERY_S, self._retiring, self._retire_wake)
        tg.start_soon(guarded, self.die, "upstream retirer", retire, self.retire)
        lag = partial(sample_loop_lag, self.clock, self.metrics.loop_lag_observed, self._busy)
        self.metrics.loop_cpu.bind()  # this is the event loop's thread
        tg.start_soon(guarded, self.die, "event-loop lag sampler", lag)
        if self.shared is not None:
            tg.start_soon(guarded, self.die, "shared state (Redis)", self.shared.run)
        if self.reload_on_sighup and self.config_path is not None:
            tg.start_soon(guarded, self.die, "SIGHUP watcher", self._watch_sighup)
        self.ready = True

    async def _probe(self, target: TargetRuntime, settings: Probe) -> None:
        await probe.run(target.upstream, target.signals, target.config, settings, clock=self.clock)

    def die(self, reason: str) -> None:
        """Stop being ready and ask the server to exit non-zero (Kubernetes restarts us)."""
        if self.fatal is not None:
            return
        self.fatal = reason
        self.ready = False
        log.critical("%s; exiting", reason)
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _upstreams(self) -> Iterable[Upstream]:
        return (t.upstream for t in self.runtime.targets.values())

    def _retiring(self) -> bool:
        return bool(self._retirer.closing() or self._retiring_realtime)

    def _busy(self) -> bool:
        """Turns or realtime sessions in flight (the loop-lag sampler's pace)."""
        return bool(self.active_turns or self.active_sessions)

    async def retire(self) -> None:
        """Close what reloads dropped, once idle (router/upstream/retiring.py)."""
        await self._retirer.sweep()
        live = [t for t in self._retiring_realtime if t.signals.in_flight.count]
        for idle in self._retiring_realtime:
            if idle not in live:
                await idle.connector.aclose()
        self._retiring_realtime = live

    async def aclose(self) -> None:
        self.ready = False
        with anyio.CancelScope(shield=True):
            for t in self.runtime.targets.values():
                await t.upstream.aclose()
            await self._retirer.aclose()
            await self.runtime.realtime.aclose()
            await self.runtime.speech.aclose()  # and the pools its reloads retired
            for gone in self._retiring_realtime:
                await gone.connector.aclose()
            client = self._scrape_client
            if client is not None:
                await client.aclose()
            if self.shared is not None:
                await self.shared.aclose()
