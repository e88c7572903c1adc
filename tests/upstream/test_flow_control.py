"""Flow control on the relay's upstream connections (router/upstream/http.py): a reader
that falls behind pauses the connection and every byte still arrives once it catches
up, whichever way the body is delimited; a reader that keeps up never pays aiohttp
3.14's resume-after-every-read round (`_ResumeWhenPaused`)."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any

import pytest
from aiohttp.client_proto import ResponseHandler

from router.config import TargetConfig
from router.upstream.base import UpstreamRequest, UpstreamSetup
from router.upstream.http import RESUMES_EVERY_READ
from router.upstream.openai import OpenAIResponse, OpenAIUpstream
from tests.upstream.rawserver import SSE_HEAD, chunked, serving

pytestmark = pytest.mark.anyio

STREAM = UpstreamRequest("chat", {"model": "m", "messages": []}, stream=True)
#: well past aiohttp's high-water mark (twice its 256 KiB read buffer)
BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB


def upstream(port: int) -> OpenAIUpstream:
    target = TargetConfig.model_validate(
        {"name": "t", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m"}
    )
    return OpenAIUpstream(target, UpstreamSetup(api_key="sk-test-key"))


def protocol_of(response: OpenAIResponse) -> Any:
    connection = response._response.connection
    assert connection is not None
    return connection.protocol


def answers() -> dict[str, bytes]:
    parts = [BIG[i : i + 16384] for i in range(0, len(BIG), 16384)]
    packed = gzip.compress(BIG)
    return {
        "chunked": SSE_HEAD + chunked(*parts),
        "content-length": b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        b"content-length: %d\r\n\r\n" % len(BIG) + BIG,
        "gzip": b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(packed) + packed,
    }


@pytest.mark.parametrize("delimited", ["chunked", "content-length", "gzip"])
async def test_a_reader_that_falls_behind_pauses_the_connection_and_gets_every_byte(
    delimited: str,
) -> None:
    answer = answers()[delimited]

    async def write(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)

    async with serving(write) as server:
        up = upstream(server.port)
        response = await up.send(STREAM)
        chunks = response.aiter_bytes()
        got = [await chunks.__anext__()]
        protocol = protocol_of(response)
        for _ in range(100):  # the server writes on while nobody reads
            if protocol._reading_paused:
                break
            await asyncio.sleep(0.01)
        assert protocol._reading_paused, "the test's premise: the connection was paused"

        async def rest() -> None:
            async for chunk in chunks:
                got.append(chunk)

        await asyncio.wait_for(rest(), 20)  # a connection left paused never finishes
        await response.finish()
        await up.aclose()
    assert b"".join(got) == BIG


async def test_a_reader_that_keeps_up_never_resumes_a_connection_that_was_not_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RESUMES_EVERY_READ, "the aiohttp this project pins resumes after every read"
    resumed: list[bool] = []
    original = ResponseHandler.resume_reading

    def counting(self: ResponseHandler, resume_parser: bool = True) -> None:
        resumed.append(resume_parser)
        original(self, resume_parser)

    monkeypatch.setattr(ResponseHandler, "resume_reading", counting)
    events = [b'data: {"n": %d}\n\n' % i for i in range(40)]

    async def trickle(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        for event in events:  # one chunk, one read each
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.002)
        writer.write(b"0\r\n\r\n")

    async with serving(trickle) as server:
        up = upstream(server.port)
        response = await up.send(STREAM)
        reads = [chunk async for chunk in response.aiter_bytes()]
        await response.finish()
        await up.aclose()
    assert b"".join(reads) == b"".join(events)
    assert len(reads) > 10  # the premise: many reads, each could have resumed
    # aiohttp's own end-of-body resume (`resume_parser=False`) is the only one left
    assert [r for r in resumed if r] == []
