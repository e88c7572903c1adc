"""OpenAI-compatible targets (vLLM, OpenAI, Azure OpenAI, Groq, OpenRouter, ...): a raw
byte relay over one aiohttp pool per target (`http.HttpPool`).

The request body goes out as JSON; the answer comes back untouched: SSE bytes for
streams, one JSON body otherwise. Every read is bounded: an error body to its first
64 KiB (then the connection is closed), a non-streamed answer to
`upstream.max_body_bytes`; a stream's events are bounded by the turn
(`upstream.max_event_bytes`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import parse_qsl

import aiohttp
from yarl import URL

from router.clock import Clock
from router.config import TargetConfig
from router.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamTimeout
from router.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from router.upstream.base import ENDPOINT_PATHS, UpstreamRequest, UpstreamSetup
from router.upstream.body import wire_bytes
from router.upstream.http import ERRORS, HttpPool, translate
from router.upstream.rejections import rejection_reason

log = logging.getLogger("firsttoken.upstream")

_RETRY_IN = re.compile(rb"try again in ([0-9]+(?:\.[0-9]+)?)(ms|s)")
#: the most of an error body that is read; the connection is closed after it
MAX_ERROR_BODY_BYTES = 64 * 1024
#: how long a finished stream may take to deliver its terminal chunk before its
#: connection is closed rather than reused
DRAIN_S = 0.05


def retry_after_s(headers: Mapping[str, str], body: bytes, *, wall_now: float) -> float | None:
    """Seconds to stay away (at most `MAX_RETRY_AFTER_S`): the Retry-After header, else
    OpenAI's "try again in 20ms" in a 429's text. `wall_now` is epoch seconds. A
    header that is neither seconds nor a date is logged and ignored."""
    value = headers.get("retry-after")
    if value:
        seconds = parse_retry_after(value, wall_now=wall_now, max_s=MAX_RETRY_AFTER_S)
        if seconds is not None:
            return seconds
        log.info("ignored a Retry-After that is neither seconds nor a date: %r", value[:64])
    match = _RETRY_IN.search(body)
    if match:
        amount = float(match.group(1))
        return min(amount / 1000 if match.group(2) == b"ms" else amount, MAX_RETRY_AFTER_S)
    return None


async def read_bounded(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a body, and whether that was all of it."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), content.at_eof()


class OpenAIResponse:
    """A 2xx answer; the body is read (or relayed) by the caller.

    A stream's idle timeout (`idle_s`: the longest wait for the next bytes) is kept by
    one lazy timer per stream rather than one per chunk: it fires at most once per
    `idle_s`, and only closes the response if a read has been waiting that long. A
    slow client (the relay reading later) is not an idle upstream."""

    #: `aclose` and `finish` never wait (nothing to shield them from a cancel)
    closes_at_once = True

    __slots__ = (
        "_content",
        "_expired",
        "_idle_s",
        "_loop",
        "_max_body",
        "_response",
        "_target",
        "_timer",
        "_waiting_since",
        "headers",
        "status",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        target: str,
        max_body: int,
        idle_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._response = response
        self._loop = loop  # the session's (its timers: not a getpid() call to look up)
        self._content = response.content
        self._target = target
        self._max_body = max_body
        self._idle_s = idle_s
        self._waiting_since: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False
        self.status = response.status
        #: case-insensitive
        self.headers: Mapping[str, str] = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._content
        loop = self._loop
        self._timer = loop.call_later(self._idle_s, self._watch, loop)
        try:
            while True:
                self._waiting_since = loop.time()
                chunk = await content.readany()
                self._waiting_since = None
                if not chunk:
                    return
                yield chunk
        except ERRORS as exc:
            if self._expired:
                raise UpstreamTimeout(
                    f"{self._target}: idle timeout (no bytes for {self._idle_s:g}s)",
                    target=self._target,
                    phase="idle",
                ) from exc
            raise translate(exc, self._target, "stream") from exc
        finally:
            self._unwatch()

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        since = self._waiting_since
        now = loop.time()
        if since is not None and now - since >= self._idle_s:
            self._expired = True
            self._timer = None
            self._response.close()  # the waiting read raises; the target sees the close
            return
        due = (since if since is not None else now) + self._idle_s
        self._timer = loop.call_at(due, self._watch, loop)

    async def aread(self) -> bytes:
        try:
            body, whole = await read_bounded(self._content, self._max_body)
            if whole and not self._content.at_eof():
                whole = not await self._content.read(1)
        except ERRORS as exc:
            raise translate(exc, self._target, "body") from exc
        if not whole:
            raise UpstreamProtocolError(
                f"{self._target}: answer larger than {self._max_body} bytes", target=self._target
            )
        return body

    def _unwatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def aclose(self) -> None:
        # An unread body means the caller gave up (cancel, hedge loser, a bound): drop
        # the connection so the target sees the disconnect and stops generating.
        self._unwatch()
        if self._content.at_eof():
            self._response.release()
        else:
            self._response.close()

    async def finish(self) -> None:
        self._unwatch()
        if self._content.at_eof():
            self._response.release()
            return
        # The terminal chunk is on its way; aiohttp hands the connection back to the
        # pool when it comes (the response releases itself at EOF). If it has not come
        # within DRAIN_S, close. Nothing waits here.
        self._loop.call_later(DRAIN_S, self._settle)

    def _settle(self) -> None:
        """Back to the pool if the body was read to its end, else closed (idempotent)."""
        if self._content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _url(base_url: str, path: str, query: str = "") -> URL:
    """`path` appended to `base_url`'s path, its query kept (Azure's `api-version`), and
    a client's `query` (already encoded) after it."""
    base = URL(base_url)
    joined = base.with_path(base.path.rstrip("/") + path, encoded=False)
    joined = joined.with_query(base.query) if base.query_string else joined
    if query:
        both = f"{base.query_string}&{query}" if base.query_string else query
        # as pairs: yarl would encode a string's `%` again (`metadata%5Bk%5D` -> `%255B`)
        joined = joined.with_query(parse_qsl(both, keep_blank_values=True))
    return joined


class OpenAIUpstream:
    """One target, one keep-alive pool. `wall_clock` dates a Retry-After."""

    def __init__(
        self,
        config: TargetConfig,
        setup: UpstreamSetup | None = None,
        *,
        wall_clock: Clock = time.time,
    ) -> None:
        assert config.base_url is not None, "validated by config"
        setup = setup or UpstreamSetup()
        self.name = config.name
        self._wall = wall_clock
        self._config = config
        self._base_url = config.base_url
        self._key = setup.api_key or ""
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream, application/json",
            "accept-encoding": "identity",
            **setup.headers,
        }
        if setup.api_key:
            if config.auth_header == "api-key":
                headers["api-key"] = setup.api_key
            else:
                headers["authorization"] = f"Bearer {setup.api_key}"
        self._headers = headers
        self._urls = {
            endpoint: _url(config.base_url, path) for endpoint, path in ENDPOINT_PATHS.items()
        }
        self._max_body = setup.max_body_bytes
        t = config.timeouts
        # The wait for the answer's head is bounded by the turn (`first_token_s`, or
        # `total_s` for a unary answer, which may be silent until it is whole); a
        # stream's reads by `idle_s`, in `OpenAIResponse`.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_read=None)
        self._idle_s = t.idle_s
        self.pool = HttpPool(
            config.name,
            config.base_url,
            max_connections=config.max_connections,
            keepalive_s=setup.keepalive_s,
            ca_file=config.ca_file,
            on_connection=setup.on_connection,
            headers=headers,
        )

    async def send(self, request: UpstreamRequest) -> OpenAIResponse:
        headers = request.headers  # the pool adds the target's own (`self._headers`)
        if request.path is None:
            url = self._urls[request.endpoint]
            response = await self.pool.post(url, headers, wire_bytes(request.body), self._timeout)
        else:  # a call on stored state: GET, DELETE, or a POST with or without a body
            url = _url(self._base_url, request.path, request.query)
            data = wire_bytes(request.body) if request.has_body else None
            response = await self.pool.post(url, headers, data, self._timeout, request.method)
        if response.status >= 300:
            raise await self._status_error(response)
        return OpenAIResponse(response, self.name, self._max_body, self._idle_s, self.pool.loop)

    async def _status_error(self, response: aiohttp.ClientResponse) -> UpstreamStatusError:
        """The error a non-2xx answer is: its first 64 KiB read, the connection closed
        unless that was the whole body."""
        try:
            body, whole = await read_bounded(response.content, MAX_ERROR_BODY_BYTES)
        except ERRORS:
            body, whole = b"", False
        if whole:
            response.release()
        else:
            response.close()
        if self._key and self._key.encode() in body:  # some APIs echo the key they rejected
            body = body.replace(self._key.encode(), b"[redacted]")
        status = response.status
        return UpstreamStatusError(
            f"{self.name}: upstream answered {status}",
            target=self.name,
            upstream_status=status,
            body=body,
            retry_after_s=retry_after_s(response.headers, body, wall_now=self._wall()),
            headers={k.lower(): v for k, v in response.headers.items()},
            rejection=rejection_reason(status, body),
        )

    async def warm_up(self) -> None:
        """Nothing to pay up front: connections open with the first turn."""

    async def aclose(self) -> None:
        await self.pool.aclose()
