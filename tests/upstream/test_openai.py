"""The OpenAI-compatible upstream through httpx's MockTransport: errors in our tree."""

from __future__ import annotations

import httpx
import pytest

from router.config import TargetConfig
from router.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeout
from router.retry_after import MAX_RETRY_AFTER_S
from router.upstream.base import UpstreamRequest
from router.upstream.openai import OpenAIUpstream, retry_after_s

KEY = "sk-target-7d1c0a9e5b3f"
CONFIG = TargetConfig(name="t", kind="openai", base_url="http://upstream.test/v1", model="m")
REQUEST = UpstreamRequest("chat", {"model": "m", "messages": []}, stream=True)


def upstream(handler: httpx.MockTransport) -> OpenAIUpstream:
    return OpenAIUpstream(CONFIG, KEY, transport=handler)


@pytest.mark.anyio
async def test_a_status_error_carries_status_retry_after_and_headers_but_never_the_key() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        body = b'{"error": {"message": "Incorrect API key provided: ' + KEY.encode() + b'"}}'
        return httpx.Response(
            429, content=body, headers={"retry-after": "3", "x-ratelimit-remaining-requests": "0"}
        )

    up = upstream(httpx.MockTransport(reply))
    with pytest.raises(UpstreamStatusError) as caught:
        await up.send(REQUEST)
    await up.aclose()
    err = caught.value
    assert (err.upstream_status, err.retry_after_s, err.retryable) == (429, 3.0, True)
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert KEY.encode() not in err.body and b"[redacted]" in err.body
    assert KEY not in err.message


@pytest.mark.anyio
async def test_transport_failures_become_connect_and_timeout_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("slow", request=request)

    for handler, kind in ((refuse, UpstreamConnectError), (slow, UpstreamTimeout)):
        up = upstream(httpx.MockTransport(handler))
        with pytest.raises(kind):
            await up.send(REQUEST)
        await up.aclose()


@pytest.mark.anyio
async def test_a_retry_after_date_is_read_against_the_injected_wall_clock() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": "Wed, 01 May 2024 12:00:30 GMT"})

    wall = 1714564800.0  # 2024-05-01T12:00:00Z
    up = OpenAIUpstream(CONFIG, KEY, transport=httpx.MockTransport(reply), wall_clock=lambda: wall)
    with pytest.raises(UpstreamStatusError) as caught:
        await up.send(REQUEST)
    await up.aclose()
    assert caught.value.retry_after_s == 30.0


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"retry-after": "inf"}, b"", None),
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
