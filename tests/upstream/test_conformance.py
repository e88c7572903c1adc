"""HTTP conformance of the relay's upstream client, against raw servers that write exact
bytes (tests/upstream/rawserver.py): interim answers, trailers, chunk extensions,
bodies delimited three ways, gzip, closes, IPv6, TLS, a proxy, and a shared pool."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
from collections.abc import Iterator

import anyio
import pytest
import trustme

from router.config import TargetConfig
from router.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamStatusError
from router.upstream.base import UpstreamRequest, UpstreamSetup
from router.upstream.openai import MAX_ERROR_BODY_BYTES, OpenAIUpstream
from tests.upstream.rawserver import SSE_HEAD, chunked, proxying, serving

pytestmark = pytest.mark.anyio

STREAM = UpstreamRequest("chat", {"model": "m", "messages": []}, stream=True)
UNARY = UpstreamRequest("chat", {"model": "m", "messages": []}, stream=False)


class Connections:
    def __init__(self) -> None:
        self.new = 0
        self.reused = 0

    def __call__(self, reused: bool) -> None:
        if reused:
            self.reused += 1
        else:
            self.new += 1


def upstream(base_url: str, counts: Connections | None = None, **config: object) -> OpenAIUpstream:
    target = TargetConfig.model_validate(
        {"name": "t", "kind": "openai", "base_url": base_url, "model": "m", **config}
    )
    return OpenAIUpstream(target, UpstreamSetup(api_key="sk-test-key", on_connection=counts))


async def body_of(up: OpenAIUpstream, request: UpstreamRequest = STREAM) -> tuple[int, bytes]:
    response = await up.send(request)
    try:
        return response.status, b"".join([c async for c in response.aiter_bytes()])
    finally:
        await response.finish()


def request_id(request: bytes) -> bytes:
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"x-request-id:"):
            return line.split(b":", 1)[1].strip()
    return b""


async def test_100_continue_and_103_before_the_answer_never_cross_two_turns() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        mine = request_id(request)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
        writer.write(SSE_HEAD + chunked(b"data: answer-for-" + mine + b"\n\n"))

    async with serving(answer) as server:
        counts = Connections()
        up = upstream(f"http://127.0.0.1:{server.port}/v1", counts)
        for turn in (b"1", b"2", b"3"):
            request = UpstreamRequest(
                "chat", {}, stream=True, headers={"x-request-id": turn.decode()}
            )
            assert await body_of(up, request) == (200, b"data: answer-for-" + turn + b"\n\n")
        await up.aclose()
    assert server.connections == 1 and (counts.new, counts.reused) == (1, 2)


async def test_trailers_stay_out_of_the_next_answers_headers_and_chunk_extensions_are_read() -> (
    None
):
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        parts = (b"data: a\n\n", b"data: [DONE]\n\n")
        trailers = b"x-trailer-leak: 1\r\nx-usage: 7\r\n"
        writer.write(SSE_HEAD + chunked(*parts, trailers=trailers, extension=b';ext=1;q="x"'))

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        for _ in range(2):
            response = await up.send(STREAM)
            assert "x-trailer-leak" not in response.headers
            body = b"".join([c async for c in response.aiter_bytes()])
            assert body == b"data: a\n\ndata: [DONE]\n\n"
            await response.finish()
        await up.aclose()
    assert server.connections == 1


async def test_content_length_and_close_delimited_bodies() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
        b'{"choices": []}',
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: until the end\n\n",
    ]

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answers.pop(0))
        if not answers:
            writer.close()  # a body without a length ends when the connection does

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        response = await up.send(UNARY)
        assert await response.aread() == b'{"choices": []}'
        await response.aclose()
        assert await body_of(up) == (200, b"data: until the end\n\n")
        await up.aclose()


async def test_a_server_that_gzips_anyway_is_read_as_plain_bytes() -> None:
    plain = b"data: compressed\n\ndata: [DONE]\n\n"

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        assert b"accept-encoding: identity" in request.lower()
        packed = gzip.compress(plain)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n" % len(packed) + packed
        )

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        assert await body_of(up) == (200, plain)
        await up.aclose()


async def test_connection_close_and_a_keep_alive_connection_the_server_closed() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        close = b"close" in request_id(request)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
            + (b"connection: close\r\n" if close else b"")
            + b"\r\nok"
        )
        if close:
            writer.close()

    async with serving(answer) as server:
        counts = Connections()
        up = upstream(f"http://127.0.0.1:{server.port}/v1", counts)
        closing = UpstreamRequest("chat", {}, stream=False, headers={"x-request-id": "close"})
        assert await body_of(up, closing) == (200, b"ok")
        assert await body_of(up, UNARY) == (200, b"ok")  # on a new connection
        assert server.connections == 2
        # The server drops the idle keep-alive connection without a word; the client
        # may not have seen the FIN when it reuses it: the request goes again, once.
        sock = server.writers[-1].get_extra_info("socket")
        sock.shutdown(socket.SHUT_RDWR)
        assert await body_of(up, UNARY) == (200, b"ok")
        await up.aclose()
    assert server.connections == 3


async def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        async with serving(
            lambda r, w: w.write(SSE_HEAD + chunked(b"data: v6\n\n")), host="::1"
        ) as server:
            up = upstream(f"http://[::1]:{server.port}/v1")
            assert await body_of(up) == (200, b"data: v6\n\n")
            await up.aclose()
    except OSError as exc:
        pytest.skip(f"::1 is not usable here: {exc}")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA, host: str = "127.0.0.1") -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host, "localhost").configure_cert(ctx)
    return ctx


async def test_a_certificate_that_fails_verification_is_a_connect_error_and_ca_file_trusts_it(
    ca: trustme.CA, tmp_path: object
) -> None:
    from pathlib import Path

    bundle = Path(str(tmp_path)) / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))

    async with serving(
        lambda r, w: w.write(SSE_HEAD + chunked(b"data: tls\n\n")), ssl_context=tls_server(ca)
    ) as server:
        url = f"https://127.0.0.1:{server.port}/v1"
        untrusting = upstream(url)
        with pytest.raises(UpstreamConnectError, match="certificate"):
            await untrusting.send(STREAM)
        await untrusting.aclose()
        trusting = upstream(url, ca_file=str(bundle))
        assert await body_of(trusting) == (200, b"data: tls\n\n")
        await trusting.aclose()


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    yield monkeypatch


async def test_https_goes_through_the_proxy_named_by_https_proxy(
    ca: trustme.CA, tmp_path: object, no_proxy_env: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    bundle = Path(str(tmp_path)) / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with (
        serving(
            lambda r, w: w.write(SSE_HEAD + chunked(b"data: proxied\n\n")),
            ssl_context=tls_server(ca),
        ) as server,
        proxying() as proxy,
    ):
        no_proxy_env.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        up = upstream(f"https://localhost:{server.port}/v1", ca_file=str(bundle))
        assert await body_of(up) == (200, b"data: proxied\n\n")
        await up.aclose()
        assert proxy.connects == [f"CONNECT localhost:{server.port} HTTP/1.1".encode()]
        # NO_PROXY keeps a host off the proxy
        no_proxy_env.setenv("NO_PROXY", "localhost")
        direct = upstream(f"https://localhost:{server.port}/v1", ca_file=str(bundle))
        assert await body_of(direct) == (200, b"data: proxied\n\n")
        await direct.aclose()
        assert len(proxy.connects) == 1


async def test_two_interleaved_turns_on_one_pool_never_see_each_others_bytes() -> None:
    release: dict[bytes, asyncio.Event] = {b"1": asyncio.Event(), b"2": asyncio.Event()}

    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        mine = request_id(request)
        writer.write(SSE_HEAD)
        for i in range(20):
            part = b"data: %s-%d\n\n" % (mine, i)
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            if i == 5:
                release[b"2" if mine == b"1" else b"1"].set()
                await release[mine].wait()
            await asyncio.sleep(0)
        writer.write(b"0\r\n\r\n")

    async with serving(answer) as server:
        counts = Connections()
        up = upstream(f"http://127.0.0.1:{server.port}/v1", counts)

        async def turn(name: str) -> bytes:
            request = UpstreamRequest("chat", {}, stream=True, headers={"x-request-id": name})
            return (await body_of(up, request))[1]

        for _ in range(3):
            one, two = await asyncio.gather(turn("1"), turn("2"))
            assert one == b"".join(b"data: 1-%d\n\n" % i for i in range(20))
            assert two == b"".join(b"data: 2-%d\n\n" % i for i in range(20))
            for event in release.values():
                event.clear()
        await up.aclose()
    assert server.connections == 2 and counts.reused == 4  # two connections, kept


async def test_a_stream_that_ended_at_done_gives_its_connection_to_the_next_turn() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        part = b"data: [DONE]\n\n"
        writer.write(SSE_HEAD + b"%x\r\n%s\r\n" % (len(part), part))
        await writer.drain()
        await asyncio.sleep(0.01)  # the terminal chunk comes a moment later
        writer.write(b"0\r\n\r\n")

    async with serving(answer) as server:
        counts = Connections()
        up = upstream(f"http://127.0.0.1:{server.port}/v1", counts)
        for _ in range(3):
            response = await up.send(STREAM)
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"data: [DONE]\n\n"
            await response.finish()  # the relay read [DONE] and stops reading
            await asyncio.sleep(0.03)  # the next turn of a conversation comes later
        await up.aclose()
    assert server.connections == 1 and counts.reused == 2


async def test_an_error_body_is_read_to_64_kib_then_the_connection_is_closed() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 52428800\r\n\r\n")
        for _ in range(100):  # 50 MB, if anyone read it all
            writer.write(b"x" * 524288)
            await writer.drain()

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        with anyio.fail_after(5), pytest.raises(UpstreamStatusError) as caught:
            await up.send(STREAM)
        assert len(caught.value.body) == MAX_ERROR_BODY_BYTES
        with anyio.fail_after(5):
            await server.closed_by_client.wait()
        await up.aclose()


async def test_a_unary_answer_past_max_body_bytes_is_refused() -> None:
    big = json.dumps({"choices": [{"message": {"content": "x" * 5000}}]}).encode()

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big) + big)

    async with serving(answer) as server:
        target = TargetConfig(
            name="t", kind="openai", base_url=f"http://127.0.0.1:{server.port}/v1", model="m"
        )
        up = OpenAIUpstream(target, UpstreamSetup(max_body_bytes=4096))
        response = await up.send(UNARY)
        with pytest.raises(UpstreamProtocolError, match="larger than 4096"):
            await response.aread()
        await response.aclose()
        await up.aclose()


async def test_a_redirect_is_an_upstream_error_tried_elsewhere() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 302 Found\r\nlocation: http://evil.test/\r\ncontent-length: 0\r\n\r\n"
        )

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        with pytest.raises(UpstreamStatusError) as caught:
            await up.send(STREAM)
        assert caught.value.upstream_status == 302 and caught.value.retryable
        assert len(server.requests) == 1  # not followed
        await up.aclose()


async def test_closing_an_answer_twice_never_lets_two_turns_share_its_connection() -> None:
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        mine = request_id(request)
        writer.write(SSE_HEAD)
        await writer.drain()
        await asyncio.sleep(0.02)  # both turns are in flight together
        writer.write(chunked(b"data: " + mine + b"\n\n"))

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        response = await up.send(STREAM)
        assert b"".join([c async for c in response.aiter_bytes()]) == b"data: \n\n"
        for close in (response.finish, response.finish, response.aclose, response.aclose):
            await close()

        async def turn(name: str) -> bytes:
            request = UpstreamRequest("chat", {}, stream=True, headers={"x-request-id": name})
            return (await body_of(up, request))[1]

        one, two = await asyncio.gather(turn("1"), turn("2"))
        assert (one, two) == (b"data: 1\n\n", b"data: 2\n\n")
        await up.aclose()
    assert server.connections == 2


async def test_a_pool_a_reload_closed_refuses_the_next_attempt_without_reopening() -> None:
    # A turn that outlived server.drain_s tries its next target on the old config's
    # pool: that is a connect error of the target (the race moves on; the client gets
    # a 502 in our shape), not aiohttp's RuntimeError as a 500, nor a new session
    # that nothing would ever close.
    async def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        part = b"data: [DONE]\n\n"
        writer.write(SSE_HEAD + chunked(part))

    async with serving(answer) as server:
        up = upstream(f"http://127.0.0.1:{server.port}/v1")
        assert (await body_of(up))[0] == 200
        closing = asyncio.create_task(up.aclose())
        await asyncio.sleep(0)  # aclose is under way: the session is closing
        for _ in range(2):  # while it closes, and after
            with pytest.raises(UpstreamConnectError, match="t: closed by a reload"):
                await up.send(STREAM)
            await closing
    assert server.connections == 1
