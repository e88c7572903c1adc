"""The relay's HTTP/1.1 client against raw servers on 127.0.0.1 that answer as told."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trustme

from router.upstream.http1 import HIGH_WATER, Http1Client

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RawServer:
    """Reads one request head and body at a time; `answer` writes what the test wants."""

    def __init__(self, answer: Callable[[bytes, asyncio.StreamWriter], object]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()
        self.got_request = asyncio.Event()
        self.reader: asyncio.StreamReader | None = None
        self.port = 0

    async def wait_for_close(self) -> None:
        """Hold the answer open until the client closes the connection."""
        assert self.reader is not None
        while await self.reader.read(65536):
            pass
        self.closed_by_client.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.reader = reader
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                self.got_request.set()
                result = self.answer(request, writer)
                if asyncio.iscoroutine(result):
                    await result
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client.set()
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answer: Callable[[bytes, asyncio.StreamWriter], object],
) -> AsyncIterator[RawServer]:
    raw = RawServer(answer)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def post(client: Http1Client, read_s: float = 5.0) -> tuple[int, bytes]:
    response = await client.open(
        "POST", "/v1/chat/completions", {"x-a": "1"}, b"{}", connect_s=2, read_s=read_s
    )
    try:
        return response.status, await response.aread()
    finally:
        await response.aclose()


async def test_a_chunked_stream_arrives_whole_and_the_connection_is_reused() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunked(b"data: a\n\n", b"data: b\n\n"))

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}/v1")
        assert await post(client) == (200, b"data: a\n\ndata: b\n\n")
        assert await post(client) == (200, b"data: a\n\ndata: b\n\n")
        await client.aclose()
    assert server.connections == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /v1/chat/completions HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in head
    assert b"x-a: 1" in head and b"content-length: 2" in head
    assert server.requests[0].endswith(b"\r\n\r\n{}")


async def test_content_length_and_eof_delimited_bodies_and_repeated_headers() -> None:
    bodies = [
        b"HTTP/1.1 200 OK\r\nx-r: 1\r\nx-r: 2\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    ]

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(bodies.pop(0))
        if not bodies:
            writer.close()

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.open("POST", "/x", {}, b"", connect_s=2, read_s=5)
        assert response.headers["x-r"] == "1, 2"
        assert await response.aread() == b"hello"
        await response.aclose()
        assert await post(client) == (200, b"until the end")
        await client.aclose()


async def test_closing_before_the_end_closes_the_connection_so_the_server_sees_it() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"9\r\ndata: a\n\n\r\n")
        await writer.drain()
        await server.wait_for_close()  # a long generation; the client leaves first

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.open("POST", "/x", {}, b"", connect_s=2, read_s=5)
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: a\n\n"
        await response.aclose()
        async with asyncio.timeout(2):
            await server.closed_by_client.wait()
        await client.aclose()


async def test_a_cancelled_request_closes_its_connection() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        await server.wait_for_close()  # no headers yet

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        task = asyncio.ensure_future(post(client))
        await server.got_request.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(2):
            await server.closed_by_client.wait()
        await client.aclose()


async def test_silence_before_headers_and_between_chunks_is_a_read_timeout() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        if len(server.requests) == 2:
            writer.write(SSE_HEAD + b"9\r\ndata: a\n\n\r\n")
        await asyncio.sleep(30)

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        with pytest.raises(httpx.ReadTimeout):
            await post(client, read_s=0.1)
        response = await client.open("POST", "/x", {}, b"", connect_s=2, read_s=0.1)
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: a\n\n"
        with pytest.raises(httpx.ReadTimeout):
            await anext(chunks)
        await response.aclose()
        await client.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced_once() -> None:
    served: list[asyncio.StreamWriter] = []

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        served.append(writer)

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        assert await post(client) == (200, b"ok")
        # The server drops the idle keep-alive connection without telling anyone;
        # the client may not have seen the FIN yet when it reuses it.
        sock = served[0].get_extra_info("socket")
        sock.shutdown(socket.SHUT_RDWR)
        assert await post(client) == (200, b"ok")
        await client.aclose()
    assert server.connections == 2


async def test_a_refused_connection_and_a_garbled_answer_are_httpx_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
    with pytest.raises(httpx.ConnectError):
        await post(Http1Client(f"http://127.0.0.1:{port}"))

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client)
        await client.aclose()


async def test_https_goes_over_tls_and_checks_the_certificate() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    raw = RawServer(lambda request, writer: writer.write(SSE_HEAD + chunked(b"data: tls\n\n")))
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        client = Http1Client(f"https://127.0.0.1:{port}/v1", ssl_context=trusting)
        assert await post(client) == (200, b"data: tls\n\n")
        await client.aclose()
        with pytest.raises(httpx.ConnectError):  # the system CAs do not know this one
            await post(Http1Client(f"https://127.0.0.1:{port}/v1"))
    finally:
        server.close()


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    client = Http1Client("http://127.0.0.1:9")
    with pytest.raises(httpx.LocalProtocolError):
        client.head("POST", "/x", {"x-id": "a\r\nx-injected: 1"}, 0)


def test_the_host_header_is_the_urls_authority_without_userinfo() -> None:
    for url, host in [
        ("https://api.example.com/v1", "api.example.com"),
        ("http://u:p@10.0.0.1:8000/v1", "10.0.0.1:8000"),
        ("http://[::1]/v1", "[::1]"),
    ]:
        head = Http1Client(url).head("POST", "/v1/x", {}, 0)
        assert head.split(b"\r\n")[1] == b"host: " + host.encode()


async def test_a_large_body_read_slowly_arrives_intact_under_back_pressure() -> None:
    blob = bytes(range(256)) * (4 * HIGH_WATER // 256)

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(blob) + blob)

    async with serving(answer) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.open("POST", "/x", {}, b"", connect_s=2, read_s=5)
        received = []
        async for chunk in response.aiter_bytes():
            received.append(chunk)
            await asyncio.sleep(0.001)
        await response.aclose()
        assert b"".join(received) == blob
        assert await post(client) == (200, blob)  # the connection is still good
        await client.aclose()
    assert server.connections == 1
