"""What a turn would cost in time and money on one target, from its `TargetView`.

Hosted targets are elastic, so their measured TTFT sketch is the prediction; it is
inflated as the provider's rate-limit headroom runs out, so a target near its limit
loses traffic before it starts answering 429.

A vLLM target is a queue. A new turn waits behind the engine's waiting requests,
which drain at the engine's measured completion rate, then pays the engine's
unloaded TTFT:

    predicted(q) = unloaded + waiting / service_rate + min(sketch(q) - sketch(p50), unloaded)

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

from router.policy.base import RoutingRequest, TargetView

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
    """
    measured = view.completion_rate or 0.0
    running = view.engine.running if view.engine is not None and not view.engine.stale else 0.0
    out = view.mean_output_tokens if view.mean_output_tokens is not None else DEFAULT_OUTPUT_TOKENS
    tpot = view.tpot_s if view.tpot_s is not None else DEFAULT_TPOT_S
    duration = max(view.unloaded_ttft_s + out * tpot, 1e-3)
    return max(measured, max(running, 1.0) / duration)


def waiting_ahead(view: TargetView) -> float:
    """Requests a new turn would queue behind on a vLLM target (0 for hosted ones).

    The scrape may be up to one interval old while the router's own in-flight count
    is live: turns sent since the scrape beyond what the engine was running are
    counted as waiting too, whichever of the two says more. When the engine's batch
    size is known (YAML `max_num_seqs`, or learned from a scrape that showed a
    queue), only what exceeds it waits. No scrape yet: unknown, counted as none. A
    stale scrape: saturated.
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
    return max(engine.waiting, view.in_flight - engine.running, 0.0)


def expected_wait_s(view: TargetView) -> float:
    """Seconds a new turn waits in a vLLM target's queue before its prefill starts."""
    engine = view.engine
    if not is_queue_modelled(view) or engine is None:
        return 0.0
    rate = completion_rate(view)
    if engine.stale:
        # Saturated, but still ordered: the fewer of our own turns there, the better.
        return STALE_PENALTY_S + view.in_flight / rate
    ahead = waiting_ahead(view)
    # A queue means the batch is full: the new turn waits for everyone ahead of it
    # and then for one more running sequence to finish and free its slot.
    return (ahead + 1.0) / rate if ahead > 0 else 0.0


def predict_ttft_s(view: TargetView, q: float) -> float:
    """Predicted time to first token, in seconds, at quantile q."""
    if not is_queue_modelled(view):
        return view.ttft_quantile(q) * ratelimit_factor(view.ratelimit_headroom)
    spread = max(view.ttft_quantile(q) - view.ttft_quantile(0.5), 0.0)
    return view.unloaded_ttft_s + expected_wait_s(view) + min(spread, view.unloaded_ttft_s)


def load(view: TargetView) -> float:
    """Outstanding turns: the router's own in flight plus any queue seen at the engine."""
    return view.in_flight + waiting_ahead(view)


def peak_ewma_cost(view: TargetView) -> float:
    """Peak-EWMA TTFT x (in-flight + 1): the load metric of Finagle's and tower's p2c."""
    return view.ttft_ewma_s * (view.in_flight + 1)
