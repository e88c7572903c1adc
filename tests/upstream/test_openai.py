"""The OpenAI-compatible upstream through httpx's MockTransport: errors in our tree."""

from __future__ import annotations

import httpx
import pytest

from router.config import TargetConfig
from router.errors import UpstreamConnectError, UpstreamStatusError, UpstreamTimeout
from router.upstream.base import UpstreamRequest
from router.upstream.openai import OpenAIUpstream, client_body

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


def test_the_body_goes_upstream_with_the_targets_model_and_usage_asked_for() -> None:
    body = {"model": "route", "stream_options": {"continuous_usage_stats": True}, "n": 1}
    assert client_body(body, "target-model", stream=True) == {
        "model": "target-model",
        "stream_options": {"continuous_usage_stats": True, "include_usage": True},
        "n": 1,
    }
    assert client_body(body, "target-model", stream=False)["stream_options"] == {
        "continuous_usage_stats": True
    }
