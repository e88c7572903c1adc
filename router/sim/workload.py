"""The turns a workload offers, as a pure, seeded generator (no I/O, no clock).

Model:
- Sessions start open-loop as a Poisson process whose rate varies with time:
  `rate_per_s`, reached linearly from `ramp.start_rate_per_s` over `ramp.duration_s`,
  times the `multiplier` of every burst active at that time. It is sampled by
  thinning (Lewis and Shedler, 1979): candidates at the peak rate, each kept with
  probability rate(t) / peak.
- A session has `turns_per_session` turns. Turn k+1 arrives `assumed_response_s`
  plus a think time after turn k arrived (open-loop: the generator does not wait
  for real answers).
- Every turn carries the whole conversation so far: a system prompt shared by all
  sessions, then the user messages and, for earlier turns, an assistant message
  with the text the simulator would answer (`t0 t1 ...` of that turn's
  max_tokens). Messages of a session never change between its turns, so a
  prefix cache (the vLLM-like simulator's, or a real one) can hit on them.

`turns(workload, random.Random(seed))` yields `Turn`s in arrival order; the same
seed gives the same turns.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from router.sim.scenario import Arrivals, Dist, Workload
from router.sim.wire import completion_text

Message = dict[str, str]
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


@dataclass(frozen=True, slots=True)
class Turn:
    arrival_time_s: float
    session_id: int
    turn_index: int
    messages: tuple[Message, ...]
    max_tokens: int


def sample(dist: Dist, rng: random.Random) -> float:
    value = dist.median
    if dist.sigma > 0:
        value = rng.lognormvariate(math.log(dist.median), dist.sigma)
    value = max(dist.min, value)
    return min(dist.max, value) if dist.max is not None else value


def rate_at(arrivals: Arrivals, t: float) -> float:
    rate = arrivals.rate_per_s
    ramp = arrivals.ramp
    if ramp is not None and t < ramp.duration_s:
        rate = ramp.start_rate_per_s + (rate - ramp.start_rate_per_s) * t / ramp.duration_s
    for burst in arrivals.bursts:
        if burst.at_s <= t < burst.at_s + burst.duration_s:
            rate *= burst.multiplier
    return rate


def session_starts(arrivals: Arrivals, duration_s: float, rng: random.Random) -> Iterator[float]:
    """Start times in [0, duration_s) of a time-varying Poisson process (by thinning)."""
    base = max(arrivals.rate_per_s, arrivals.ramp.start_rate_per_s if arrivals.ramp else 0.0)
    peak = base * math.prod(max(1.0, b.multiplier) for b in arrivals.bursts)
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return
        if rng.random() * peak < rate_at(arrivals, t):
            yield t


def _text(tag: str, tokens: int) -> str:
    chars = max(len(tag), tokens * 4)
    body = _FILLER * (chars // len(_FILLER) + 1)
    return (tag + body)[:chars]


@dataclass(slots=True)
class _Session:
    id: int
    prompts: list[int]
    outputs: list[int]
    gaps: list[float]
    system: str

    def messages(self, k: int) -> tuple[Message, ...]:
        out: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        for i in range(k + 1):
            out.append({"role": "user", "content": _text(f"[s{self.id} t{i}] ", self.prompts[i])})
            if i < k:
                out.append({"role": "assistant", "content": completion_text(self.outputs[i])})
        return tuple(out)


def _new_session(sid: int, workload: Workload, rng: random.Random, system: str) -> _Session:
    n = max(1, round(sample(workload.turns_per_session, rng)))
    return _Session(
        id=sid,
        prompts=[max(1, round(sample(workload.prompt_tokens, rng))) for _ in range(n)],
        outputs=[max(1, round(sample(workload.output_tokens, rng))) for _ in range(n)],
        gaps=[
            workload.assumed_response_s + sample(workload.think_time_s, rng) for _ in range(n - 1)
        ],
        system=system,
    )


def turns(workload: Workload, rng: random.Random) -> Iterator[Turn]:
    """Every turn of the workload, in arrival order."""
    system = (
        _text("You are a concise assistant. ", workload.system_prompt_tokens)
        if workload.system_prompt_tokens
        else ""
    )
    starts = session_starts(workload.arrivals, workload.duration_s, rng)
    order = itertools.count()
    pending: list[tuple[float, int, _Session, int]] = []
    next_start = next(starts, None)
    sids = itertools.count()
    while pending or next_start is not None:
        if next_start is not None and (not pending or next_start <= pending[0][0]):
            session = _new_session(next(sids), workload, rng, system)
            heapq.heappush(pending, (next_start, next(order), session, 0))
            next_start = next(starts, None)
            continue
        at, _, session, k = heapq.heappop(pending)
        yield Turn(at, session.id, k, session.messages(k), session.outputs[k])
        if k + 1 < len(session.prompts):
            heapq.heappush(pending, (at + session.gaps[k], next(order), session, k + 1))
