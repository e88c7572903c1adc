"""The hot path's cancel scopes: anyio's own, for the running backend, with a deadline."""

from __future__ import annotations

import anyio
import pytest

from router.turn.scopes import cancel_scope

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
