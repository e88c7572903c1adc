"""What a run on a generated fleet says: SLO attainment, tails, cost, misses by cause.

Pure functions of a `benchmarks.fleetsim.RunResult` and its `FleetSpec`:

- `summarise(spec, result)`: turns, SLO attainment (errors count as misses), TTFT
  p50/p90/p99 (an unanswered turn counts as infinitely late), cost as the upstreams
  billed it (hedge losers, fallbacks and probes included: prompt tokens plus the
  tokens each attempt streamed, at its price), extra upstream requests per turn
  (every request beyond one per turn: hedges, fallbacks, 429s, probes; and without
  the probes, which are made by the clock, not by turns), the share
  of turns hedged and served by a local engine, and each miss's cause:

  - `rate limit`: an attempt of the turn was refused with a 429 (or the turn failed
    with every target filtered out or failing);
  - `queueing`: the turn's first attempt went to an engine and was not hedged;
  - `stall not hedged`: its first attempt went to a hosted API that stalled on it
    (the draw for this turn had a stall), and no hedge started;
  - `slow draw not hedged`: as above, without a stall: the lognormal's own tail;
  - `hedge too late`: a hedge started, and the turn still missed;
  - `fallback`: the first attempt failed (a timeout) and the next was too late;
  - `error`: anything else that left the turn unanswered.

- `right_targets(spec, policy, prompt_tokens)`: which targets a turn of sequential
  traffic should go to (the cold-start bar): for `latency` the fastest at p90 (any
  within 10 % or 10 ms of it), for `slo_cost` the cheapest whose p90 meets the SLO
  (all of them if several are free), else the fastest. An engine's p90 on an idle
  engine is its unloaded TTFT plus the prefill of the prompt beyond the shared
  system prompt (cached after the first request); a hosted API's is its lognormal
  with stalls.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from fleets import FleetSpec
from fleetsim import RunResult, TurnRecord, draw_salt

from router.sim.hosted import keyed_draw
from router.sim.inproc import AttemptRecord

CAUSES = (
    "queueing",
    "stall not hedged",
    "slow draw not hedged",
    "hedge too late",
    "fallback",
    "rate limit",
    "error",
)


@dataclass(slots=True)
class Summary:
    config: str
    seed: int
    turns: int
    attainment: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    cost_per_1k: float
    extra_upstream: float
    hedged: float
    local_share: float
    #: extra upstream requests made for turns (hedges, fallbacks, 429s), per turn
    extra_for_turns: float
    probes: int
    misses: Counter[str] = field(default_factory=Counter)
    #: hedged turns by whether the hedge won and whether the turn met the SLO
    hedges: Counter[str] = field(default_factory=Counter)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (inf counts as a value)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q * len(ordered)) - 1, 0), len(ordered) - 1)]


def cost_usd(spec: FleetSpec, attempts: Sequence[AttemptRecord]) -> float:
    total = 0.0
    for a in attempts:
        if a.status != 200:
            continue
        price_in, price_out = spec.price(a.target)
        total += (a.prompt_tokens * price_in + a.tokens_sent * price_out) / 1e6
    return total


def by_turn(attempts: Sequence[AttemptRecord]) -> dict[str, list[AttemptRecord]]:
    out: dict[str, list[AttemptRecord]] = defaultdict(list)
    for a in attempts:
        if a.key is not None:
            out[a.key].append(a)
    for group in out.values():
        group.sort(key=lambda a: a.started_at)
    return out


def miss_cause(spec: FleetSpec, turn: TurnRecord, attempts: Sequence[AttemptRecord]) -> str:
    if any(a.status == 429 for a in attempts) or turn.error == "NoTargetAvailable":
        return "rate limit"
    if turn.error is not None or not attempts:
        return "error"
    if turn.hedged:
        return "hedge too late"
    if turn.fell_back:
        return "fallback"
    first = attempts[0]
    hosted = {h.name: h for h in spec.hosted}
    if first.target not in hosted:
        return "queueing"
    salt = draw_salt(spec.seed, first.target)  # the draw the run's backend made
    stalled = keyed_draw(hosted[first.target].params, salt, str(turn.index))[1]
    return "stall not hedged" if stalled else "slow draw not hedged"


def summarise(spec: FleetSpec, result: RunResult) -> Summary:
    slo_s = spec.slo_ms / 1000.0
    turns = result.turns
    n = max(len(turns), 1)
    ttfts = [t.ttft_s if t.ttft_s is not None and t.error is None else math.inf for t in turns]
    met = sum(1 for v in ttfts if v <= slo_s)
    groups = by_turn(result.attempts)
    misses: Counter[str] = Counter()
    for t, v in zip(turns, ttfts, strict=True):
        if v > slo_s:
            misses[miss_cause(spec, t, groups.get(str(t.index), []))] += 1
    hedges: Counter[str] = Counter()
    for t, v in zip(turns, ttfts, strict=True):
        attempts = groups.get(str(t.index), [])
        if t.hedged and attempts:
            won = "hedge won" if t.target != attempts[0].target else "hedge lost"
            hedges[f"{won}, {'in time' if v <= slo_s else 'late'}"] += 1
    local = {e.name for e in spec.engines}
    return Summary(
        config=result.config.name,
        seed=spec.seed,
        turns=len(turns),
        attainment=met / n,
        p50_ms=1000 * quantile(ttfts, 0.5),
        p90_ms=1000 * quantile(ttfts, 0.9),
        p99_ms=1000 * quantile(ttfts, 0.99),
        cost_per_1k=1000 * cost_usd(spec, result.attempts) / n,
        extra_upstream=(len(result.attempts) - len(turns)) / n,
        extra_for_turns=(sum(1 for a in result.attempts if a.key is not None) - len(turns)) / n,
        hedged=sum(1 for t in turns if t.hedged) / n,
        local_share=sum(1 for t in turns if t.target in local) / n,
        probes=sum(1 for a in result.attempts if a.key is None),
        misses=misses,
        hedges=hedges,
    )


def true_p90_s(spec: FleetSpec, name: str, prompt_tokens: int) -> float:
    for e in spec.engines:
        if e.name == name:
            uncached = max(prompt_tokens - spec.workload.system_prompt_tokens, 1)
            return e.idle_ttft_s(uncached)
    for h in spec.hosted:
        if h.name == name:
            return h.ttft_quantile_s(0.9)
    raise KeyError(name)


def right_targets(spec: FleetSpec, policy: str, prompt_tokens: int, output_tokens: int) -> set[str]:
    p90 = {name: true_p90_s(spec, name, prompt_tokens) for name in spec.names}
    best = min(p90.values())
    fastest = {n for n, v in p90.items() if v <= max(best * 1.1, best + 0.010)}
    if policy == "latency":
        return fastest
    meeting = [n for n, v in p90.items() if v <= spec.slo_ms / 1000.0]
    if not meeting:
        return fastest

    def cost(name: str) -> float:
        price_in, price_out = spec.price(name)
        return prompt_tokens * price_in + output_tokens * price_out

    cheapest = min(cost(n) for n in meeting)
    return {n for n in meeting if cost(n) <= cheapest * 1.0001}


def cold_start_share(spec: FleetSpec, result: RunResult, first: int = 10, last: int = 40) -> float:
    """The share of turns `first`+1 .. `last` sent to a right target (served by it)."""
    groups = by_turn(result.attempts)
    policy = result.config.policy
    window = result.turns[first:last]
    right = 0
    for t in window:
        attempts = groups.get(str(t.index), [])
        sent = attempts[0].target if attempts else t.target
        if sent in right_targets(spec, policy, t.prompt_tokens, t.max_tokens):
            right += 1
    return right / max(len(window), 1)
