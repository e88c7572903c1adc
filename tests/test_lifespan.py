"""`while_needed`: the retirer's pace, and no timer on an idle router."""

from __future__ import annotations

import asyncio

import pytest

from router.lifespan import while_needed


@pytest.mark.anyio
async def test_work_runs_only_while_needed_and_sleeps_until_woken() -> None:
    pending = 0
    calls = 0
    wake = asyncio.Event()

    async def sweep() -> None:
        nonlocal pending, calls
        calls += 1
        pending = max(0, pending - 1)

    task = asyncio.ensure_future(while_needed(0.01, lambda: pending > 0, wake, sweep))
    try:
        await asyncio.sleep(0.1)
        assert calls == 0, "swept with nothing to retire"
        pending = 3
        wake.set()  # a reload left something retiring
        for _ in range(200):
            if not pending:
                break
            await asyncio.sleep(0.01)
        assert calls == 3 and pending == 0
        await asyncio.sleep(0.1)
        assert calls == 3, "kept sweeping once nothing was left"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
