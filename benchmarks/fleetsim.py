"""One run on a generated fleet, in one process, on a virtual clock.

The fleet of `benchmarks/fleets.py` is built from the simulator's backends
(`router.sim.vllm.VllmBackend`, `router.sim.hosted.HostedBackend`) and reached
through `router.sim.inproc.InProcessUpstream`; the router is the real `Router`
(policies, signals, turn, race, hedging, the engine scrapers reading the engines'
Prometheus pages through an `httpx.MockTransport`, probes); the load is the
workload's turns, each one `Router.handle` call at its arrival time. Everything runs
on `router.sim.virtual.VirtualTimeLoop`, so 90 s of traffic takes seconds of CPU
and no wall-clock wait, and the machine's load cannot distort a TTFT.

Every turn carries its id as `x-sim-draw-key`, so a hosted API gives the same turn
the same TTFT draw (stall or not) whichever policy sent it there (common random
numbers), and the hindsight oracle can read the draws in advance:

- `oracle`: each turn goes to the target that would answer it first, given the
  engines' queues at that moment (`router.sim.foresight`, replaying each engine's
  scheduler), each hosted API's draw for that turn, and its rate limit; no hedging,
  the same capacity as the policies. A greedy per-turn oracle: it knows the
  present and the draws, not the future arrivals.
- `informed`: what a router could do that knew everything but the draws: each turn
  goes where it is likeliest to answer within the SLO, from the engines' exact
  queues (as above) and each hosted API's true TTFT distribution (ties: the sooner
  expected); no hedging. The gap between it and `oracle` is what foresight of the
  hosted APIs' randomness is worth; no router can close it without extra requests.
- `informed race` (`informed` with `hedge=True`): `informed`, and a turn also goes
  to its second likeliest target from the start, first token wins, the other
  cancelled, when that adds at least `RACE_GAIN` to its chance within the SLO and
  the router's own hedge budget (`HedgeBudget`, 10 % of turns) allows one more
  request. What racing buys a router that knows the odds: not a strict ceiling (a
  hedge that waits to see the primary late saves more turns per extra request), but
  the turns a race from the start loses, a later hedge to the same target loses too.

`run(fleet, config)` returns a `RunResult`: one `TurnRecord` per turn and one
`AttemptRecord` per upstream request (hedge losers, fallbacks, 429s and probes
included).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx
from fleets import FleetSpec, policy_yaml
from prometheus_client import generate_latest

from router.config import Config, TargetConfig
from router.errors import FirstTokenError
from router.gateway.request import parse_request
from router.runtime import Router
from router.sim.backend import Backend
from router.sim.behaviour import Behaviour
from router.sim.foresight import first_token_at
from router.sim.hosted import DRAW_KEY_HEADER, HostedBackend
from router.sim.inproc import AttemptRecord, InProcessUpstream
from router.sim.virtual import VirtualTimeLoop
from router.sim.vllm import VllmBackend
from router.sim.wire import parse_request as sim_parse_request
from router.sim.workload import Turn, turns
from router.turn.hedge import HedgeBudget
from router.turn.sink import Header
from router.upstream.base import UpstreamRequest, UpstreamSetup

#: how long turns still in flight at the end of the workload get to finish
DRAIN_S = 30.0
#: `informed race`: the least gain in a turn's chance within the SLO a race is worth
RACE_GAIN = 0.01
#: the answer length cap of every simulated server (max_tokens decides)
MAX_TOKENS = 4096
#: the series of a vLLM engine's /metrics the router reads (router.signals.engine)
SCRAPED = (
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
)

Mode = Literal["open", "sequential"]


@dataclass(frozen=True, slots=True)
class RunConfig:
    name: str
    #: a policy type, or "oracle" or "informed"
    policy: str
    hedge: bool = False
    #: the hedge's `max_cost_share` (None: no spend cap)
    hedge_cost_share: float | None = None
    #: "open": the workload's open-loop sessions; "sequential": `turns` one-turn
    #: sessions, each sent when the previous one ended (the cold-start test)
    mode: Mode = "open"
    turns: int = 40
    #: a suffix to the seed of the router's own random generator (ties between equally
    #: good targets, p2c's draws): the same fleet, draws and load with other ties, to
    #: see how far chance alone moves a result ("": the fleet's seed alone)
    rng_salt: str = ""


@dataclass(slots=True)
class TurnRecord:
    index: int
    session: int
    arrival_s: float
    max_tokens: int = 0
    prompt_tokens: int = 0
    ttft_s: float | None = None
    end_s: float | None = None
    target: str | None = None
    attempts: int = 0
    hedged: bool = False
    fell_back: bool = False
    reason: str = ""
    error: str | None = None


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    seed: int
    turns: list[TurnRecord] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    #: virtual seconds the run lasted
    duration_s: float = 0.0


def draw_salt(seed: int, target: str) -> str:
    """What keys a hosted target's per-turn draws (with the turn's index) in fleet `seed`."""
    return f"{seed}:{target}"


class _Sink:
    """Where an answer goes: notes when it started and drops the bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.started_at: float | None = None
        self.headers: dict[bytes, bytes] = {}

    async def start(self, status: int, headers: Sequence[Header]) -> None:
        self.started_at = self._loop.time()
        self.headers = dict(headers)

    async def write(self, data: bytes) -> None:
        return None

    async def finish(self, last: bytes = b"") -> None:
        return None


class SimFleet:
    """The fleet's backends and their in-process upstreams, on the running loop."""

    def __init__(self, spec: FleetSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.clock = loop.time
        self.attempts: list[AttemptRecord] = []
        self.engines = {e.name: VllmBackend(e.params, "m", self.clock) for e in spec.engines}
        self.latency = {e.name: e.latency_s for e in spec.engines}
        self.hosted = {
            h.name: HostedBackend(
                h.params,
                random.Random(draw_salt(spec.seed, h.name)),
                self.clock,
                salt=draw_salt(spec.seed, h.name),
            )
            for h in spec.hosted
        }
        behaviour = Behaviour(tokens=MAX_TOKENS)
        backends: list[tuple[str, Backend]] = [*self.engines.items(), *self.hosted.items()]
        self.upstreams = {
            name: InProcessUpstream(
                name,
                backend,
                clock=self.clock,
                behaviour=behaviour,
                latency_s=self.latency.get(name, 0.0),
                on_attempt=self.attempts.append,
            )
            for name, backend in backends
        }

    async def start(self) -> None:
        for engine in self.engines.values():
            await engine.start()

    async def stop(self) -> None:
        for engine in self.engines.values():
            await engine.stop()

    def upstream(self, config: TargetConfig, setup: UpstreamSetup) -> InProcessUpstream:
        return self.upstreams[config.name]

    def scrape_client(self) -> httpx.AsyncClient:
        """Serves each engine's Prometheus page at http://<name>.sim/metrics: only the
        series the router reads (the whole page costs half a simulation's CPU)."""
        pages = {
            name: backend.metrics.registry.restricted_registry(SCRAPED)
            for name, backend in self.engines.items()
        }

        def handler(request: httpx.Request) -> httpx.Response:
            page = pages[request.url.host.removesuffix(".sim")]
            return httpx.Response(200, content=generate_latest(page))

        return httpx.AsyncClient(transport=httpx.MockTransport(handler))

    def answers_at(self, name: str, body: dict[str, Any], key: str) -> float:
        """When `name` would give this request its first token if it were sent now."""
        sim = sim_parse_request("chat", body, None)
        n = sim.max_tokens or MAX_TOKENS
        if name in self.engines:
            engine = self.engines[name].engine
            if not engine.fits(sim.prompt_tokens, n):
                return math.inf
            at = first_token_at(engine, sim.prompt_tokens, n, sim.prefix_keys, self.clock())
            return at + self.latency[name]
        hosted = self.hosted[name]
        if not hosted.limiter.would_allow("anonymous", sim.prompt_tokens + n):
            return math.inf
        return self.clock() + hosted.draw(key)[0]

    def chance_in_time(self, name: str, body: dict[str, Any]) -> tuple[float, float]:
        """(chance of a first token within the SLO, minus the expected wait) if `name`
        got this request now: exact for an engine, the true distribution for an API."""
        slo_s = self.spec.slo_ms / 1000.0
        if name in self.engines:
            wait = self.answers_at(name, body, "") - self.clock()
            return (1.0 if wait <= slo_s else 0.0), -wait
        sim = sim_parse_request("chat", body, None)
        hosted = self.hosted[name]
        if not hosted.limiter.would_allow("anonymous", sim.prompt_tokens + (sim.max_tokens or 0)):
            return 0.0, -math.inf
        spec = next(h for h in self.spec.hosted if h.name == name)
        return spec.ttft_cdf(slo_s), -spec.ttft_quantile_s(0.5)


def _body(turn: Turn) -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": list(turn.messages),
        "max_tokens": turn.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _routed_turn(router: Router, turn: Turn, record: TurnRecord, loop: Any) -> None:
    raw = json.dumps(_body(turn)).encode()
    parsed = parse_request("chat", raw, f"s{turn.session_id}")
    record.prompt_tokens = parsed.prompt_tokens
    sink = _Sink(loop)
    arrived = loop.time()
    try:
        result = await router.handle(
            parsed, sink, {DRAW_KEY_HEADER: str(record.index)}, arrived=arrived
        )
    except FirstTokenError as exc:
        record.error = type(exc).__name__
        record.end_s = loop.time()
        return
    record.end_s = loop.time()
    if sink.started_at is not None:
        record.ttft_s = sink.started_at - arrived
    record.target = result.target
    record.attempts = result.attempts
    record.hedged = result.hedged
    record.fell_back = result.fell_back
    record.reason = result.reason
    if result.outcome == "error":
        record.error = "error after the first token"


async def _oracle_turn(
    fleet: SimFleet,
    turn: Turn,
    record: TurnRecord,
    loop: Any,
    *,
    informed: bool,
    budget: HedgeBudget | None = None,
) -> None:
    body = _body(turn)
    key = str(record.index)
    arrived = loop.time()
    names = list(fleet.upstreams)
    if informed:
        names.sort(key=lambda name: fleet.chance_in_time(name, body), reverse=True)
    else:
        names.sort(key=lambda name: fleet.answers_at(name, body, key))
    chosen = names[:1]
    if budget is not None:
        budget.record_turn()
        if len(names) > 1:
            first, second = (fleet.chance_in_time(n, body)[0] for n in names[:2])
            if (1.0 - first) * second >= RACE_GAIN and budget.try_spend():
                chosen = names[:2]
                record.hedged = True
    record.target = names[0]  # a turn no attempt answered keeps the first choice
    record.attempts = len(chosen)
    record.reason = "informed" if informed else "oracle"
    request = UpstreamRequest("chat", body, True, {DRAW_KEY_HEADER: key})
    won: list[tuple[str, Any, Any]] = []

    async def attempt(name: str, scope: anyio.CancelScope) -> None:
        response = None
        try:
            response = await fleet.upstreams[name].send(request)
            chunks = response.aiter_bytes()
            await chunks.__anext__()
        except (FirstTokenError, StopAsyncIteration) as exc:
            if isinstance(exc, FirstTokenError) and not won:
                record.error = type(exc).__name__
        else:
            if not won:
                won.append((name, response, chunks))
                scope.cancel()
        finally:
            if response is not None and not (won and won[0][1] is response):
                with anyio.CancelScope(shield=True):
                    await response.aclose()

    async with anyio.create_task_group() as tg:
        for name in chosen:
            tg.start_soon(attempt, name, tg.cancel_scope)
    if not won:
        return
    record.error = None
    record.ttft_s = loop.time() - arrived
    record.target, response, chunks = won[0]
    async for _ in chunks:
        pass
    record.end_s = loop.time()
    await response.aclose()


async def _drive(fleet: SimFleet, router: Router | None, config: RunConfig) -> list[TurnRecord]:
    loop = asyncio.get_running_loop()
    spec = fleet.spec
    records: list[TurnRecord] = []

    pending = 0
    drained = anyio.Event()  # set when the last turn ends after the arrivals stopped
    arriving = True

    # the same budget as a route with `hedge: {max_rate: 0.1}` (`fleets.policy_yaml`)
    budget = HedgeBudget(0.1) if config.hedge and router is None else None

    async def one(turn: Turn, record: TurnRecord) -> None:
        nonlocal pending
        try:
            if router is None:
                informed = config.policy == "informed"
                await _oracle_turn(fleet, turn, record, loop, informed=informed, budget=budget)
            else:
                await _routed_turn(router, turn, record, loop)
        finally:
            pending -= 1
            if pending == 0 and not arriving:
                drained.set()

    source = turns(spec.workload, random.Random(spec.seed))
    if config.mode == "sequential":
        for i, turn in enumerate(_singles(source, config.turns)):
            record = TurnRecord(i, turn.session_id, loop.time(), turn.max_tokens)
            records.append(record)
            await one(turn, record)
            await anyio.sleep(0.5)
        return records
    async with anyio.create_task_group() as tg:
        for i, turn in enumerate(source):
            await anyio.sleep(max(turn.arrival_time_s - loop.time(), 0.0))
            record = TurnRecord(i, turn.session_id, loop.time(), turn.max_tokens)
            records.append(record)
            pending += 1
            tg.start_soon(one, turn, record)
        arriving = False
        with anyio.move_on_after(DRAIN_S):
            if pending:
                await drained.wait()
        tg.cancel_scope.cancel()
    return records


def _singles(source: Any, n: int) -> list[Turn]:
    """The first turn of each of the first `n` sessions: independent one-turn requests."""
    out: list[Turn] = []
    for turn in source:
        if turn.turn_index == 0:
            out.append(turn)
            if len(out) == n:
                break
    return out


async def _run(spec: FleetSpec, config: RunConfig) -> RunResult:
    loop = asyncio.get_running_loop()
    fleet = SimFleet(spec, loop)
    await fleet.start()
    result = RunResult(config, spec.seed)
    try:
        if config.policy in ("oracle", "informed"):
            result.turns = await _drive(fleet, None, config)
        else:
            data = policy_yaml(
                spec, config.policy, hedge=config.hedge, cost_share=config.hedge_cost_share
            )
            router = Router(
                Config.model_validate(data),
                clock=loop.time,
                rng=random.Random(
                    f"{spec.seed}{config.rng_salt}" if config.rng_salt else spec.seed
                ),
                environ={},
                upstream_factory=fleet.upstream,
            )
            async with anyio.create_task_group() as tg:
                await router.run_background(tg, scrape_client=fleet.scrape_client())
                result.turns = await _drive(fleet, router, config)
                tg.cancel_scope.cancel()
            await router.aclose()
    finally:
        await fleet.stop()
    result.attempts = fleet.attempts
    result.duration_s = loop.time()
    return result


def run(spec: FleetSpec, config: RunConfig) -> RunResult:
    """One configuration on one fleet, on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(_run(spec, config))
