"""Fleets the policies were not tuned on: a seeded generator of hybrid fleets and loads.

`generate(seed)` draws one fleet, its load and its SLO from wide ranges (issue 17):

- 1-4 vLLM-like engines (`router.sim.engine`): 2-16 slots (`max_num_seqs`), prefill
  10-60 ms per 1k uncached prompt tokens, an unloaded TTFT (a cached prompt on an
  idle engine) of 20-150 ms, split into a decode step of at most 35 ms (its time per
  token at batch 1) and a fixed network latency; decode slows with the batch, by a
  factor of 1.3-3x at a full batch.
- 1-3 hosted-like APIs (`router.sim.hosted`): median TTFT 150-700 ms (log-uniform),
  lognormal sigma 0.2-0.6, stalls of 1-5 s on 0.5-5 % of requests (none on 30 % of
  the APIs), an rpm limit on half of them (20-80 % of the engines' capacity), prices
  0.1-5 $ per Mtok (log-uniform; output at least input), 5-20 ms per output token.
- Load: multi-turn sessions arriving open-loop (`router.sim.workload`) at 0.3-1.2x
  the fleet's capacity under the SLO, with a ramp and one or two bursts of 2-3x for
  5-10 s, for as long as it takes to offer about 500 turns (60-3600 s). System
  prompts of 100-800 tokens, so a conversation's later turns hit an engine's
  prefix cache.
- SLO: TTFT p99 <= 300-800 ms (a voice agent's range). The quantile is p99 because
  the bars ask for 99 % of turns within the SLO: a route that wants that says so.

Capacity under the SLO: each engine serves `slots / (mean output x step at a full
batch + unloaded TTFT)` turns/s at saturation; 85 % of that is its capacity under the
SLO (a short queue). A rate-limited API adds its rpm / 60. An API without a limit
adds nothing: it is elastic, so load past the rest spills onto it, at its price.

Seeds 0-99 are for tuning; 1000-1029 are held out for the report
(`benchmarks/unseen.py`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from router.sim.engine import EngineParams
from router.sim.hosted import HostedParams
from router.sim.scenario import Arrivals, Burst, Dist, Ramp, Workload

TUNING_SEEDS = range(0, 100)
HELD_OUT_SEEDS = range(1000, 1030)
#: turns a fleet's load offers (about): enough that one miss is 0.2 points of SLO
#: attainment, whatever the fleet's size
TURNS = 500
#: bounds on the seconds during which new sessions start
DURATION_S = (60.0, 3600.0)
#: share of an engine's saturation throughput that still meets the SLO
ENGINE_HEADROOM = 0.85


@dataclass(frozen=True, slots=True)
class EngineSpec:
    name: str
    params: EngineParams
    #: network latency before the first byte (the rest of the unloaded TTFT)
    latency_s: float
    #: TTFT of a cached prompt on an idle engine: latency + one decode step
    unloaded_ttft_s: float

    @property
    def prefill_ms_per_1k(self) -> float:
        return self.params.prefill_s_per_token * 1e6

    def idle_ttft_s(self, uncached_prompt_tokens: int) -> float:
        p = self.params
        return self.latency_s + p.step_s + uncached_prompt_tokens * p.prefill_s_per_token


@dataclass(frozen=True, slots=True)
class HostedSpec:
    name: str
    params: HostedParams
    input_per_mtok: float
    output_per_mtok: float

    def ttft_quantile_s(self, q: float) -> float:
        """The q-quantile of the TTFT mixture (lognormal, plus a stall with its probability)."""
        p = self.params
        lo, hi = 0.0, p.ttft_median_s * 50 + p.stall_s
        for _ in range(60):
            mid = (lo + hi) / 2
            if self.ttft_cdf(mid) < q:
                lo = mid
            else:
                hi = mid
        return hi

    def ttft_cdf(self, t: float) -> float:
        p = self.params

        def lognormal(x: float) -> float:
            if x <= 0:
                return 0.0
            if p.ttft_sigma == 0:
                return 1.0 if x >= p.ttft_median_s else 0.0
            z = (math.log(x) - math.log(p.ttft_median_s)) / p.ttft_sigma
            return 0.5 * (1 + math.erf(z / math.sqrt(2)))

        s = p.stall_probability
        return (1 - s) * lognormal(t) + s * lognormal(t - p.stall_s)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    seed: int
    engines: tuple[EngineSpec, ...]
    hosted: tuple[HostedSpec, ...]
    slo_ms: float
    slo_quantile: float
    load_factor: float
    #: turns per second the fleet serves within the SLO (see the module docstring)
    capacity_per_s: float
    workload: Workload

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.engines) + tuple(h.name for h in self.hosted)

    @property
    def stalling(self) -> bool:
        return any(h.params.stall_probability > 0 for h in self.hosted)

    def price(self, name: str) -> tuple[float, float]:
        for h in self.hosted:
            if h.name == name:
                return h.input_per_mtok, h.output_per_mtok
        return 0.0, 0.0

    def describe(self) -> str:
        engines = ", ".join(
            f"{e.name} {e.params.max_num_seqs} slots {e.unloaded_ttft_s * 1000:.0f} ms"
            f" +{e.prefill_ms_per_1k:.0f} ms/1k"
            for e in self.engines
        )
        hosted = ", ".join(
            f"{h.name} p50 {h.params.ttft_median_s * 1000:.0f} ms s={h.params.ttft_sigma:.2f}"
            f" stalls {h.params.stall_probability:.1%}x{h.params.stall_s:.1f}s"
            f"{f' rpm {h.params.rpm}' if h.params.rpm else ''} ${h.input_per_mtok:.2f}/"
            f"${h.output_per_mtok:.2f}"
            for h in self.hosted
        )
        return (
            f"seed {self.seed}: SLO p{self.slo_quantile * 100:g}<={self.slo_ms:.0f} ms,"
            f" load {self.load_factor:.2f}x of {self.capacity_per_s:.1f} turns/s;"
            f" {engines}; {hosted}"
        )


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _engine(i: int, rng: random.Random) -> EngineSpec:
    slots = rng.randint(2, 16)
    unloaded = rng.uniform(0.020, 0.150)
    step = min(unloaded * rng.uniform(0.3, 0.8), 0.035)
    slowdown = rng.uniform(1.3, 3.0)
    params = EngineParams(
        max_num_seqs=slots,
        kv_cache_tokens=slots * 8192,
        max_model_len=8192,
        prefill_s_per_token=rng.uniform(10, 60) / 1e6,
        step_s=step,
        step_s_per_seq=step * (slowdown - 1) / max(slots - 1, 1),
    )
    return EngineSpec(f"local-{i}", params, latency_s=unloaded - step, unloaded_ttft_s=unloaded)


def _hosted(i: int, rng: random.Random, rpm: int | None) -> HostedSpec:
    stall_p = 0.0 if rng.random() < 0.3 else rng.uniform(0.005, 0.05)
    params = HostedParams(
        ttft_median_s=_loguniform(rng, 0.15, 0.7),
        ttft_sigma=rng.uniform(0.2, 0.6),
        stall_probability=stall_p,
        stall_s=rng.uniform(1.0, 5.0),
        itl_s=rng.uniform(0.005, 0.02),
        rpm=rpm,
    )
    price_in = _loguniform(rng, 0.1, 5.0)
    return HostedSpec(f"hosted-{i}", params, price_in, _loguniform(rng, price_in, 5.0 + 1e-9))


def _engine_capacity(e: EngineSpec, mean_output: float) -> float:
    p = e.params
    full_step = p.step_s + p.step_s_per_seq * (p.max_num_seqs - 1)
    return ENGINE_HEADROOM * p.max_num_seqs / (mean_output * full_step + e.unloaded_ttft_s)


def _lognormal_mean(d: Dist) -> float:
    return d.median * math.exp(d.sigma**2 / 2)


def generate(seed: int) -> FleetSpec:
    """One fleet, its load and its SLO, all drawn from `random.Random(seed)`."""
    rng = random.Random(f"fleet:{seed}")
    engines = tuple(_engine(i, rng) for i in range(rng.randint(1, 4)))
    n_hosted = rng.randint(1, 3)
    output = Dist(median=rng.uniform(40, 150), sigma=0.5, min=8, max=400)
    turns_per_session = Dist(median=rng.uniform(2, 6), sigma=0.5, min=1, max=12)
    mean_output = _lognormal_mean(output)
    local = sum(_engine_capacity(e, mean_output) for e in engines)
    limited = [rng.random() < 0.5 for _ in range(n_hosted)]
    rpms = [round(60 * local * rng.uniform(0.2, 0.8)) if lim else None for lim in limited]
    hosted = tuple(_hosted(i, rng, max(rpm, 6) if rpm else None) for i, rpm in enumerate(rpms))
    capacity = local + sum(h.params.rpm / 60 for h in hosted if h.params.rpm)
    load = rng.uniform(0.3, 1.2)
    turn_rate = load * capacity
    duration = min(max(TURNS / turn_rate, DURATION_S[0]), DURATION_S[1])
    bursts = tuple(
        Burst(
            at_s=duration * rng.uniform(0.15, 0.85),
            duration_s=rng.uniform(5, 10),
            multiplier=rng.uniform(2, 3),
        )
        for _ in range(rng.randint(1, 2))
    )
    session_rate = turn_rate / _lognormal_mean(turns_per_session)
    workload = Workload(
        duration_s=duration,
        model="chat",
        arrivals=Arrivals(
            rate_per_s=session_rate,
            ramp=Ramp(start_rate_per_s=session_rate / 2, duration_s=10.0),
            bursts=bursts,
        ),
        turns_per_session=turns_per_session,
        think_time_s=Dist(median=rng.uniform(2, 6), sigma=0.5, max=20),
        assumed_response_s=1.5,
        system_prompt_tokens=rng.randint(100, 800),
        prompt_tokens=Dist(median=rng.uniform(20, 80), sigma=0.6, min=3, max=400),
        output_tokens=output,
    )
    return FleetSpec(
        seed=seed,
        engines=engines,
        hosted=hosted,
        slo_ms=round(rng.uniform(300, 800)),
        slo_quantile=0.99,
        load_factor=load,
        capacity_per_s=capacity,
        workload=workload,
    )


def policy_yaml(
    fleet: FleetSpec,
    policy: str,
    *,
    hedge: bool,
    targets: tuple[str, ...] | None = None,
    cost_share: float | None = None,
) -> dict[str, Any]:
    """The policy file a user would write for this fleet: the route's targets (engines
    first), the SLO, prices, the engines' `max_num_seqs` (the SRE deployed them with
    it, as in benchmarks/policies/routing.yaml) and nothing measured: every target
    starts at the default TTFT prior. `base_url`s are placeholders: the benchmark
    calls the simulated servers in-process."""
    entries: list[dict[str, Any]] = []
    for e in fleet.engines:
        entries.append(
            {
                "name": e.name,
                "kind": "vllm",
                "base_url": f"http://{e.name}.sim/v1",
                "model": "m",
                "max_num_seqs": e.params.max_num_seqs,
            }
        )
    for h in fleet.hosted:
        entries.append(
            {
                "name": h.name,
                "kind": "openai",
                "base_url": f"http://{h.name}.sim/v1",
                "model": "m",
                "price": {"input_per_mtok": h.input_per_mtok, "output_per_mtok": h.output_per_mtok},
            }
        )
    route: dict[str, Any] = {
        "name": "chat",
        "targets": list(targets or fleet.names),
        "policy": {"type": policy},
        "slo": {"ttft_ms": fleet.slo_ms, "quantile": fleet.slo_quantile},
    }
    if hedge:
        route["hedge"] = {"after_ms": "adaptive", "max_extra": 1, "max_rate": 0.1}
        if cost_share is not None:
            route["hedge"]["max_cost_share"] = cost_share
    return {"targets": entries, "routes": [route]}
