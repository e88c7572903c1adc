"""What a turn would cost in time and money on one target, from its `TargetView`.

Hosted targets are elastic, so their measured TTFT sketch is the prediction; it is
inflated as the provider's rate-limit headroom runs out, so a target near its limit
loses traffic before it starts answering 429. The sketch takes the attempts that
lost a hedge as censored samples (`router.signals.sketch`), so a target seen mostly
as a hedge is not measured only when it wins; its first sample replaces the YAML
prior, so a fast target is believed fast from its first answer.

`optimistic_ttft_s` is the same prediction with the sketch's optimistic bounds (what
the TTFT may well be, given how little was measured: 0 for a target never or long
not measured). Exploration (`rank.py`) uses it to find the targets that might be
better than the policy's choice.

A vLLM target is a queue. A new turn that finds the engine's batch full waits for
`k` running sequences to finish (one per turn queued ahead of it, plus one for its
own slot), then pays the engine's unloaded TTFT:

    predicted(q) = unloaded + wait_k(q) + min(sketch(q) - sketch(p50), unloaded)

A full batch holds many independent sequences, so its departures are close to a
Poisson stream (Palm-Khintchine: a superposition of independent renewal streams);
the wait for `k` of them at rate `r` is then Erlang(k, r), and `wait_k(q)` is its
q-quantile, not its mean: one slot at p90 is ln(10) / r, 2.3 times the mean. A
route's SLO is a quantile, so the queue's own spread has to be in the prediction
(a mean-based one "met" a p90 of 500 ms for turns that then waited 600 ms).

The last term adds the spread the sketch has seen at the asked quantile, bounded by
the unloaded TTFT itself: most of a busy engine's spread is queueing, which the
wait term already counts, and an uncapped spread would keep a drained engine
looking slow long after its queue emptied. The service rate is the larger of the
measured completion rate (on a quiet engine that is only the arrival rate) and
Little's law over the running batch. TTFT grows
with the waiting queue, not with the running batch (llm-d, 2025-09: mean queue 0.1
-> p90 0.54 s, queue 8 -> 31 s). Stale engine stats count as saturated: a large
penalty, never infinity, so a fleet whose scrapes are all stale still routes.
"""

from __future__ import annotations

import functools
import math

from router.policy.base import RoutingRequest, TargetView, interpolate

#: the quantile reported by policies that do not choose one (and by routes without an SLO)
DEFAULT_QUANTILE = 0.9
#: output tokens assumed when neither the request nor the target's history says
DEFAULT_OUTPUT_TOKENS = 256
#: seconds per output token assumed before a target's decode speed is measured
DEFAULT_TPOT_S = 0.02
#: the wait charged to a vLLM target whose engine stats are stale ("saturated")
STALE_PENALTY_S = 30.0
#: waiting requests assumed behind a stale engine, for load scores
STALE_WAITING = 64.0
#: one-sided 90 % normal quantile, for the confidence bounds on a TTFT ...
Z_90 = 1.2816
#: ... of a location whose log-spread is about this (lognormal sigma 0.2-0.6 seen)
LOG_SPREAD = 0.5
#: the least evidence a confidence bound is computed for (a bound of 3.6x)
MIN_EVIDENCE = 0.25
#: the quantile levels `attainment` searches between, and its bisection steps
ATTAINMENT_RANGE = (0.01, 0.999)
ATTAINMENT_STEPS = 10
#: below this rate-limit headroom a hosted target's TTFT is inflated ...
RATELIMIT_KNEE = 0.2
#: ... linearly, up to this factor at zero headroom
RATELIMIT_MAX_FACTOR = 4.0


def is_queue_modelled(view: TargetView) -> bool:
    """vLLM targets are predicted from their queue; everything else from its sketch."""
    return view.kind == "vllm"


def expected_output_tokens(view: TargetView, request: RoutingRequest) -> float:
    if request.max_output_tokens is not None:
        return float(request.max_output_tokens)
    if view.mean_output_tokens is not None:
        return view.mean_output_tokens
    return float(DEFAULT_OUTPUT_TOKENS)


def expected_cost_usd(view: TargetView, request: RoutingRequest) -> float:
    """Dollars for this turn: prompt tokens at the input price, expected output at the output."""
    out = expected_output_tokens(view, request)
    price = view.price
    return (request.prompt_tokens * price.input_per_mtok + out * price.output_per_mtok) / 1e6


def ratelimit_factor(headroom: float) -> float:
    """1.0 with plenty of headroom, rising linearly to RATELIMIT_MAX_FACTOR at none."""
    h = min(max(headroom, 0.0), 1.0)
    if h >= RATELIMIT_KNEE:
        return 1.0
    return 1.0 + (RATELIMIT_MAX_FACTOR - 1.0) * (RATELIMIT_KNEE - h) / RATELIMIT_KNEE


def completion_rate(view: TargetView) -> float:
    """Turns per second the target can complete: the measured rate or Little's law.

    A batch of `running` turns (at least one) each lasting unloaded TTFT + mean
    output x time per token completes at running / duration. A measured rate only
    says how fast turns arrived on a quiet engine, so it never lowers that bound.
    A stale engine's batch is the most it has shown it holds (its capacity, or the
    most seen running): stale engines are ranked by our turns there over this rate,
    and when the router itself stalls (2 s on a busy 2-core machine) every engine is
    stale at once; ranked by turns alone, the seven turns that had queued up in the
    stall all went to the 2-slot engine beside an 8-slot one with 8 (`make test-vllm`).

    The time per token is the engine's decode pace now (its inter-token latency over
    the last second: `EngineView.decode_s`) when its page shows one, else the
    router's own measure, which is what its turns saw when they finished: a batch that
    grew since decodes slower than that (a CPU engine's turns took 5-9 s at 8 running
    against 3.3 s alone), and the queue behind it drains slower too.
    """
    measured = view.completion_rate or 0.0
    engine = view.engine
    if engine is None:
        running = 0.0
    elif engine.stale:
        running = max(engine.capacity or 0.0, engine.proven_running)
    else:
        running = engine.running
    out = view.mean_output_tokens if view.mean_output_tokens is not None else DEFAULT_OUTPUT_TOKENS
    if engine is not None and engine.decode_s is not None:
        tpot = engine.decode_s
    else:
        tpot = view.tpot_s if view.tpot_s is not None else DEFAULT_TPOT_S
    duration = max(view.unloaded_ttft_s + out * tpot, 1e-3)
    return max(measured, max(running, 1.0) / duration)


def is_empty(view: TargetView) -> bool:
    """A vLLM target whose fresh scrape saw nothing running or waiting, with none of
    our turns in flight: a new turn is the engine's only sequence."""
    engine = view.engine
    return (
        engine is not None
        and not engine.stale
        and engine.running == 0.0
        and engine.waiting == 0.0
        and view.in_flight == 0
    )


def waiting_ahead(view: TargetView) -> float:
    """Requests a new turn would queue behind on a vLLM target (0 for hosted ones).

    The scrape may be up to one interval old while the router's own in-flight count
    is live: turns sent since the scrape beyond what the engine was running are
    counted as waiting too, whichever of the two says more. When the engine's batch
    size is known (YAML `max_num_seqs`, or learned from a scrape that showed a
    queue), only what exceeds it waits. Unknown, the batch still holds at least the
    most sequences a scrape has seen running: with no queue seen, turns of ours in
    transit (sent, not yet in the gauges, which lag 0.3-0.6 s under load) wait only
    beyond that many (a real 8-slot engine with 6 of ours in flight, 3 scraped
    running, was priced as a queue of 3 while 5 slots were free). No scrape yet:
    unknown, counted as none. A stale scrape: saturated.

    Until the engine has shown a queue at all (`EngineView.queue_seen`), it is believed
    to hold twice the most it has shown running (at least two): a slow start, as TCP
    grows its window. The most a fresh router has seen running is only what its first
    turns made run, and counting our turns beyond it as queued priced an idle 8-slot
    engine, two turns in transit and its scrape 0.5 s old, at 13 s (one at a time, its
    turns had lasted 3.3 s), so a burst went to the 2-slot engine's real queue (`make
    test-vllm`, 12-07: p90 7.2 s against round robin's 6.4). Believing in room without
    bound instead sent the four turns that piled up in a 1.4 s stall of the router all
    to the 2-slot engine. If the belief is wrong, the turn it sends waits, the scrape
    shows the queue, and the race moves the turn (`router.turn.requeue`), which
    teaches the batch size at once (`EngineTracker.held_a_turn`).
    """
    engine = view.engine
    if not is_queue_modelled(view) or engine is None:
        return 0.0
    if engine.stale:
        return STALE_WAITING
    if engine.capacity is not None:
        # Known batch size: of everything the engine holds now (what it reported, or
        # the router's own turns if more were sent since), what does not fit waits.
        holding = max(engine.running + engine.waiting, float(view.in_flight))
        return max(engine.waiting, holding - engine.capacity, 0.0)
    if not engine.queue_seen:
        # Slow start: room for twice what it has shown it runs, as TCP grows its window.
        room = 2.0 * max(engine.running, engine.proven_running, 1.0)
        return max(engine.waiting, view.in_flight - room, 0.0)
    room = engine.running if engine.waiting > 0 else max(engine.running, engine.proven_running)
    return max(engine.waiting, view.in_flight - room, 0.0)


def slots_needed(view: TargetView) -> int:
    """Running sequences that must finish before a new turn gets a slot (0: room now).

    With the batch size known, a turn that would make the engine hold more than it
    runs waits for the excess to drain, itself included: a batch that is exactly
    full makes it wait for one. Unknown, a queue (seen, or inferred from the
    router's own turns) means the batch is full: everyone ahead, plus its own slot.
    """
    engine = view.engine
    if not is_queue_modelled(view) or engine is None or engine.stale:
        return 0
    if engine.capacity is not None:
        # A learned batch size is a lower bound: an engine running more has more room.
        capacity = max(engine.capacity, engine.running)
        holding = max(engine.running + engine.waiting, float(view.in_flight))
        return max(math.ceil(holding + 1.0 - capacity), 0)
    ahead = waiting_ahead(view)
    return math.ceil(ahead) + 1 if ahead > 0 else 0


@functools.lru_cache(maxsize=4096)
def erlang_quantile(k: int, q: float) -> float:
    """The q-quantile of an Erlang(k, 1) time: k unit-rate Poisson events (0 for k=0).

    P(T <= x) = P(Poisson(x) >= k); solved by bisection, which is exact to 1e-12 and
    needs no special functions. Divide by the rate for seconds. Memoised: the
    bisection costs 20-40 us and runs in a turn's plan, while (k, q) takes few values
    (queue lengths, and a route's SLO quantile).
    """
    if k <= 0:
        return 0.0
    q = min(max(q, 1e-9), 1.0 - 1e-9)

    def cdf(x: float) -> float:
        term = total = math.exp(-x)
        for i in range(1, k):
            term *= x / i
            total += term
        return 1.0 - total

    lo, hi = 0.0, k + 10.0 * math.sqrt(k) + 30.0
    while hi - lo > 1e-12 * max(hi, 1.0):
        mid = (lo + hi) / 2.0
        if cdf(mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def expected_wait_s(view: TargetView) -> float:
    """Mean seconds a new turn waits in a vLLM target's queue before its prefill starts."""
    engine = view.engine
    if not is_queue_modelled(view) or engine is None:
        return 0.0
    rate = completion_rate(view)
    if engine.stale:
        # Saturated, but still ordered: the fewer of our own turns there, the better.
        return STALE_PENALTY_S + view.in_flight / rate
    return slots_needed(view) / rate


def wait_quantile_s(view: TargetView, q: float) -> float:
    """Seconds a new turn waits for its slot, at quantile q: Erlang(k, rate)."""
    engine = view.engine
    if not is_queue_modelled(view) or engine is None:
        return 0.0
    if engine.stale:
        return expected_wait_s(view)
    return erlang_quantile(slots_needed(view), q) / completion_rate(view)


def predict_ttft_s(view: TargetView, q: float) -> float:
    """Predicted time to first token, in seconds, at quantile q (once per snapshot)."""
    known = view.predicted.get(q)
    if known is not None:
        return known
    if not is_queue_modelled(view):
        made = view.ttft_quantile(q) * ratelimit_factor(view.ratelimit_headroom)
    else:
        made = free_slot_ttft_s(view, q) + wait_quantile_s(view, q)
    view.predicted[q] = made
    return made


def free_slot_ttft_s(view: TargetView, q: float) -> float:
    """A vLLM target's TTFT at quantile q for a turn that finds a slot free: measured on
    such turns (prefill, and the step time of the batch it joins; each quantile only as
    high as their number can place it: `DecayingQuantiles.placed_quantiles`), else the
    unloaded TTFT plus the spread of all samples (at most the unloaded TTFT again).

    An empty engine (its last scrape saw nothing running or waiting, and none of our
    turns is in flight) has no batch to join: the latter. The free-slot sketch only
    learns from turns sent, so a burst's one slow "free" turn would otherwise keep a
    drained engine above an SLO for as long as nothing is sent to it (for ever, with
    exploration off): CI saw a free engine never win traffic back after a burst. So an
    empty engine's prediction is the free-slot sketch's, at most the unloaded bound."""
    spread = max(view.ttft_quantile(q) - view.ttft_quantile(0.5), 0.0)
    bound = view.unloaded_ttft_s + min(spread, view.unloaded_ttft_s)
    if not view.free_ttft_quantiles:
        return bound
    measured = interpolate(view.free_ttft_quantiles, q, view.unloaded_ttft_s)
    return min(measured, bound) if is_empty(view) else measured


def optimistic_ttft_s(view: TargetView, q: float) -> float:
    """What the TTFT at quantile q may well be, given how little was measured.

    Hosted: the sketch's optimistic bound. vLLM: the queue is observed, not guessed,
    so only the unloaded part is optimistic (and the spread left out)."""
    if not is_queue_modelled(view):
        return view.ttft_optimistic_quantile(q) * ratelimit_factor(view.ratelimit_headroom)
    unloaded = min(view.unloaded_ttft_s, view.ttft_optimistic_quantile(0.5))
    return unloaded + wait_quantile_s(view, q)


def load(view: TargetView) -> float:
    """Outstanding turns: the router's own in flight plus any queue seen at the engine."""
    return view.in_flight + waiting_ahead(view)


def peak_ewma_cost(view: TargetView) -> float:
    """Peak-EWMA TTFT x (in-flight + 1): the load metric of Finagle's and tower's p2c."""
    return view.ttft_ewma_s * (view.in_flight + 1)


def attainment(view: TargetView, within_s: float) -> float:
    """The predicted probability that the TTFT is at most `within_s`: the quantile
    level at which `predict_ttft_s` reaches it (bisection; the prediction rises with q)."""
    lo, hi = ATTAINMENT_RANGE
    if predict_ttft_s(view, hi) <= within_s:
        return 1.0
    if predict_ttft_s(view, lo) > within_s:
        return 0.0
    for _ in range(ATTAINMENT_STEPS):
        mid = (lo + hi) / 2.0
        if predict_ttft_s(view, mid) <= within_s:
            lo = mid
        else:
            hi = mid
    return lo


def doubt(view: TargetView) -> float:
    """How much later a measured TTFT may well be, for the evidence behind it: the
    upper confidence factor `exp(z s / sqrt(n))` on a location (1.9x on one sample,
    1.07x on a hundred; 1 for a target without samples, which the prior stands for).
    An SLO at p99 read off a few dozen samples is read optimistically otherwise."""
    if view.ttft_evidence <= 0.0:
        return 1.0
    # Evidence decays: a sample from long ago weighs next to nothing, and the bound on
    # it would overflow. Less than a quarter of a sample is treated as a quarter.
    return math.exp(Z_90 * LOG_SPREAD / math.sqrt(max(view.ttft_evidence, MIN_EVIDENCE)))


def promised_ttft_s(view: TargetView, q: float) -> float:
    """The TTFT at quantile q a target can be trusted to keep: the prediction, times
    its `doubt`. What `slo_cost` and affinity check an SLO against."""
    return predict_ttft_s(view, q) * doubt(view)
