"""The vLLM harness's stall watch (tests/vllm/stallwatch.py) on a loop it can see held;
no engines needed, so it runs in the default suite."""

from __future__ import annotations

import time

from tests.e2e.harness import LoopThread
from tests.vllm.stallwatch import StallWatch


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_a_held_loop_is_seen_with_what_held_it() -> None:
    loop = LoopThread()
    try:
        with StallWatch(loop.loop, loop.ident, loop.native_id, stall_s=0.1) as watch:
            time.sleep(0.2)
            loop.loop.call_soon_threadsafe(_hold_the_loop, 0.6)
            time.sleep(1.0)
    finally:
        loop.close()
    # (a loaded machine may add stalls of its own; the held one must be among them)
    held = [s for s in watch.stalls if any("_hold_the_loop" in line for line in s.stack)]
    assert len(held) == 1, watch.lines()
    assert held[0].lasted_s >= 0.4
    lines = watch.lines(at_least_s=0.3)
    assert lines[0].startswith("router loop stalls >= 100 ms:")
    assert any("_hold_the_loop" in line for line in lines)
