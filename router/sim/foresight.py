"""When would a request sent to a simulated engine now get its first token?

The hindsight oracle of the routing benchmark needs, for every turn, the time each
target would have answered in. For a `router.sim.engine.Engine` that is a replay of
its scheduler from its present state, with the new request at the tail of the
waiting queue and nothing else arriving: the step in progress ends at
`engine.step_ends_at` and gives every running sequence a token; at each step
boundary the FIFO head is admitted while the batch and the KV budget have room;
a step lasts its prefill plus `step_s + step_s_per_seq * (batch - 1)`.

Between admissions the batch only changes when a sequence finishes, so the replay
jumps from one departure to the next instead of stepping token by token: it costs
one pass per departure, not per token. It reads the engine and never changes it
(prefix-cache hits are looked up without touching the LRU's order). Later arrivals
can still share the new request's admission step (their prefill would lengthen it)
or take its place behind a departure; this ignores them, as a router deciding now
would have to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from router.sim.engine import Engine, EngineParams


def _cached(engine: Engine, prefix_keys: Sequence[tuple[str, int]], prompt_tokens: int) -> int:
    hit = 0
    for key, tokens in prefix_keys:
        if key not in engine._prefixes:
            break
        hit = tokens
    return min(hit, prompt_tokens - 1)


def _step_s(params: EngineParams, prefill_tokens: int, batch: int) -> float:
    return (
        prefill_tokens * params.prefill_s_per_token
        + params.step_s
        + params.step_s_per_seq * (max(batch, 1) - 1)
    )


def first_token_at(
    engine: Engine,
    prompt_tokens: int,
    n_tokens: int,
    prefix_keys: Sequence[tuple[str, int]],
    now: float,
) -> float:
    """The engine time at which a request submitted `now` would get its first token
    (`math.inf` if it could never be admitted)."""
    params = engine.params
    mine = (
        prompt_tokens - _cached(engine, prefix_keys, prompt_tokens),
        prompt_tokens + n_tokens,
        n_tokens,
    )
    if engine.step_ends_at is None:
        # Idle: the engine loop wakes at once and admits it alone.
        return now + _step_s(params, mine[0], 1)
    t = engine.step_ends_at
    remaining: list[tuple[int, int]] = []  # (tokens still to produce, kv tokens held)
    kv = 0
    for seq in engine.running:
        left = seq.n_tokens - seq.produced - 1  # after the step in progress
        if left > 0:
            remaining.append((left, seq.kv_tokens))
            kv += seq.kv_tokens
    # (prompt tokens to prefill, kv tokens, output tokens) of each waiting request
    queue: list[tuple[int, int, int]] = [
        (s.prompt_tokens - _cached(engine, s.prefix_keys, s.prompt_tokens), s.kv_tokens, s.n_tokens)
        for s in engine.waiting
    ]
    queue.append(mine)
    me = len(queue) - 1
    head = 0
    budget = params.kv_cache_tokens
    while True:
        prefill = 0
        admitted_me = False
        while head < len(queue) and len(remaining) < params.max_num_seqs:
            new_prefill, kv_tokens, tokens = queue[head]
            if kv + kv_tokens > budget:
                break
            kv += kv_tokens
            prefill += new_prefill
            remaining.append((tokens, kv_tokens))
            admitted_me = head == me
            head += 1
        if admitted_me:
            return t + _step_s(params, prefill, len(remaining))
        if not remaining:
            return math.inf  # it does not fit even in an empty engine
        # One step (with the prefill of what was just admitted); then, while the head
        # cannot be admitted, whole steps until the next departure makes room.
        t += _step_s(params, prefill, len(remaining))
        remaining = [(left - 1, held) for left, held in remaining]
        kv -= sum(held for left, held in remaining if left <= 0)
        remaining = [(left, held) for left, held in remaining if left > 0]
        blocked = len(remaining) >= params.max_num_seqs or kv + queue[head][1] > budget
        if blocked and remaining:
            jump = min(left for left, _ in remaining)
            t += jump * _step_s(params, 0, len(remaining))
            remaining = [(left - jump, held) for left, held in remaining]
            kv -= sum(held for left, held in remaining if left <= 0)
            remaining = [(left, held) for left, held in remaining if left > 0]
