"""The OpenAI-compatible upstream against raw servers on 127.0.0.1: what it sends
(URL, headers, key) and how it reports failures (errors in our tree, never the key)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from router.config import TargetConfig
from router.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeout
from router.retry_after import MAX_RETRY_AFTER_S
from router.upstream.base import UpstreamRequest, UpstreamSetup
from router.upstream.openai import OpenAIUpstream, _url, retry_after_s
from router.upstream.rejections import rejection_reason
from tests.upstream.rawserver import SSE_HEAD, chunked, serving

pytestmark = pytest.mark.anyio

KEY = "sk-target-7d1c0a9e5b3f"
REQUEST = UpstreamRequest("chat", {"model": "m", "messages": []}, stream=True)


def target(base_url: str, **extra: object) -> TargetConfig:
    return TargetConfig.model_validate(
        {"name": "t", "kind": "openai", "base_url": base_url, "model": "m", **extra}
    )


def head_lines(request: bytes) -> list[bytes]:
    return request.split(b"\r\n\r\n")[0].split(b"\r\n")


async def test_a_status_error_carries_status_retry_after_and_headers_but_never_the_key() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'"}}'

    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        assert f"authorization: Bearer {KEY}".encode() in head_lines(request)
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\n"
            b"x-ratelimit-remaining-requests: 0\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )

    async with serving(answer) as server:
        up = OpenAIUpstream(target(f"http://127.0.0.1:{server.port}/v1"), UpstreamSetup(KEY))
        with pytest.raises(UpstreamStatusError) as caught:
            await up.send(REQUEST)
        await up.aclose()
    err = caught.value
    assert (err.upstream_status, err.retry_after_s, err.retryable) == (429, 3.0, True)
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert KEY.encode() not in err.body and b"[redacted]" in err.body
    assert KEY not in err.message


async def test_a_refused_connection_and_a_silent_server_are_connect_and_timeout_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
    up = OpenAIUpstream(target(f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(UpstreamConnectError):
        await up.send(REQUEST)
    await up.aclose()

    async def silent(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunked(b"data: a\n\n")[:-5])  # then nothing more
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(silent) as server:
        up = OpenAIUpstream(target(f"http://127.0.0.1:{server.port}/v1", timeouts={"idle_s": 0.2}))
        response = await up.send(REQUEST)
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: a\n\n"
        # a slow reader is not an idle upstream: the wait only counts while reading
        await asyncio.sleep(0.3)
        with pytest.raises(UpstreamTimeout, match="idle"):
            await anext(chunks)
        await response.aclose()
        await up.aclose()


async def test_azure_deployment_urls_keep_api_version_and_send_the_key_as_api_key() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunked(b"data: [DONE]\n\n"))

    async with serving(answer) as server:
        base = f"http://127.0.0.1:{server.port}/openai/deployments/gpt-4o?api-version=2024-10-21"
        up = OpenAIUpstream(
            target(base, auth_header="api-key"),
            UpstreamSetup(KEY, headers={"OpenAI-Organization": "org-1", "X-Title": "app"}),
        )
        response = await up.send(REQUEST)
        await response.aclose()
        await up.aclose()
    lines = head_lines(server.requests[0])
    assert lines[0] == (
        b"POST /openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 HTTP/1.1"
    )
    lowered = [line.lower() for line in lines]
    assert f"api-key: {KEY}".encode() in lowered
    assert not any(line.startswith(b"authorization:") for line in lowered)
    assert b"openai-organization: org-1" in lowered and b"x-title: app" in lowered


async def test_a_retry_after_date_is_read_against_the_injected_wall_clock() -> None:
    def answer(request: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: Wed, 01 May 2024 12:00:30 GMT\r\n"
            b"content-length: 0\r\n\r\n"
        )

    wall = 1714564800.0  # 2024-05-01T12:00:00Z
    async with serving(answer) as server:
        up = OpenAIUpstream(
            target(f"http://127.0.0.1:{server.port}/v1"),
            UpstreamSetup(KEY),
            wall_clock=lambda: wall,
        )
        with pytest.raises(UpstreamStatusError) as caught:
            await up.send(REQUEST)
        await up.aclose()
    assert caught.value.retry_after_s == 30.0


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"retry-after": "inf"}, b"", None),
        ({"retry-after": "soon"}, b"", None),
        ({"retry-after": "-1"}, b"Please try again in 250ms.", 0.25),
        ({}, b"Rate limit reached. Please try again in 1.5s.", 1.5),
        ({}, b"Please try again in 9999999s.", MAX_RETRY_AFTER_S),
        ({"retry-after": "86400"}, b"", MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_falls_back_to_openais_text_and_is_clamped(
    headers: dict[str, str], body: bytes, seconds: float | None
) -> None:
    assert retry_after_s(headers, body, wall_now=0.0) == seconds


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        # OpenAI
        (
            404,
            b'{"error":{"message":"The model `gpt-9` does not exist or you do not have '
            b'access to it.","type":"invalid_request_error","param":null,'
            b'"code":"model_not_found"}}',
            "model_not_found",
        ),
        (
            400,
            b'{"error":{"message":"Unsupported parameter: \'max_tokens\' is not supported '
            b'with this model.","type":"invalid_request_error","param":"max_tokens",'
            b'"code":"unsupported_parameter"}}',
            "unsupported_parameter",
        ),
        (
            400,
            b'{"error":{"message":"This model\'s maximum context length is 8192 tokens.",'
            b'"type":"invalid_request_error","code":"context_length_exceeded"}}',
            "context_length",
        ),
        # Azure OpenAI
        (
            404,
            b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this '
            b'resource does not exist."}}',
            "model_not_found",
        ),
        # Groq, n > 1
        (
            400,
            b'{"error":{"message":"\'n\' : number must be at most 1",'
            b'"type":"invalid_request_error"}}',
            "unsupported_parameter",
        ),
        # vLLM
        (
            404,
            b'{"object":"error","message":"The model `x` does not exist.",'
            b'"type":"NotFoundError","param":null,"code":404}',
            "model_not_found",
        ),
        # the request's own fault: back to the client
        (
            400,
            b'{"error":{"message":"messages: field required","type":"invalid_request_error"}}',
            None,
        ),
        (401, b'{"error":{"message":"The model does not exist"}}', None),
    ],
)
def test_rejections_that_another_target_may_serve_are_told_from_bad_requests(
    status: int, body: bytes, reason: str | None
) -> None:
    assert rejection_reason(status, body) == reason


def test_a_clients_encoded_query_is_sent_as_it_came_not_encoded_twice() -> None:
    # The SDK sends `metadata={"k": "v"}` as `metadata%5Bk%5D=v` and `include=[...]` as
    # `include%5B%5D=...`; a `%` encoded again would name another parameter upstream.
    url = _url("https://h/v1?api-version=2025-01", "/chat/completions", "metadata%5Bk%5D=v&model=m")
    assert str(url) == "https://h/v1/chat/completions?api-version=2025-01&metadata%5Bk%5D=v&model=m"
    url = _url("http://h:1/v1/", "/responses/r1/input_items", "include%5B%5D=a.b&limit=2")
    assert str(url) == "http://h:1/v1/responses/r1/input_items?include%5B%5D=a.b&limit=2"
    assert url.query.getall("include[]") == ["a.b"]
