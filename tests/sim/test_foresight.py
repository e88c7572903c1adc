"""The engine replay the hindsight oracle uses: it predicts the engine's own first token."""

from __future__ import annotations

import asyncio

import pytest

from router.sim.engine import Engine, EngineParams
from router.sim.foresight import first_token_at
from router.sim.virtual import VirtualTimeLoop


class _Quiet:
    def admitted(self, seq: object, now: float) -> None: ...
    def prefilled(self, prompt_tokens: int, cached_tokens: int) -> None: ...
    def token(self, seq: object, now: float) -> None: ...
    def finished(self, seq: object, reason: object, now: float) -> None: ...


async def _scenario(arrivals: list[tuple[float, int, int]], probe_at: float) -> tuple[float, float]:
    """Submit (at, prompt, tokens) requests; at `probe_at` predict a 40-token request's
    first token, submit it, and return (predicted, actual)."""
    loop = asyncio.get_running_loop()
    params = EngineParams(
        max_num_seqs=3, prefill_s_per_token=0.0002, step_s=0.02, step_s_per_seq=0.004
    )
    engine = Engine(params, _Quiet(), loop.time)
    await engine.start()
    for at, prompt, tokens in arrivals:
        await asyncio.sleep(at - loop.time())
        engine.submit(prompt, tokens, (), "stop")
    await asyncio.sleep(probe_at - loop.time())
    predicted = first_token_at(engine, 300, 40, (), loop.time())
    seq = engine.submit(300, 40, (), "stop")
    await seq.next_token()
    await engine.stop()
    return predicted, loop.time()


@pytest.mark.parametrize(
    ("arrivals", "probe_at"),
    [
        ([], 1.0),  # idle: one step with its prefill
        ([(0.0, 100, 50)], 0.31),  # room in the batch: admitted at the next step
        ([(0.0, 100, 50), (0.0, 200, 20), (0.1, 50, 80), (0.2, 400, 30)], 0.25),  # queued
        ([(0.01 * i, 100 + 10 * i, 10 + 7 * i) for i in range(9)], 0.095),  # a long queue
    ],
)
def test_the_replay_predicts_the_engines_first_token(
    arrivals: list[tuple[float, int, int]], probe_at: float
) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        predicted, actual = runner.run(_scenario(arrivals, probe_at))
    assert predicted == pytest.approx(actual, abs=1e-9)
