"""A realtime target over aiohttp's WebSocket client: open a session, pass frames.

`RealtimeUpstream.connect()` opens one session at the target: the upgrade to
`<base>/realtime?model=M` (http(s) base URLs map to ws(s); a query in the base URL
is kept, as Azure's `api-version` and `deployment`), authenticated with the key in
the target's `auth_header` (`Authorization: Bearer`, or Azure's `api-key`) and the
target's own headers, then waits for the first event, which must be
`session.created`, all within `connect_s`.

Azure OpenAI's two shapes (learn.microsoft.com, "Use the GPT Realtime API via
WebSockets"; openai-python's `AzureOpenAI._configure_realtime`):

    GA        base_url https://RES.openai.azure.com/openai/v1, model: DEPLOYMENT
              -> wss://RES.openai.azure.com/openai/v1/realtime?model=DEPLOYMENT
    preview   base_url https://RES.openai.azure.com/openai?api-version=V&deployment=D
              -> wss://RES.openai.azure.com/openai/realtime?api-version=V&deployment=D
              (no `model`: the deployment names it, as the SDK sends it) Per-message
deflate is off (base64 audio barely compresses; it cost 35-60 % more CPU in the
relay of a 2-core machine, measured with the same uvicorn and aiohttp stack) and
frames are capped at 16 MiB. A session quiet for the target's `timeouts.ping_s` is
pinged (aiohttp's heartbeat); no pong within half of it drops the socket as 1006, so a
hung upstream or a lost network moves the session instead of holding it in silence.

Failures are translated here, once, into `router.errors`:

    refused upgrade (any non-101 status)        UpstreamStatusError(upstream_status, headers,
                                                retry_after_s)
    TCP/TLS/DNS failure, reset                  UpstreamConnectError
    no upgrade or no session.created in time    UpstreamTimeout(phase="connect")
    closed, or another first event, before      UpstreamProtocolError
    session.created

A `RealtimeConnection` then sends and receives text frames unchanged. `receive()`
returns the frame's text (or bytes), or a `Closed` with the peer's close code once
the socket is gone; it never raises for a close.

`offer()` and `call()` are the target's WebRTC side over HTTP(S) on the same pool: an
SDP offer POSTed to `<base>/realtime/calls` in the openai SDK's shape (a multipart form
of `sdp` and a JSON `session`; the answer is the SDP and the call's `Location`), or one
of a call's actions (`/realtime/calls/{id}/accept|reject|refer|hangup`, JSON).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSMsgType
from yarl import URL

from router.clock import Clock
from router.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.realtime.wire import sniff
from router.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from router.targetsettings import AuthHeader, key_headers
from router.upstream.openai import MAX_ERROR_BODY_BYTES, read_bounded, retry_after_s
from router.upstream.rejections import rejection_reason

MAX_FRAME_BYTES = 16 * 1024 * 1024
#: how long a close waits for the peer's close frame before dropping the socket
CLOSE_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Closed:
    """The socket closed: the peer's close code (1006 when it just went away)."""

    code: int
    reason: str = ""


_WS_SCHEMES = {"https": "wss", "http": "ws"}
_HTTP_SCHEMES = {"wss": "https", "ws": "http"}


def realtime_url(base_url: str, model: str, *, transcription: bool = False) -> str:
    """`<base>/realtime?model=M`, with http(s) mapped to ws(s) as the openai SDK does and
    the base URL's own query kept; a base that names Azure's `deployment` gets no `model`.
    A transcription session is `?intent=transcription` with no model: its
    `session.update` names the transcription model (OpenAI: a model in the URL makes a
    conversation session, which refuses the transcription type)."""
    base = URL(base_url)
    url = (
        base.with_scheme(_WS_SCHEMES.get(base.scheme, base.scheme))
        .with_path(base.path.rstrip("/") + "/realtime", encoded=False)
        .with_query(base.query)
    )
    if transcription:
        return str(url.update_query(intent="transcription"))
    if "deployment" in base.query:
        return str(url)
    return str(url.update_query(model=model))


#: a WebRTC call's SDP exchange or one of its actions, whole (OpenAI answers an offer in
#: about a second)
CALL_TIMEOUT_S = 15.0
#: an SDP answer is a few KiB
MAX_CALL_ANSWER_BYTES = 1024 * 1024


def calls_url(base_url: str, suffix: str = "") -> str:
    """`<base>/realtime/calls<suffix>` over HTTP(S) (a ws(s) base URL maps back, as the
    SDK's HTTP calls go), the base URL's own query kept."""
    base = URL(base_url)
    return str(
        base.with_scheme(_HTTP_SCHEMES.get(base.scheme, base.scheme))
        .with_path(base.path.rstrip("/") + "/realtime/calls" + suffix, encoded=False)
        .with_query(base.query)
    )


@dataclass(frozen=True, slots=True)
class CallAnswer:
    """A target's 2xx answer to a WebRTC call request."""

    status: int
    #: names lower-cased
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class RealtimeConnection:
    """One open session at a target. Not for concurrent `receive()` calls."""

    __slots__ = ("_ws", "connect_s", "created", "target")

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, target: str, created: str, connect_s: float
    ) -> None:
        self._ws = ws
        self.target = target
        #: the `session.created` frame, as the target sent it
        self.created = created
        #: upgrade to `session.created`, in seconds
        self.connect_s = connect_s

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, text: str) -> None:
        """Send one text frame; waits while the socket's buffer is full (back-pressure)."""
        try:
            await self._ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise UpstreamConnectError(
                f"{self.target}: the session's socket is gone ({type(exc).__name__})",
                target=self.target,
            ) from exc

    async def receive(self) -> str | bytes | Closed:
        message = await self._ws.receive()
        kind = message.type
        if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
            data: str | bytes = message.data
            return data
        if kind is WSMsgType.CLOSE:
            return Closed(int(message.data), str(message.extra or ""))
        return Closed(self._ws.close_code or 1006)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame now; give the peer `CLOSE_WAIT_S` to answer it."""
        await self._ws.close(code=code, message=reason.encode())


class RealtimeUpstream:
    """Opens sessions at one realtime target. One connection pool per target."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth_header: AuthHeader = "authorization",
        connect_s: float = 2.0,
        heartbeat_s: float | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = base_url
        self._key = api_key
        self.url = realtime_url(base_url, model)
        self.transcription_url = realtime_url(base_url, model, transcription=True)
        self.connect_s = connect_s
        #: ping the upstream after this long without a frame (aiohttp's heartbeat; no
        #: pong within half of it closes the socket as 1006: the session migrates)
        self.heartbeat_s = heartbeat_s
        self._headers = {**(headers or {}), **key_headers(auth_header, api_key)}
        self._max_frame_bytes = max_frame_bytes
        self._clock = clock
        self._wall_clock = wall_clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def connect(self, transcription: bool = False) -> RealtimeConnection:
        """Open a session (a transcription session); returns once the target's
        `session.created` arrived."""
        return await self._open(self.transcription_url if transcription else self.url)

    async def attach(self, call_id: str) -> RealtimeConnection:
        """Join the session of a WebRTC call this target holds (its sideband:
        `<base>/realtime?call_id=ID`, no model), as `connect` opens one."""
        url = URL(self.url).without_query_params("model", "deployment")
        return await self._open(str(url.update_query(call_id=call_id)))

    async def _open(self, url: str) -> RealtimeConnection:
        started = self._clock()
        ws: aiohttp.ClientWebSocketResponse | None = None
        try:
            async with asyncio.timeout(self.connect_s):
                ws = await self._client().ws_connect(
                    url,
                    headers=self._headers,
                    compress=0,
                    max_msg_size=self._max_frame_bytes,
                    autoping=True,
                    heartbeat=self.heartbeat_s,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WAIT_S),
                )
                first = await ws.receive()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            _abort(ws)
            raise self._translate(exc) from exc
        except BaseException:
            _abort(ws)
            raise
        if first.type is not WSMsgType.TEXT or sniff(first.data) != "session.created":
            await ws.close()
            raise UpstreamProtocolError(
                f"{self.name}: {_describe(first.type, first.data)} before session.created",
                target=self.name,
            )
        return RealtimeConnection(ws, self.name, first.data, self._clock() - started)

    async def offer(self, sdp: str, session: Mapping[str, Any]) -> CallAnswer:
        """POST a WebRTC call's SDP offer to `<base>/realtime/calls` as the openai SDK
        does: a multipart form of `sdp` (`application/sdp`) and `session` (JSON)."""
        form = aiohttp.FormData()
        form.add_field("sdp", sdp, content_type="application/sdp")
        form.add_field("session", json.dumps(session), content_type="application/json")
        return await self._post(calls_url(self.base_url), data=form)

    async def call(self, payload: Mapping[str, Any], suffix: str) -> CallAnswer:
        """POST one of a call's actions (`suffix` `/{call_id}/{action}`) as JSON."""
        return await self._post(calls_url(self.base_url, suffix), json=payload)

    async def _post(self, url: str, **content: Any) -> CallAnswer:
        """A non-2xx is an `UpstreamStatusError` (its body's first 64 KiB, the target's
        key redacted)."""
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S, sock_connect=self.connect_s)
        try:
            async with self._client().post(
                url, headers=self._headers, timeout=timeout, **content
            ) as response:
                body, whole = await read_bounded(response.content, MAX_CALL_ANSWER_BYTES)
                status = response.status
                headers = {k.lower(): v for k, v in response.headers.items()}
        except TimeoutError as exc:
            late = f"{self.name}: no answer to the call within {CALL_TIMEOUT_S:g}s"
            raise UpstreamTimeout(late, target=self.name, phase="total") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._translate(exc) from exc
        if self._key and self._key.encode() in body:  # some APIs echo the key they rejected
            body = body.replace(self._key.encode(), b"[redacted]")
        if status >= 300:
            raise UpstreamStatusError(
                f"{self.name}: upstream answered {status}",
                target=self.name,
                upstream_status=status,
                body=body[:MAX_ERROR_BODY_BYTES],
                retry_after_s=retry_after_s(headers, body, wall_now=self._wall_clock()),
                headers=headers,
                rejection=rejection_reason(status, body),
            )
        if not whole:
            raise UpstreamProtocolError(
                f"{self.name}: a call's answer over {MAX_CALL_ANSWER_BYTES} bytes", target=self.name
            )
        return CallAnswer(status, headers, body)

    def _translate(self, exc: Exception) -> UpstreamError:
        name = self.name
        if isinstance(exc, aiohttp.WSServerHandshakeError):
            headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
            return UpstreamStatusError(
                f"{name}: the upgrade was refused with {exc.status}",
                target=name,
                upstream_status=exc.status,
                headers=headers,
                retry_after_s=self._retry_after(headers),
            )
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(
                f"{name}: no session within {self.connect_s:g}s", target=name, phase="connect"
            )
        return UpstreamConnectError(f"{name}: cannot connect ({type(exc).__name__})", target=name)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        value = headers.get("retry-after")
        if value is None:
            return None
        return parse_retry_after(value, wall_now=self._wall_clock(), max_s=MAX_RETRY_AFTER_S)

    async def warm_up(self) -> None:
        self._client()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _abort(ws: aiohttp.ClientWebSocketResponse | None) -> None:
    """Drop a socket at once: no close handshake with a target that has failed us (a
    hung one would hold the failover for the whole close wait)."""
    if ws is not None:
        ws._response.close()


def _describe(kind: WSMsgType, data: Any) -> str:
    if kind is WSMsgType.CLOSE:
        return f"closed with {data}"
    if kind is WSMsgType.TEXT:
        return f"event {sniff(data)!r}"
    return f"{kind.name.lower()} frame"
