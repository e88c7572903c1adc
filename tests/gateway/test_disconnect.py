"""How a turn learns its client left: the server's `DisconnectWatch`, else `receive()`."""

from __future__ import annotations

import asyncio

import pytest

from router.gateway.asgi import DISCONNECT, DisconnectWatch, Message, watch_disconnect


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_the_watch_tells_each_turn_still_watching_once() -> None:
    watch = DisconnectWatch()
    calls: list[str] = []
    scope = {"type": "http", "extensions": {DISCONNECT: {"watch": watch}}}
    stop_a = watch_disconnect(scope, _never, lambda: calls.append("a"))
    stop_b = watch_disconnect(scope, _never, lambda: calls.append("b"))
    stop_b()  # turn b ended before the connection was lost
    watch.fire()
    watch.fire()
    assert calls == ["a"]
    stop_a()  # after the fact: harmless
    watch_disconnect(scope, _never, lambda: calls.append("late"))  # already lost: at once
    assert calls == ["a", "late"]


@pytest.mark.anyio
async def test_without_the_extension_a_task_waits_for_http_disconnect() -> None:
    messages: asyncio.Queue[Message] = asyncio.Queue()
    calls: list[str] = []
    stop = watch_disconnect({"type": "http"}, messages.get, lambda: calls.append("gone"))
    await messages.put({"type": "http.disconnect"})
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == ["gone"]
    stop()

    stop = watch_disconnect({"type": "http"}, messages.get, lambda: calls.append("again"))
    stop()  # the turn ended first: its watcher is cancelled, nothing is called
    await messages.put({"type": "http.disconnect"})
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == ["gone"]
