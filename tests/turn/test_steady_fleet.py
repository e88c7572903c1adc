"""Issue 16 (b, c) through the whole router: `slo_cost` with adaptive hedging over two
identical free targets whose TTFT does not vary. The real `Router` (policy, signals,
race, hedge budget) on a virtual clock, with simulated upstreams in process and a
seeded rng: exact, and no wall time spent waiting.

What a user would see otherwise: about one turn in ten hedged against an upstream
that answers in 50 ms every time (the delay was its own p90), and every first
attempt sent to the first of two equal targets (the second only ever got hedges).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from router.config import Config
from router.gateway.request import parse_request
from router.runtime import Router
from router.sim.behaviour import Behaviour
from router.sim.hosted import HostedBackend, HostedParams
from router.sim.inproc import AttemptRecord, InProcessUpstream
from router.sim.virtual import VirtualTimeLoop
from router.turn.sink import Header

TURNS = 200
TTFT_S = 0.05


class _Sink:
    async def start(self, status: int, headers: Sequence[Header]) -> None:
        return None

    async def write(self, data: bytes) -> None:
        return None

    async def finish(self, last: bytes = b"") -> None:
        return None


def config() -> Config:
    free = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    targets = [
        {"name": n, "kind": "openai", "base_url": f"http://{n}.sim/v1", "model": "m", "price": free}
        for n in ("a", "b")
    ]
    route = {
        "name": "chat",
        "targets": ["a", "b"],
        "policy": {"type": "slo_cost"},
        "slo": {"ttft_ms": 300, "quantile": 0.9},
        "hedge": {"after_ms": "adaptive", "max_extra": 1, "max_rate": 0.1},
    }
    return Config.model_validate({"targets": targets, "routes": [route]})


async def serve(sigma: float, concurrency: int) -> tuple[list[AttemptRecord], int]:
    """TURNS turns, `concurrency` at a time; every upstream request, and the hedged turns."""
    loop = asyncio.get_running_loop()
    attempts: list[AttemptRecord] = []
    params = HostedParams(ttft_median_s=TTFT_S, ttft_sigma=sigma, stall_probability=0.0)
    upstreams = {
        name: InProcessUpstream(
            name,
            HostedBackend(params, random.Random(name), loop.time),
            clock=loop.time,
            behaviour=Behaviour(tokens=5),
            on_attempt=attempts.append,
        )
        for name in ("a", "b")
    }
    router = Router(
        config(),
        clock=loop.time,
        rng=random.Random(7),
        environ={},
        upstream_factory=lambda target, _key: upstreams[target.name],
    )
    hedged = 0

    async def user(first: int) -> None:
        nonlocal hedged
        for i in range(first, TURNS, concurrency):
            # independent users: no conversation ties a turn to the previous one's target
            body: dict[str, Any] = {
                "model": "chat",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 5,
                "stream": True,
            }
            parsed = parse_request("chat", json.dumps(body).encode(), f"user-{i}")
            result = await router.handle(parsed, _Sink(), {}, arrived=loop.time())
            hedged += result.hedged
            await anyio.sleep(0.2)

    async with anyio.create_task_group() as tg:
        for first in range(concurrency):
            tg.start_soon(user, first)
    await router.aclose()
    return attempts, hedged


@pytest.mark.parametrize(
    ("sigma", "concurrency"),
    [(0.0, 1), (0.02, 2)],
    ids=["50ms-every-time-one-user", "within-a-few-ms-two-users"],
)
def test_a_steady_upstream_is_not_hedged_and_equal_targets_share_first_attempts(
    sigma: float, concurrency: int
) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        attempts, hedged = runner.run(serve(sigma, concurrency))
    assert hedged == 0
    assert len(attempts) == TURNS  # not one extra upstream request
    share = Counter(a.target for a in attempts)
    assert min(share["a"], share["b"]) > TURNS / 3, share  # each its share, give or take chance
