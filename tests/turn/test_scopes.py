"""The hot path's cancel scopes: anyio's own, for the running backend, and their deadlines."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from router.turn.scopes import COMPACT_AFTER, Deadlines, cancel_scope

pytestmark = pytest.mark.anyio


async def test_a_scope_is_the_backends_own_and_its_deadline_cancels() -> None:
    with cancel_scope(deadline=anyio.current_time() + 0.01) as scope:
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert type(scope) is type(anyio.CancelScope())


async def test_a_scope_without_a_deadline_is_cancelled_by_hand() -> None:
    scope = cancel_scope()
    assert scope.deadline == float("inf")
    async with anyio.create_task_group() as tg:

        async def waits() -> None:
            with scope:
                await anyio.sleep(5)

        tg.start_soon(waits)
        await anyio.sleep(0.01)
        scope.cancel()
    assert scope.cancelled_caught


async def test_deadlines_cancel_each_scope_at_its_own_time_in_order() -> None:
    deadlines = Deadlines()
    now = anyio.current_time()
    cancelled: list[tuple[str, float]] = []

    async def waits(name: str, after: float) -> None:
        with cancel_scope() as scope:
            deadlines.cancel_after(after, scope)
            await anyio.sleep(5)
        assert scope.cancelled_caught
        cancelled.append((name, anyio.current_time() - now))

    async with anyio.create_task_group() as tg:
        # added out of order: a nearer deadline after a later one re-arms the timer
        tg.start_soon(waits, "late", 0.6)
        tg.start_soon(waits, "early", 0.04)
        tg.start_soon(waits, "middle", 0.08)
    assert [name for name, _ in cancelled] == ["early", "middle", "late"]
    for (_, at), due in zip(cancelled, (0.04, 0.08, 0.6), strict=True):
        assert at >= due  # never before its time
    assert cancelled[1][1] < 0.5  # and not kept for the later one's
    assert len(deadlines) == 0


async def test_a_dropped_deadline_cancels_nothing_and_a_pending_one_still_does() -> None:
    deadlines = Deadlines()
    now = anyio.current_time()
    with cancel_scope() as kept:
        # the usual turn: its deadline is dropped long before it is due, thousands of
        # times (the heap is compacted); one left pending must still fire
        for _ in range(COMPACT_AFTER * 2):
            with cancel_scope() as done:
                deadlines.drop(deadlines.cancel_after(0.01, done))
            assert not done.cancel_called
        deadlines.cancel_after(0.05, kept)
        assert len(deadlines) == 1
        assert len(deadlines._heap) < COMPACT_AFTER + 10
        await anyio.sleep(5)
    assert kept.cancelled_caught
    assert anyio.current_time() - now < 4


async def test_an_infinite_deadline_is_never_kept() -> None:
    deadlines = Deadlines()
    with cancel_scope() as scope:
        entry = deadlines.cancel_after(float("inf"), scope)
        assert len(deadlines) == 0
        deadlines.drop(entry)
        assert len(deadlines) == 0
        await anyio.sleep(0.02)
    assert not scope.cancel_called


def test_deadlines_start_afresh_on_another_loop() -> None:
    deadlines = Deadlines()

    async def one() -> bool:
        with cancel_scope() as scope:
            deadlines.cancel_after(0.01, scope)
            await anyio.sleep(5)
        return scope.cancelled_caught

    # Two loops one after the other (as tests run them): the first's timer and heap
    # must not keep the second's scope from its deadline.
    assert anyio.run(one)
    assert anyio.run(one)


async def test_after_send_waits_for_the_tasks_the_caller_started() -> None:
    """A turn defers its bookkeeping to after its request's write, which aiohttp (on
    Python 3.11) makes in a task of its own, started after the bookkeeping was deferred
    and before the turn's task yields: the deferred call runs after that task's step."""
    deadlines = Deadlines()
    order: list[str] = []
    deadlines.after_send(order.append, "bookkeeping")

    async def write() -> None:
        order.append("request written")

    writer = asyncio.get_running_loop().create_task(write())
    await asyncio.sleep(0)  # the turn waits for the answer's head
    await writer
    assert order == ["request written"]
    await asyncio.sleep(0)
    assert order == ["request written", "bookkeeping"]
