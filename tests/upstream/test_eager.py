"""aiohttp's request write started in the sending step (router/upstream/eager.py): the
bytes reach the upstream's socket before the sender yields; every other coroutine
keeps the loop's usual task; a write that has to wait carries on in a task."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
from collections.abc import Coroutine
from typing import Any

import aiohttp
import pytest

from router.upstream import eager

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.version_info >= (3, 12), reason="aiohttp starts it eagerly itself"),
]

_seen: contextvars.ContextVar[str] = contextvars.ContextVar("_seen", default="caller")


def _received(conn: socket.socket) -> bytes:
    try:
        return conn.recv(65536)
    except BlockingIOError:
        return b""


async def test_a_request_is_on_the_upstreams_socket_before_its_sender_yields() -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
    assert eager.install(loop)
    conn: socket.socket | None = None
    try:
        async with aiohttp.ClientSession() as session:
            first = asyncio.ensure_future(session.post(url, data=b"one"))
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            assert (await loop.sock_recv(conn, 65536)).endswith(b"one")
            await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            (await first).release()  # the connection goes back to the pool

            second = asyncio.ensure_future(session.post(url, data=b"second-body"))
            await asyncio.sleep(0)  # one turn of the loop: `second` takes its first step
            written = _received(conn)
            assert written.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
            assert written.endswith(b"\r\n\r\nsecond-body")
            await loop.sock_sendall(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            response = await second
            assert await response.read() == b"ok"
    finally:
        loop.set_task_factory(previous)
        listener.close()
        if conn is not None:
            conn.close()


def _factory(fn: Any) -> eager.Factory:
    return eager.eager_factory(None, code=fn.__code__)


async def test_a_coroutine_that_ends_in_its_first_step_is_a_finished_future() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []

    async def write(value: int) -> int:
        steps.append(_seen.get())
        _seen.set("inside")
        return value * 2

    done = _factory(write)(loop, write(21))
    assert steps == ["caller"]  # ran before the factory returned
    assert done.done() and done.result() == 42
    assert _seen.get() == "caller"  # its context was its own

    async def fail() -> None:
        raise OSError("reset")

    failed = _factory(fail)(loop, fail())
    assert failed.done() and isinstance(failed.exception(), OSError)


async def test_a_coroutine_that_waits_carries_on_in_a_task() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[str] = loop.create_future()
    steps: list[str] = []

    async def write() -> str:
        steps.append("head")
        _seen.set("inside")
        got = await gate
        steps.append(_seen.get())  # the same context after the wait
        return got + "!"

    task = _factory(write)(loop, write())
    assert steps == ["head"] and not task.done()
    gate.set_result("drained")
    assert await task == "drained!"
    assert steps == ["head", "inside"]


async def test_a_cancel_reaches_the_waiting_coroutine() -> None:
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    closed: list[bool] = []

    async def write() -> None:
        try:
            await gate
        finally:
            closed.append(True)

    task = _factory(write)(loop, write())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True] and gate.cancelled()


async def test_other_coroutines_get_the_usual_task_or_the_previous_factory() -> None:
    loop = asyncio.get_running_loop()
    steps: list[str] = []

    async def other() -> None:
        steps.append("ran")

    async def write() -> None:
        return None

    plain = _factory(write)(loop, other())
    assert isinstance(plain, asyncio.Task) and steps == []  # not started yet
    await plain
    assert steps == ["ran"]

    handed: list[Coroutine[Any, Any, Any]] = []

    def previous(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        handed.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    chained = eager.eager_factory(previous, code=write.__code__)
    coro = other()
    await chained(loop, coro)
    assert handed == [coro]
