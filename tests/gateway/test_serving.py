"""Serving: a response head leaves with the first body bytes; the metrics port's guards."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import Any, cast

import httpx
import pytest
import uvicorn

from router.config import parse_config
from router.gateway.protocol import HeadCoalescingTransport
from router.gateway.serving import TICK_S, DrainingServer, MetricsApp
from router.runtime import Router

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


async def test_the_metrics_port_serves_only_allowed_hosts_and_no_web_page() -> None:
    config = parse_config(
        "targets:\n  - {name: a, kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        "routes:\n  - {name: chat, targets: [a]}\n"
        "server: {allowed_hosts: ['10.0.0.0/8']}\n"
    )
    router = Router(config)
    app = MetricsApp(router, "0.0.0.0")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
            scraper = await client.get("/metrics", headers={"host": "10.1.2.3:9100"})
            rebound = await client.get("/metrics", headers={"host": "evil.example:9100"})
            page = await client.get(
                "/metrics", headers={"host": "127.0.0.1:9100", "origin": "https://evil.example"}
            )
    finally:
        await router.aclose()
    assert scraper.status_code == 200 and "firsttoken_requests" in scraper.text
    assert rebound.status_code == 403 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert page.status_code == 403 and page.json()["error"]["code"] == "origin_not_allowed"


CONFIG = (
    "targets:\n  - {name: a, kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
    "routes:\n  - {name: chat, targets: [a]}\n"
)


def ticking(drain_s: float) -> tuple[DrainingServer, list[int], Router]:
    router = Router(parse_config(CONFIG))
    server = DrainingServer(uvicorn.Config(MetricsApp(router, "127.0.0.1")), router, drain_s)
    server.config.load()
    ticks: list[int] = []
    tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(counter)
        return await tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    return server, ticks, router


async def test_an_idle_server_ticks_once_a_second_and_exits_at_once_when_asked() -> None:
    server, ticks, router = ticking(drain_s=0)
    loop = asyncio.ensure_future(server.main_loop())
    try:
        await asyncio.sleep(TICK_S / 2)
        assert ticks == [0], "uvicorn's 0.1 s tick wakes an idle router"
        server.should_exit = True
        await asyncio.wait_for(loop, TICK_S * 0.4)  # not at the next tick
    finally:
        loop.cancel()
        await router.aclose()
    assert server.server_state.default_headers  # the Date header was set


async def test_a_drain_signal_is_seen_at_once_and_an_idle_drain_ends_soon() -> None:
    server, _, router = ticking(drain_s=30)
    loop = asyncio.ensure_future(server.main_loop())
    try:
        await asyncio.sleep(TICK_S / 5)
        server.handle_exit(signal.SIGTERM, None)
        assert router.draining
        await asyncio.wait_for(loop, TICK_S * 0.6)  # nothing in flight: drained
    finally:
        loop.cancel()
        await router.aclose()


async def test_the_serving_loop_writes_upstream_requests_in_the_sending_step() -> None:
    """`firsttoken serve` installs router/upstream/eager.py's task factory at start-up
    (what it does is tested in tests/upstream/test_eager.py)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    server, _, router = ticking(drain_s=0)
    server.lifespan = server.config.lifespan_class(server.config)  # as uvicorn's `serve`
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        await server.startup(sockets=[sock])
        factory = loop.get_task_factory()
        assert factory is not None and factory is not previous
        assert factory.__module__ == "router.upstream.eager"
        await server.shutdown(sockets=[sock])
    finally:
        loop.set_task_factory(previous)
        sock.close()
        await router.aclose()
