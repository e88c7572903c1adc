"""HeadCoalescingTransport: a response head leaves with the first body bytes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from router.gateway.serving import HeadCoalescingTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """What reaches the socket: one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


def wrap() -> tuple[HeadCoalescingTransport, Recorder]:
    inner = Recorder()
    loop = asyncio.get_running_loop()
    return HeadCoalescingTransport(cast(asyncio.Transport, inner), loop), inner


HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


async def test_a_head_and_the_body_written_after_it_go_out_as_one_write() -> None:
    transport, inner = wrap()
    transport.write(HEAD)
    assert inner.writes == []
    transport.write(b"5\r\nhello\r\n")
    transport.write(b"0\r\n\r\n")
    assert inner.writes == [HEAD + b"5\r\nhello\r\n", b"0\r\n\r\n"]
    await asyncio.sleep(0)  # the cancelled flush does not write again
    assert len(inner.writes) == 2


async def test_a_lone_head_leaves_on_the_next_loop_iteration_and_close_flushes() -> None:
    transport, inner = wrap()
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert inner.writes == [HEAD]
    transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n")
    transport.close()
    assert inner.writes[-1].startswith(b"HTTP/1.1 408") and inner.closed


async def test_an_interim_head_is_never_held_and_the_rest_is_the_inner_transport() -> None:
    transport, inner = wrap()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)
