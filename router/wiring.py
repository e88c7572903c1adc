"""What a config compiles to: the `Runtime` a turn takes once, and its `RouteRuntime`s.

`compile_runtime` builds one from a config, the live signals and the runtime it
replaces (none at start-up). What did not change carries over: a target whose config
is the same keeps its upstream and so its warm connection pool (unless a reload is
already closing it), a route whose config is the same keeps its policy, hedge budget
and exploration budget (their windows are live state), and the services (keys,
realtime sessions, speech) are handed their predecessors. `Router` (runtime.py) owns
the swap, the retirement of what was dropped, and everything that runs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from router.capabilities import ORDER, Capability, ordered
from router.clock import Clock
from router.config import Config, RouteConfig, TargetConfig, missing_secrets
from router.errors import ConfigError, ConfigIssue
from router.gateway.auth import Authenticator
from router.policy.base import Policy
from router.policy.explore import ExplorationBudget
from router.policy.registry import build_policy
from router.realtime.service import RealtimeService
from router.realtime.target import Connector
from router.signals.registry import SignalsRegistry
from router.turn.hedge import HedgeBudget
from router.turn.types import TargetRuntime
from router.upstream.base import Upstream, UpstreamSetup
from router.upstream.factory import setup_for
from router.voice.stages import SpeechService

UpstreamFactory = Callable[[TargetConfig, UpstreamSetup], Upstream]
#: a target's connection counter (a metric child), by target name
ConnectionCounter = Callable[[str], Callable[[bool], None]]
#: the target kinds that are sessions or speech stages, not turns (their services)
NOT_TURNS = frozenset({"realtime", "cascade", "stt", "tts"})


@dataclass(frozen=True, slots=True)
class RouteRuntime:
    config: RouteConfig
    policy: Policy
    budget: HedgeBudget
    explore: ExplorationBudget
    #: per capability, the route's targets that serve it (in the route's order)
    serving: Mapping[Capability, tuple[str, ...]] = field(default_factory=dict)

    @property
    def capabilities(self) -> list[Capability]:
        return ordered(c for c, names in self.serving.items() if names)


@dataclass(slots=True, eq=False)
class Runtime:
    config: Config
    routes: Mapping[str, RouteRuntime]
    targets: Mapping[str, TargetRuntime]
    signals: SignalsRegistry
    auth: Authenticator
    realtime: RealtimeService
    speech: SpeechService
    #: turns running on this runtime (a reload retires its upstreams when 0)
    active: int = field(default=0)


@dataclass(frozen=True, slots=True)
class Wiring:
    """What compiling needs from the router that is not in the config."""

    environ: Mapping[str, str]
    clock: Clock
    upstream_factory: UpstreamFactory
    connections: ConnectionCounter
    #: makes the realtime service's cascade connectors
    cascade: Callable[[TargetConfig], Connector]
    #: where the config came from, for errors
    config_path: str | None = None


def check_secrets(config: Config, wiring: Wiring) -> None:
    """ConfigError naming each `api_key_env` (and the like) the environment lacks."""
    missing = missing_secrets(config, wiring.environ)
    if missing:
        path = wiring.config_path or "<config>"
        raise ConfigError([ConfigIssue(path, None, "", m) for m in missing])


def compile_runtime(
    config: Config,
    signals: SignalsRegistry,
    previous: Runtime | None,
    wiring: Wiring,
    closing: Collection[Upstream] = (),
) -> Runtime:
    """The runtime of `config`, keeping what `previous` had that did not change
    (`closing`: upstreams a reload is retiring, which are never kept)."""
    check_secrets(config, wiring)
    targets: dict[str, TargetRuntime] = {}
    for t in config.targets:
        if t.kind in NOT_TURNS:
            continue
        old = previous.targets.get(t.name) if previous else None
        if old is not None and old.config == t and old.upstream not in closing:
            upstream = old.upstream  # unchanged target: keep its warm connection pool
        else:
            setup = setup_for(config, t, wiring.environ, wiring.connections(t.name))
            upstream = wiring.upstream_factory(t, setup)
        targets[t.name] = TargetRuntime(t, upstream, signals[t.name])
    routes = {r.name: _route(config, r, previous) for r in config.routes}
    auth = Authenticator(
        config.auth, wiring.environ, wiring.clock, previous.auth if previous else None
    )
    realtime = RealtimeService(
        config,
        signals,
        wiring.environ,
        wiring.clock,
        previous.realtime if previous else None,
        cascade=wiring.cascade,
    )
    speech = SpeechService(
        config,
        signals,
        wiring.environ,
        wiring.clock,
        previous.speech if previous else None,
        connections=wiring.connections,
    )
    return Runtime(config, routes, targets, signals, auth, realtime, speech)


def _route(config: Config, route: RouteConfig, previous: Runtime | None) -> RouteRuntime:
    served = [config.target(n) for n in route.targets]
    # a target's `serves` may change while its route does not
    serving = {c: tuple(t.name for t in served if c in t.serves) for c in ORDER}
    old = previous.routes.get(route.name) if previous else None
    if old is not None and old.config == route:
        return RouteRuntime(route, old.policy, old.budget, old.explore, serving)
    return RouteRuntime(
        route,
        build_policy(route.policy),
        HedgeBudget.of(route.hedge),
        ExplorationBudget(route.exploration),
        serving,
    )
