"""An open-loop load driver: replays workload turns through a router over HTTP.

    turns = workload.turns(scenario.workload, random.Random(scenario.seed))
    outcomes = await drive("http://127.0.0.1:8080/v1", turns, duration_s=60, route="chat")
    print(summarise(outcomes, slo_ms=400, prices={"local-a": Price()}))

Open-loop (the clock, not the answers, paces the load): each turn is sent at its
`arrival_time_s` as a streaming chat completion with `x-session-id`, whether or
not earlier turns have finished. A cap on turns in flight protects the driver
itself; a turn that finds the cap full is recorded as `dropped`, never queued
(queueing would hide the overload the run is meant to show). No turn is sent at
or after `duration_s`; turns still streaming then get `drain_s` to finish and
are cut (cancelled, recorded as `cut`) after that.

TTFT is measured the way a user feels it: from sending the request to the first
SSE frame with non-empty `delta.content`. The router's `x-firsttoken-*` headers
say which target served the turn, how many attempts it took and why.

The default client is httpx on its stock transport, plenty for demo-sized loads.
Past ~200 streams/s the driver itself would become the bottleneck; pass
`client=httpx.AsyncClient(transport=router.tools.transport.AiohttpTransport())`
there.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import anyio
import httpx

from router.clock import Clock
from router.config import Price
from router.sim.workload import Turn

Outcome = Literal["ok", "error", "dropped", "cut"]


@dataclass(slots=True)
class TurnOutcome:
    """One turn as the client saw it. Times are seconds since the run started."""

    session_id: int
    turn_index: int
    scheduled_s: float
    sent_s: float | None = None
    ttft_s: float | None = None
    end_s: float | None = None
    outcome: Outcome = "error"
    status: int = 0
    target: str | None = None
    attempts: int = 0
    reason: str = ""
    hedged: bool = False
    fell_back: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _request_body(turn: Turn, route: str) -> bytes:
    return json.dumps(
        {
            "model": route,
            "messages": list(turn.messages),
            "max_tokens": turn.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


def _first_content(frame: Mapping[str, Any]) -> bool:
    for choice in frame.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls"):
            return True
    return False


async def _one(
    client: httpx.AsyncClient,
    url: str,
    turn: Turn,
    *,
    route: str,
    out: TurnOutcome,
    now: Clock,
) -> None:
    body = _request_body(turn, route)
    headers = {"content-type": "application/json", "x-session-id": f"s{turn.session_id}"}
    out.sent_s = now()
    try:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            out.status = response.status_code
            out.target = response.headers.get("x-firsttoken-target")
            out.attempts = int(response.headers.get("x-firsttoken-attempts", "0") or 0)
            out.reason = response.headers.get("x-firsttoken-reason", "")
            out.hedged = "; hedged" in out.reason
            out.fell_back = "; fell back" in out.reason
            if response.status_code != 200:
                text = (await response.aread()).decode("utf-8", "replace")
                out.error = f"HTTP {response.status_code}: {text[:200]}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                # After the first token only the usage frame and an error frame matter:
                # skip the JSON parse of every other chunk (a bytes search is enough).
                if out.ttft_s is not None and '"usage"' not in data and '"error"' not in data:
                    continue
                frame = json.loads(data)
                if "error" in frame:
                    out.error = str(frame["error"].get("message", frame["error"]))[:200]
                    return
                if out.ttft_s is None and _first_content(frame):
                    out.ttft_s = now() - out.sent_s
                usage = frame.get("usage")
                if usage:
                    out.prompt_tokens = int(usage.get("prompt_tokens", 0))
                    out.completion_tokens = int(usage.get("completion_tokens", 0))
        out.outcome = "ok" if out.ttft_s is not None else "error"
        if out.ttft_s is None:
            out.error = "the stream ended without a content token"
    except (httpx.HTTPError, ValueError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:200]
    except anyio.get_cancelled_exc_class():
        out.outcome = "cut"
        out.error = "still streaming at the hard stop"
        raise
    finally:
        out.end_s = now()


async def drive(
    base_url: str,
    turns: Iterable[Turn],
    *,
    duration_s: float,
    route: str,
    max_in_flight: int = 256,
    drain_s: float = 10.0,
    client: httpx.AsyncClient | None = None,
    on_outcome: Callable[[TurnOutcome], None] | None = None,
    clock: Clock = time.monotonic,
) -> list[TurnOutcome]:
    """Send every turn arriving before `duration_s` at its time; return them all.

    `base_url` is the router's OpenAI base URL (ending in `/v1`). `on_outcome` is
    called as each turn finishes (live views). Outcomes come back in arrival order.
    """
    own = client is None
    http = client or httpx.AsyncClient(
        timeout=httpx.Timeout(60.0, connect=5.0),
        limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64),
    )
    url = base_url.rstrip("/") + "/chat/completions"
    start = clock()

    def now() -> float:
        return clock() - start

    outcomes: list[TurnOutcome] = []
    in_flight = 0

    async def run(turn: Turn, out: TurnOutcome) -> None:
        nonlocal in_flight
        try:
            await _one(http, url, turn, route=route, out=out, now=now)
        finally:
            in_flight -= 1
            if on_outcome is not None:
                on_outcome(out)

    try:
        async with anyio.create_task_group() as tg:
            with anyio.move_on_after(duration_s + drain_s):
                async with anyio.create_task_group() as sends:
                    for turn in turns:
                        if turn.arrival_time_s >= duration_s:
                            break
                        delay = turn.arrival_time_s - now()
                        if delay > 0:
                            await anyio.sleep(delay)
                        out = TurnOutcome(turn.session_id, turn.turn_index, turn.arrival_time_s)
                        outcomes.append(out)
                        if in_flight >= max_in_flight:
                            out.outcome = "dropped"
                            out.error = f"over the driver's cap of {max_in_flight} in flight"
                            if on_outcome is not None:
                                on_outcome(out)
                            continue
                        in_flight += 1
                        sends.start_soon(run, turn, out)
            tg.cancel_scope.cancel()
    finally:
        if own:
            await http.aclose()
    return outcomes


async def watch_loop_lag(
    samples: list[float], interval_s: float = 0.05, clock: Clock = time.monotonic
) -> None:
    """Append how late each `interval_s` sleep woke up, until cancelled.

    Driver, router and servers share one loop (and the machine): a late loop shows
    up in every TTFT measured, so a run reports this next to its latencies.
    """
    while True:
        before = clock()
        await anyio.sleep(interval_s)
        samples.append(max(0.0, clock() - before - interval_s))


# -- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 1)


def turn_cost(out: TurnOutcome, prices: Mapping[str, Price]) -> float:
    price = prices.get(out.target or "")
    return price.cost(out.prompt_tokens, out.completion_tokens) if price else 0.0


def summarise(
    outcomes: Sequence[TurnOutcome],
    slo_ms: float,
    prices: Mapping[str, Price] | None = None,
    targets: Sequence[str] = (),
) -> dict[str, Any]:
    """The numbers of a run, as plain JSON-able data.

    SLO attainment counts every turn offered: an error, a drop or a cut is a miss.
    Shares are over turns that got a first token; `targets` lists names to include
    even if they served nothing.
    """
    prices = prices or {}
    ok = [o for o in outcomes if o.ttft_s is not None]
    ttfts = [o.ttft_s for o in ok if o.ttft_s is not None]
    met = sum(1 for t in ttfts if t * 1000.0 <= slo_ms)
    cost = sum(turn_cost(o, prices) for o in outcomes)
    names = list(dict.fromkeys([*targets, *(o.target for o in ok if o.target)]))
    per_target: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [o for o in ok if o.target == name]
        values = [o.ttft_s for o in mine if o.ttft_s is not None]
        per_target[name] = {
            "turns": len(mine),
            "share": round(len(mine) / len(ok), 4) if ok else 0.0,
            "ttft_p50_ms": _ms(percentile(values, 0.5)),
            "ttft_p99_ms": _ms(percentile(values, 0.99)),
            "cost_usd": round(sum(turn_cost(o, prices) for o in mine), 6),
        }
    sent = [o for o in outcomes if o.sent_s is not None]
    return {
        "turns": len(outcomes),
        "ok": sum(1 for o in outcomes if o.outcome == "ok"),
        "errors": sum(1 for o in outcomes if o.outcome == "error"),
        "dropped": sum(1 for o in outcomes if o.outcome == "dropped"),
        "cut": sum(1 for o in outcomes if o.outcome == "cut"),
        "ttft_p50_ms": _ms(percentile(ttfts, 0.5)),
        "ttft_p90_ms": _ms(percentile(ttfts, 0.9)),
        "ttft_p99_ms": _ms(percentile(ttfts, 0.99)),
        "slo_ms": slo_ms,
        "slo_attainment": round(met / len(outcomes), 4) if outcomes else 0.0,
        "cost_usd": round(cost, 6),
        "cost_per_1k_turns_usd": round(1000.0 * cost / len(ok), 4) if ok else 0.0,
        "fallbacks": sum(1 for o in sent if o.fell_back),
        "hedges": sum(1 for o in sent if o.hedged),
        "targets": per_target,
    }
