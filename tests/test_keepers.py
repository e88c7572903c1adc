"""`router.keepers.TargetTasks`: one task per target, in step with each config."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from router.keepers import TargetTasks

pytestmark = pytest.mark.anyio


async def test_a_sync_starts_the_new_restarts_the_changed_and_stops_the_gone() -> None:
    running: dict[str, str] = {}  # target -> the key its live task runs with
    dead: list[str] = []

    def task(name: str, key: str) -> tuple[object, Callable[[], Awaitable[object]]]:
        async def run() -> None:
            running[name] = key
            try:
                await anyio.sleep_forever()
            finally:
                del running[name]

        return key, run

    async with anyio.create_task_group() as tg:
        tasks = TargetTasks(tg, dead.append, "scraper")
        tasks.sync({"a": task("a", "url-1"), "b": task("b", "url-1")})
        await anyio.wait_all_tasks_blocked()
        assert running == {"a": "url-1", "b": "url-1"}
        # a reload: a is unchanged, b's URL moved, c is new
        tasks.sync({"a": task("a", "url-1"), "b": task("b", "url-2"), "c": task("c", "url-1")})
        await anyio.wait_all_tasks_blocked()
        assert running == {"a": "url-1", "b": "url-2", "c": "url-1"}
        # another: b and c are gone
        tasks.sync({"a": task("a", "url-1")})
        await anyio.wait_all_tasks_blocked()
        assert running == {"a": "url-1"} and tasks.names == {"a"}
        tasks.sync({})
        await anyio.wait_all_tasks_blocked()
        assert running == {}
    assert dead == []  # a task stopped by a sync is no death


async def test_a_task_that_ends_by_itself_takes_the_process_down() -> None:
    dead: list[str] = []

    async def ends() -> None:
        return None

    async with anyio.create_task_group() as tg:
        TargetTasks(tg, dead.append, "probe").sync({"a": ("k", ends)})
    assert dead == ["background task 'probe of a' ended"]
