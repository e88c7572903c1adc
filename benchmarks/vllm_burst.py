"""The burst of ``make test-vllm`` (``tests/vllm/test_router_vllm.py``), repeated on one pair
of real CPU vLLM engines, with every plan of the load-aware route printed.

``make test-vllm`` starts the engines afresh for each run and pools two pairs of bursts
(round robin, then ``latency``, each on a fresh router); this starts the engines once and
runs ``--pairs`` pairs, printing each burst's p90 and the pooled ratio after each pair,
and, for the ``latency`` bursts, each turn (target, TTFT, the router's reason) and each
plan as the policy saw it: per target the prediction, its free-slot and queue parts, the
router's turns in flight, the scrape (running, waiting, its age, stale or not), the
batch size known or learned, the most seen running, whether a queue was ever seen, and
the completion rate. It is how the plans behind a missed ratio are read::

    FIRSTTOKEN_VLLM_PYTHON=$PWD/.venv-vllm/bin/python \\
        .venv-vllm/bin/python benchmarks/vllm_burst.py --pairs 3 > burst.log

(The plans are read by wrapping ``LatencyPolicy.plan`` in this process; the router is
the in-process one of the test.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from router.policy import latency, predict  # noqa: E402
from router.policy.base import Plan, TargetView  # noqa: E402
from tests.vllm import test_router_vllm as burst  # noqa: E402
from tests.vllm.engines import VllmEngines, engine_python, running_engines  # noqa: E402

PLANS: list[str] = []


def _describe(view: TargetView, q: float) -> str:
    engine = view.engine
    head = (
        f"{view.name}: pred {predict.predict_ttft_s(view, q) * 1000:.0f}"
        f" (free {predict.free_slot_ttft_s(view, q) * 1000:.0f}"
        f" + wait {predict.wait_quantile_s(view, q) * 1000:.0f}) in flight {view.in_flight}"
    )
    if engine is None:
        return head
    return (
        f"{head} scrape r{engine.running:.0f} w{engine.waiting:.0f} age {engine.age_s:.2f}"
        f"{' STALE' if engine.stale else ''} cap {engine.capacity} proven"
        f" {engine.proven_running:.0f} queue seen {engine.queue_seen}"
        f" rate {predict.completion_rate(view):.2f}/s"
        f" (tpot {_ms(view.tpot_s)}, decode now {_ms(engine.decode_s)})"
    )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _watch_plans() -> None:
    original = latency.LatencyPolicy.plan

    def plan(
        self: latency.LatencyPolicy, request: Any, targets: Sequence[TargetView], ctx: Any
    ) -> Plan:
        made = original(self, request, targets, ctx)
        rows = " | ".join(_describe(v, self.quantile) for v in targets)
        PLANS.append(f"{time.monotonic():9.2f} -> {made.candidates[0].name}: {rows}")
        return made

    setattr(latency.LatencyPolicy, "plan", plan)  # noqa: B010 (a method, replaced)


async def _warm_and_burst(base_url: str) -> list[burst.TurnSample]:
    limits = httpx.Limits(max_connections=burst.BURST_TURNS + 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as client:
        for turn in await burst.warm_up(client):
            print(f"  warm-up {turn.target:5s} {turn.ttft_s * 1000:5.0f} ms")
        PLANS.clear()  # the warm-up's plans are of the pinned routes
        return await asyncio.gather(
            *(burst._one_turn(client, "chat", i) for i in range(burst.BURST_TURNS))
        )


def _one_burst(engines: VllmEngines, policy: str) -> burst.BurstResult:
    burst._idle(engines)
    config = burst.router_config(
        {"small": engines.small, "large": engines.large},
        policy=policy,
        extra_signals="  degraded_cooldown_s: 0",
    )
    with burst.running_router(config) as rig:
        samples = asyncio.run(_warm_and_burst(rig.base_url))
    return burst.BurstResult(policy, samples)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--shape", default="slow", help="the test model (tinymodel.py)")
    parser.add_argument(
        "--beside",
        action="store_true",
        help="keep a second router scraping both engines in this process meanwhile, as the"
        " test module's own router (its `rig` fixture) does during the burst test",
    )
    args = parser.parse_args(argv)
    _watch_plans()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="vllm-burst-"))
        engines = stack.enter_context(
            running_engines(Path(root), engine_python(), shape=args.shape)
        )
        if args.beside:
            both = {"small": engines.small, "large": engines.large}
            stack.enter_context(burst.running_router(burst.router_config(both)))
        rr = burst.BurstResult("round_robin", [])
        aware = burst.BurstResult("latency", [])
        for pair in range(args.pairs):
            for pooled in (rr, aware):
                result = _one_burst(engines, pooled.policy)
                pooled.samples.extend(result.samples)
                print(f"pair {pair} {result.line()}", flush=True)
                if pooled is aware:
                    for t in sorted(result.samples, key=lambda t: t.index):
                        print(
                            f"  turn {t.index:2d} {t.target:5s}"
                            f" {t.ttft_s * 1000:5.0f} ms: {t.reason}"
                        )
                    print("\n".join(f"    plan {p}" for p in PLANS), flush=True)
            ratio = aware.ttft_p90 / rr.ttft_p90
            print(f"after pair {pair}: pooled p90 latency / round_robin = {ratio:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
