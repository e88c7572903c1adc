"""The ASGI endpoints, in raw ASGI: no framework objects on the per-chunk path.

Client disconnect: the turn and a listener for `http.disconnect` run in one task
group; when the client goes away the listener cancels the group, and the turn's
`finally` closes the upstream connection at once.

Over 400 lines (about 500): the table of every HTTP endpoint and the checks all of them
pass (Host, Origin, methods, bodies) read best in one place; what an endpoint does
lives elsewhere (`realtime.py`, `audio.py`, `models.py`, `admission.py`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import unquote

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.config import ServerConfig
from router.errors import (
    BadRequest,
    ClientRateLimited,
    Draining,
    FirstTokenError,
    MethodNotAllowed,
    NoTargetAvailable,
    NotFound,
    Overloaded,
    UpgradeRequired,
)
from router.gateway import audio, chat_store, models, realtime, realtime_calls, relayed
from router.gateway.admin import admin_view
from router.gateway.admission import BodyParser, BodyScreen
from router.gateway.asgi import Receive, Scope, Send, header, watch_disconnect
from router.gateway.body import (
    ClientGone,
    Unread,
    body_timeout,
    content_length,
    read_body,
    read_unbounded,
)
from router.gateway.browser import BrowserGuard, require_json
from router.gateway.openapi import openapi_spec
from router.gateway.pages import PAGE_HEADERS, PAGES, page
from router.gateway.stateful import Call
from router.logs import log_turn
from router.runtime import Router
from router.turn.scopes import cancel_scope
from router.turn.sink import Header
from router.turn.types import TurnResult
from router.upstream.base import Endpoint

log = logging.getLogger("firsttoken.server")

_TURN_PATHS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/embeddings": "embeddings",
}
_AUDIO_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech"})
#: the audio endpoints that take a multipart form, not JSON
_FORM_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations"})
#: the POSTs whose body may be other than JSON (a WebRTC offer may be a form or bare SDP)
_NOT_JSON = _FORM_PATHS | {realtime_calls.PATH}
#: one model (route) by name: `GET /v1/models/{model}`
_MODEL_PREFIX = "/v1/models/"
_POST = ("POST", "OPTIONS")
_GET = ("GET", "HEAD", "OPTIONS")
#: chat's path: the turn's POST, and the list of stored chat completions
_CHAT = ("POST", *chat_store.LIST_METHODS, "OPTIONS")
#: the largest body an admin POST may have (`{}` is what it needs)
_ADMIN_BODY_BYTES = 4096
#: the request headers `Server._turn` reads
_TURN_HEADERS = frozenset({b"authorization", b"x-request-id", b"x-session-id"})
#: a client's x-request-id goes upstream only if it is this short and printable
_REQUEST_ID_MAX = 128


class AsgiSink:
    """A turn's `Sink` over ASGI's send."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False

    async def start(self, status: int, headers: Sequence[Header]) -> None:
        self.started = True
        await self._send(
            {"type": "http.response.start", "status": status, "headers": list(headers)}
        )

    def write(self, data: bytes) -> Awaitable[None]:
        # The server's own coroutine, for the caller to await: no frame of ours per chunk.
        return self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, last: bytes = b"") -> None:
        await self._send({"type": "http.response.body", "body": last, "more_body": False})
        self.finished = True


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Sequence[Header] = (),
    content_type: bytes = b"application/json",
) -> None:
    head = [(b"content-type", content_type)] if content_type else []
    head += [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _error_headers(err: FirstTokenError) -> list[Header]:
    if isinstance(err, ClientRateLimited) and err.retry_after_s is not None:
        return [(b"retry-after", str(max(1, round(err.retry_after_s))).encode())]
    if isinstance(err, NoTargetAvailable | Draining | Overloaded):
        return [(b"retry-after", b"1")]
    if isinstance(err, MethodNotAllowed) and err.allow:
        return [_allow(err.allow)]
    if isinstance(err, UpgradeRequired):
        return [(b"upgrade", b"websocket")]
    return []


def _allow(methods: Sequence[str]) -> Header:
    return (b"allow", ", ".join(methods).encode())


def _request_headers(scope: Scope) -> dict[str, str]:
    """What a call on stored state passes on: the client's request id, if plain."""
    request_id = _request_id(header(scope, b"x-request-id"))
    return {"x-request-id": request_id} if request_id else {}


def _turn_headers(scope: Scope) -> dict[str, str]:
    """The request headers a turn reads, decoded (the last of a repeated one wins), not
    every header the client sent: a turn's request carries a dozen it never reads."""
    return {
        low.decode("latin-1"): value.decode("latin-1")
        for key, value in scope["headers"]
        if (low := key.lower()) in _TURN_HEADERS
    }


def _request_id(value: str | None) -> str | None:
    """A client's request id, if it is short and printable ASCII (no spaces)."""
    if value and len(value) <= _REQUEST_ID_MAX and all("!" <= c <= "~" for c in value):
        return value
    return None


class Server:
    """The ASGI application. Holds a `Router`; knows HTTP, not routing."""

    def __init__(
        self,
        router: Router,
        *,
        reload: Callable[[], Awaitable[None]] | None = None,
        bound_host: str | None = None,
    ) -> None:
        self.router = router
        self._reload = reload
        self._bound_host = bound_host
        self._guard: tuple[ServerConfig, BrowserGuard] | None = None
        self.bodies = BodyParser(router.metrics.body_parsed)
        # Request ids: unique per process start, and cheaper than a uuid4 per turn.
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            if await self._guard_websocket(scope, receive, send):
                await realtime.serve(self.router, scope, receive, send)
            return
        if scope["type"] != "http":
            return
        arrived = self.router.clock()
        try:
            guard = self.guard()
            host = header(scope, b"host")
            guard.check_host(host)
            origin = guard.check_origin(header(scope, b"origin"), host)
            if origin is not None:
                send = guard.with_cors(send, origin)
            await self._dispatch(scope, receive, send, arrived=arrived, guard=guard, origin=origin)
        except ClientGone:
            return
        except Unread as unread:
            await self._error(send, unread.error, [(b"connection", b"close")])
        except FirstTokenError as err:
            await self._error(send, err)
        except Exception:
            # A bug of ours: log it, and still answer in OpenAI's shape if we can.
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            with contextlib.suppress(Exception):  # the response may have started already
                await self._error(send, FirstTokenError("internal error in the router"))

    async def _guard_websocket(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """The Host and Origin checks for an upgrade: a page on another site must not
        open a Realtime session (cross-site WebSocket hijacking) any more than a turn."""
        try:
            guard = self.guard()
            guard.check_host(header(scope, b"host"))
            guard.check_origin(header(scope, b"origin"), header(scope, b"host"))
        except FirstTokenError as err:
            if (await receive())["type"] == "websocket.connect":
                self.router.metrics.rejected(err.status)
                log.info("%s %s", err.status, err.message)
                await realtime.refuse(send, err)
            return False
        return True

    async def _error(
        self, send: Send, err: FirstTokenError, headers: Sequence[Header] = ()
    ) -> None:
        self.router.metrics.rejected(err.status)
        if err.status >= 500:
            log.warning("%s %s", err.status, err.message)
        else:
            log.info("%s %s", err.status, err.message)
        await _respond(send, err.status, err.to_json(), [*_error_headers(err), *headers])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with anyio.create_task_group() as tg:
                await self.router.run_background(tg)
                await send({"type": "lifespan.startup.complete"})
                message = await receive()  # lifespan.shutdown
                tg.cancel_scope.cancel()
        finally:
            await self.bodies.aclose()
            await self.router.aclose()
        await send({"type": "lifespan.shutdown.complete"})

    def guard(self) -> BrowserGuard:
        """The Host/Origin checks of the running config (rebuilt after a reload)."""
        server = self.router.runtime.config.server
        if self._guard is None or self._guard[0] is not server:
            self._guard = (server, BrowserGuard(server, self._bound_host))
        return self._guard[1]

    def _getters(self) -> dict[str, Callable[[Scope], Awaitable[tuple[int, bytes, bytes]]]]:
        return {
            "/v1/models": self._models,
            "/health": self._health,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/admin/targets": self._admin_targets,
            "/openapi.json": self._openapi,
        }

    def _methods(self, path: str) -> tuple[str, ...] | None:
        """The methods an endpoint takes, or None for no such endpoint."""
        if path in _TURN_PATHS:
            return _CHAT if path == chat_store.PATH else _POST
        if path == "/admin/reload" and self._reload is not None:
            return _POST
        if path in _AUDIO_PATHS:
            return _POST
        if path == realtime.REALTIME_PATH:  # a WebSocket; over plain HTTP, a 426 that says so
            return _GET
        if path == realtime_calls.PATH or realtime_calls.action_of(path) is not None:
            return _POST
        relayed_methods = relayed.methods(path)  # stored responses, conversations, ...
        if relayed_methods is not None:
            return relayed_methods
        if path.startswith(_MODEL_PREFIX) and len(path) > len(_MODEL_PREFIX):
            return _GET  # client.models.retrieve(): one route
        if path in PAGES and self.guard().playground:
            return _GET
        return _GET if path in self._getters() else None

    async def _dispatch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        arrived: float,
        guard: BrowserGuard,
        origin: str | None,
    ) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        methods = self._methods(path)
        if methods is None:
            raise NotFound(f"no endpoint {path}")
        if method == "OPTIONS":  # a CORS preflight (the origin passed), or a plain question
            extra = guard.preflight_headers(methods) if origin else [_allow(methods)]
            await send({"type": "http.response.start", "status": 204, "headers": extra})
            await send({"type": "http.response.body", "body": b""})
            return
        runtime = self.router.runtime
        if path.startswith("/admin/") or (path == "/metrics" and runtime.config.auth is not None):
            # With `auth`, /metrics on the main port shows spend per client key: admins
            # only (`server.metrics_port` stays open for scrapers on their own network).
            runtime.auth.check_admin(header(scope, b"authorization"))
        if method not in methods:
            raise MethodNotAllowed(f"{path} takes {methods[0]}, not {method}", methods)
        posts = method == "POST"
        if (posts and path not in _NOT_JSON and (methods is _POST or methods is _CHAT)) or (
            relayed.takes_json(path, method)
        ):
            require_json(header(scope, b"content-type"))
        endpoint = _TURN_PATHS.get(path)
        if endpoint is not None and posts:
            await self._turn(scope, receive, send, endpoint, arrived)
        elif endpoint is not None:  # GET /v1/chat/completions: the stored ones
            await chat_store.listing(self.router, await self._relayed_call(scope, receive), send)
        elif (relay := relayed.handler_for(path)) is not None:
            await relay(self.router, await self._relayed_call(scope, receive), send)
        elif path in _AUDIO_PATHS:
            await self._audio(scope, receive, send, path)
        elif path == realtime_calls.PATH or path.startswith(realtime_calls.PREFIX):
            await self._realtime_call(scope, receive, send, path)
        elif path == realtime.REALTIME_PATH:
            raise UpgradeRequired(
                f"{path} is a WebSocket endpoint: connect with a WebSocket upgrade "
                "(GET /v1/realtime?model=ROUTE, Upgrade: websocket), as the openai SDK's "
                "client.realtime.connect() does"
            )
        elif path == "/admin/reload" and self._reload is not None:
            raw = await self._read_body(scope, receive, _ADMIN_BODY_BYTES)
            try:
                ok = isinstance(json.loads(raw), dict)
            except ValueError:
                ok = False
            if not ok:
                raise BadRequest("an admin POST takes a JSON object as its body, e.g. {}")
            await self._reload()
            await _respond(send, 200, b'{"reloaded": true}')
        elif path.startswith(_MODEL_PREFIX):
            status, body, ctype = await self._model(scope, unquote(path[len(_MODEL_PREFIX) :]))
            await _respond(send, status, body, content_type=ctype)
        elif path in PAGES:
            body, ctype = page(path)
            await _respond(send, 200, body, PAGE_HEADERS, content_type=ctype)
        else:
            status, body, ctype = await self._getters()[path](scope)
            await _respond(send, status, body, content_type=ctype)

    # -- turns -------------------------------------------------------------------------

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        timeout = self.router.runtime.config.server.client_timeout_s
        return await read_body(scope, receive, limit, timeout)

    async def _turn_body(
        self,
        scope: Scope,
        receive: Receive,
        screen: BodyScreen,
        turn_scope: anyio.CancelScope,
        body_s: float,
    ) -> list[bytes]:
        """The turn's body, `turn_scope` cancelled if it is not all in within `body_s`."""
        deadlines = self.router.deadlines
        due = deadlines.cancel_after(body_s, turn_scope)
        try:
            return await read_unbounded(
                scope, receive, self.router.runtime.config.server.max_body_bytes, screen
            )
        finally:
            deadlines.drop(due)

    async def _turn(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, arrived: float
    ) -> None:
        headers = _turn_headers(scope)
        runtime = self.router.runtime
        client = runtime.auth.client(headers.get("authorization"))
        request_id = (
            _request_id(headers.get("x-request-id")) or f"{self._id_prefix}-{next(self._ids)}"
        )
        who = client.name if client else None
        access_log = runtime.config.server.access_log

        def refused(route: str, err: FirstTokenError) -> None:  # a refused turn's log line
            result = TurnResult(route=route)
            log_turn(
                result, client=who, request_id=request_id, status=err.status, enabled=access_log
            )

        def precheck(model: str) -> None:
            try:
                self.router.precheck(model, client)
            except FirstTokenError as err:
                refused(model, err)
                raise

        limits = runtime.config.server.limits
        screen = BodyScreen(precheck, limits, content_length(scope), messages=endpoint == "chat")
        sink = AsgiSink(send)
        gone = False
        # One cancel scope per turn: the body's deadline cancels it (kept by the
        # router's `deadlines`, one timer for all turns, and dropped once the body is
        # in), and the client's disconnect after (closing the upstream). The
        # disconnect is watched by the connection (`watch_disconnect`), not an anyio
        # task group: entering one, spawning into it and cancelling it cost ~50
        # microseconds a turn, some of it before the upstream send.
        body_s = runtime.config.server.client_timeout_s
        turn_scope = cancel_scope()

        def on_gone() -> None:
            nonlocal gone
            if not sink.finished:  # a connection closed after a whole answer: no cancel
                gone = True
                turn_scope.cancel()

        with turn_scope:
            chunks = await self._turn_body(scope, receive, screen, turn_scope, body_s)
            parsed = await self.bodies.parse(
                endpoint,
                chunks,
                headers.get("x-session-id"),
                limits,
                precheck,
                checked=screen.model,
            )
            del chunks  # a large body is held once, as the bytes to forward
            unwatch = watch_disconnect(scope, receive, on_gone)
            try:
                result = await self.router.handle(
                    parsed, sink, {"x-request-id": request_id}, arrived, client
                )
                log_turn(result, client=who, request_id=request_id, enabled=access_log)
            except FirstTokenError as err:
                refused(parsed.model, err)
                if not sink.started:
                    await self._error(send, err)
                else:  # cannot happen before the commit point; say it loudly if it does
                    log.error("error after the response started: %s", err.message)
            finally:
                unwatch()
        if gone:
            log.info("client went away on route %s; upstream cancelled", parsed.model)
        elif turn_scope.cancelled_caught:  # only the body's deadline: lifted once it is read
            raise body_timeout(body_s)

    async def _audio(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        runtime = self.router.runtime
        client = runtime.auth.client(headers.get("authorization"))
        raw = await self._read_body(scope, receive, runtime.config.server.max_body_bytes)
        if path in _FORM_PATHS:
            translation = path.endswith("/translations")
            await audio.transcription(
                self.router, raw, headers, send, client, translation=translation
            )
        else:
            await audio.speech(self.router, raw, send, client)

    async def _realtime_call(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """A WebRTC call's offer, or one of its actions (router/gateway/realtime_calls.py)."""
        raw = await self._read_body(scope, receive, realtime_calls.MAX_OFFER_BYTES)
        authorization = header(scope, b"authorization")
        if path != realtime_calls.PATH:
            await realtime_calls.act(self.router, path, raw, authorization=authorization, send=send)
            return
        await realtime_calls.create(
            self.router,
            raw,
            content_type=header(scope, b"content-type") or "",
            authorization=authorization,
            query=scope.get("query_string", b"").decode("latin-1"),
            send=send,
        )

    async def _relayed_call(self, scope: Scope, receive: Receive) -> Call:
        """A call relayed without a turn, read whole (a bodiless one's body is drained)."""
        limit = self.router.runtime.config.server.max_body_bytes
        raw = await self._read_body(
            scope, receive, _ADMIN_BODY_BYTES if relayed.bodiless(scope["path"]) else limit
        )
        client = self.router.runtime.auth.client(header(scope, b"authorization"))
        return relayed.call_of(scope, raw, client, _request_headers(scope))

    # -- plain endpoints -----------------------------------------------------------------

    async def _models(self, scope: Scope) -> tuple[int, bytes, bytes]:
        client = self.router.runtime.auth.client(header(scope, b"authorization"))
        return models.model_list(self.router, client)

    async def _model(self, scope: Scope, name: str) -> tuple[int, bytes, bytes]:
        client = self.router.runtime.auth.client(header(scope, b"authorization"))
        return models.one_model(self.router, client, name)

    async def _health(self, scope: Scope) -> tuple[int, bytes, bytes]:
        # vLLM's shape (200, no body, no content type): load tools that probe a vLLM
        # server (guidellm) accept the router in its place.
        return 200, b"", b""

    async def _healthz(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, b'{"status": "ok"}', b"application/json"

    async def _readyz(self, scope: Scope) -> tuple[int, bytes, bytes]:
        if self.router.ready and not self.router.draining:
            return 200, b'{"status": "ready"}', b"application/json"
        return 503, b'{"status": "not ready"}', b"application/json"

    async def _metrics(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, generate_latest(self.router.metrics.registry), CONTENT_TYPE_LATEST.encode()

    async def _openapi(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, json.dumps(openapi_spec()).encode(), b"application/json"

    async def _admin_targets(self, scope: Scope) -> tuple[int, bytes, bytes]:
        return 200, json.dumps(admin_view(self.router), default=str).encode(), b"application/json"
