"""OpenAI-compatible targets (vLLM, OpenAI, Groq, Together, ...): a raw byte relay.

The request body goes out as JSON; the answer comes back untouched: SSE bytes for
streams, one JSON body otherwise. This module is the one place where httpx's
exceptions become `router.errors`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Literal
from urllib.parse import urlsplit

import httpx

from router.clock import Clock
from router.config import TargetConfig
from router.errors import (
    TimeoutPhase,
    UpstreamConnectError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from router.upstream.base import ENDPOINT_PATHS, UpstreamRequest
from router.upstream.body import wire_bytes
from router.upstream.http1 import Http1Client, Http1Response

_RETRY_IN = re.compile(rb"try again in ([0-9]+(?:\.[0-9]+)?)(ms|s)")
#: where in a request a transport failure struck
Phase = Literal["connect", "stream", "body"]


def retry_after_s(headers: Mapping[str, str], body: bytes, *, wall_now: float) -> float | None:
    """Seconds to stay away (at most `MAX_RETRY_AFTER_S`): the Retry-After header, else
    OpenAI's "try again in 20ms" in a 429's text. `wall_now` is epoch seconds."""
    value = headers.get("retry-after")
    if value:
        seconds = parse_retry_after(value, wall_now=wall_now, max_s=MAX_RETRY_AFTER_S)
        if seconds is not None:
            return seconds
    match = _RETRY_IN.search(body)
    if match:
        amount = float(match.group(1))
        return min(amount / 1000 if match.group(2) == b"ms" else amount, MAX_RETRY_AFTER_S)
    return None


def translate(exc: httpx.HTTPError, target: str, phase: Phase) -> UpstreamError:
    """httpx's exceptions, in our tree. The message names the target, never a key."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        which: TimeoutPhase = "connect" if isinstance(exc, httpx.ConnectTimeout) else "idle"
        return UpstreamTimeout(f"{target}: {which} timeout ({kind})", target=target, phase=which)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectError(f"{target}: cannot connect ({kind})", target=target)
    return UpstreamConnectError(
        f"{target}: connection failed during {phase} ({kind})", target=target
    )


class _HttpxBody:
    """An `httpx.Response` in `Http1Response`'s shape (an injected httpx transport:
    `MockTransport` in unit tests, `ASGITransport`)."""

    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            yield chunk

    async def aread(self) -> bytes:
        return await self._response.aread()

    async def aclose(self) -> None:
        await self._response.aclose()


class OpenAIResponse:
    """A 2xx answer; the body is read (or relayed) by the caller."""

    __slots__ = ("_raw", "_target", "headers", "status")

    def __init__(self, raw: Http1Response | _HttpxBody, target: str) -> None:
        self._raw = raw
        self._target = target
        self.status = raw.status
        self.headers: Mapping[str, str] = raw.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._raw.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise translate(exc, self._target, "stream") from exc

    async def aread(self) -> bytes:
        try:
            return await self._raw.aread()
        except httpx.HTTPError as exc:
            raise translate(exc, self._target, "body") from exc

    async def aclose(self) -> None:
        await self._raw.aclose()


class OpenAIUpstream:
    """One target, one keep-alive pool.

    Requests go out through `Http1Client` (router/upstream/http1.py: the relay's
    own small HTTP/1.1 client); an injected httpx transport (`MockTransport` in
    unit tests) gets an `httpx.Request` instead. `wall_clock` dates a Retry-After."""

    def __init__(
        self,
        config: TargetConfig,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        assert config.base_url is not None, "validated by config"
        self.name = config.name
        self._wall = wall_clock
        self._config = config
        self._key = api_key.encode() if api_key else b""
        self._headers = {
            "content-type": "application/json",
            "accept": "text/event-stream, application/json",
        }
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._transport = transport
        self._client = Http1Client(config.base_url) if transport is None else None
        base = urlsplit(config.base_url)
        query = f"?{base.query}" if base.query else ""  # e.g. Azure's api-version
        self._paths = {
            endpoint: base.path.rstrip("/") + path + query
            for endpoint, path in ENDPOINT_PATHS.items()
        }
        # the same targets for an injected httpx transport
        origin = f"{base.scheme}://{base.netloc}"
        self._urls = {endpoint: httpx.URL(origin + path) for endpoint, path in self._paths.items()}
        t = config.timeouts
        self._connect_s, self._read_s = t.connect_s, t.idle_s
        timeout = httpx.Timeout(
            connect=t.connect_s, read=t.idle_s, write=t.idle_s, pool=t.connect_s
        )
        self._extensions = {"timeout": timeout.as_dict()}

    async def _open(self, request: UpstreamRequest) -> Http1Response | _HttpxBody:
        headers = {**self._headers, **request.headers}
        body = wire_bytes(request.body)
        if self._client is not None:
            return await self._client.open(
                "POST",
                self._paths[request.endpoint],
                headers,
                body,
                connect_s=self._connect_s,
                read_s=self._read_s,
            )
        assert self._transport is not None
        http_request = httpx.Request(
            "POST",
            self._urls[request.endpoint],
            headers=headers,
            content=body,
            extensions=self._extensions,
        )
        return _HttpxBody(await self._transport.handle_async_request(http_request))

    async def send(self, request: UpstreamRequest) -> OpenAIResponse:
        try:
            response = await self._open(request)
        except httpx.HTTPError as exc:
            raise translate(exc, self.name, "connect") from exc
        if response.status >= 300:
            try:
                body = (await response.aread())[:65536]
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            if self._key and self._key in body:  # some APIs echo the key they rejected
                body = body.replace(self._key, b"[redacted]")
            raise UpstreamStatusError(
                f"{self.name}: upstream answered {response.status}",
                target=self.name,
                upstream_status=response.status,
                body=body,
                retry_after_s=retry_after_s(response.headers, body, wall_now=self._wall()),
                headers={k.lower(): v for k, v in response.headers.items()},
            )
        return OpenAIResponse(response, self.name)

    async def warm_up(self) -> None:
        """Nothing to pay up front: connections open with the first turn."""

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._transport is not None:
            await self._transport.aclose()
