"""`GET /v1/realtime?model=ROUTE`: the Realtime WebSocket endpoint, in raw ASGI.

The upgrade is answered only once an upstream session exists: the client's key is
checked (`Authorization: Bearer`, or from browsers the subprotocols `realtime` and
`openai-insecure-api-key.<key>`), the route's policy picks targets and the router
opens a session on the first that gives a `session.created` (failover is invisible
to the client). A refusal is an HTTP answer to the upgrade in OpenAI's error shape,
through the ASGI `websocket.http.response` extension: 401 bad key, 403 route not
allowed, 404 unknown route, 429 over the key's session limits, 503 no eligible
target (502/504 when every target failed). The accepted subprotocol is `realtime`,
never the entry that carries the key.

An ephemeral key (`ek_...`, from `POST /v1/realtime/client_secrets`) opens a session
on its own route (`?model=` may be left out; another route is a 403) as the client
key that asked for it, with the configuration it carries applied first.

`?call_id=ID` joins the session of a WebRTC call at the target that holds it, and never
moves (`router/gateway/realtime_sideband.py`).

`?intent=transcription` opens a transcription session (live speech to text, no
answers), as OpenAI's URL does: on the route `?model=` names, or without it the only
realtime route the key may use; upstream, with `?intent=transcription` and no model
(a cascade runs its VAD and speech-to-text stage only). It fails over and migrates as
a conversation does, its configuration replayed; there is no conversation to carry.

uvicorn runs the socket (`websockets-sansio`, per-message deflate off, 16 MiB
frames: a larger one is closed 1009 by uvicorn itself); `AsgiClientSocket` is the
session's view of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from router.errors import (
    BadRequest,
    ClientRateLimited,
    Draining,
    FirstTokenError,
    Forbidden,
    ModelNotFound,
    NoTargetAvailable,
    NotFound,
)
from router.gateway.asgi import Receive, Scope, Send
from router.gateway.auth import Client
from router.gateway.realtime_sideband import open_sideband
from router.realtime.client import ClientGone
from router.realtime.events import MigrationReason
from router.realtime.migrate import PROACTIVE, reorder
from router.realtime.service import session_limits
from router.realtime.session import Session
from router.realtime.target import Leg, RealtimeTarget, open_leg
from router.runtime import Router

log = logging.getLogger("firsttoken.realtime")

REALTIME_PATH = "/v1/realtime"
SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."


class AsgiClientSocket:
    """The client's WebSocket as a `ClientSocket`."""

    __slots__ = ("_receive", "_send", "close_code", "gone")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.gone = False
        #: the code the client closed with (None while open)
        self.close_code: int | None = None

    async def receive(self) -> str | bytes | None:
        if self.gone:
            return None
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        self.gone = True
        self.close_code = int(message.get("code", 1005))
        return None

    async def send(self, text: str) -> None:
        if self.gone:
            raise ClientGone
        try:
            await self._send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError) as exc:  # uvicorn's ClientDisconnected is an OSError
            self.gone = True
            raise ClientGone from exc

    async def close(self, code: int, reason: str = "") -> None:
        if self.gone:
            return
        self.gone = True
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def credentials(scope: Scope) -> tuple[str | None, bool]:
    """(`Authorization` value to check, whether the client offered `realtime`).

    A browser's key rides in a subprotocol; it is turned into a bearer value here
    and never echoed back."""
    authorization = None
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            authorization = value.decode("latin-1")
            break
    offered = [str(p) for p in scope.get("subprotocols") or ()]
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL) and authorization is None:
            authorization = f"Bearer {protocol.removeprefix(KEY_SUBPROTOCOL)}"
    return authorization, SUBPROTOCOL in offered


def _query(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return str(values[0]) if values and values[0] else None


def _model(scope: Scope) -> str | None:
    return _query(scope, "model")


def transcribing(scope: Scope) -> bool:
    """Whether the client asks for a transcription session (`?intent=transcription`)."""
    intent = _query(scope, "intent")
    if intent is not None and intent != "transcription":
        raise BadRequest(f"unknown intent '{intent[:100]}': the one served is 'transcription'")
    return intent is not None


def route_name(scope: Scope, router: Router, client: Client | None, transcription: bool) -> str:
    model = _model(scope)
    if model is not None:
        return model
    if not transcription:
        raise BadRequest("missing required query parameter: model (the route's name)")
    runtime = router.runtime
    names = [n for n in router.models(client) if runtime.realtime.serves(runtime.routes[n].config)]
    if len(names) != 1:
        raise BadRequest(
            f"a transcription session names no route, and {len(names)} realtime routes "
            f"serve this key ({', '.join(names) or 'none'}): name one with ?model=ROUTE"
        )
    return names[0]


def ephemeral_route(scope: Scope, granted: str) -> str:
    """An ephemeral key's route: the one it was made for, which `?model=` may repeat."""
    model = _model(scope)
    if model is not None and model != granted:
        raise Forbidden(
            f"this ephemeral key opens sessions on route '{granted}', not '{model[:200]}'"
        )
    return granted


async def refuse(send: Send, err: FirstTokenError) -> None:
    """Answer the upgrade with an HTTP error in OpenAI's shape."""
    body = err.to_json()
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(err, ClientRateLimited) and err.retry_after_s is not None:
        # a key past its session-minutes: when its window frees a minute
        headers.append((b"retry-after", str(max(1, math.ceil(err.retry_after_s))).encode()))
    elif isinstance(err, ClientRateLimited | NoTargetAvailable | Draining):
        headers.append((b"retry-after", b"1"))
    await send(
        {
            "type": "websocket.http.response.start",
            "status": err.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


async def open_session(
    router: Router,
    route_name: str,
    socket: AsgiClientSocket,
    client: Client | None,
    *,
    initial: Mapping[str, Any] | None = None,
    transcription: bool = False,
) -> Session:
    """A session on the best target that opens one (failover included). Raises 404 (no
    such realtime route), 403/429 (the key), 503 (no target), 502/504 (all failed)."""
    if router.draining:
        raise Draining("this replica is shutting down; retry on another")
    runtime = router.runtime
    route = runtime.routes.get(route_name)
    if route is None or not runtime.realtime.serves(route.config):
        served = [n for n, r in runtime.routes.items() if runtime.realtime.serves(r.config)]
        raise ModelNotFound(
            f"no realtime route '{route_name}'; realtime routes here: {', '.join(served)}"
        )
    runtime.auth.admit_session(client, route_name)
    events = router.realtime_metrics

    async def open_on(ranked: list[RealtimeTarget], force: bool = False) -> Leg:
        return await open_leg(
            ranked,
            route=route_name,
            events=events,
            now=router.clock(),
            force=force,
            transcription=transcription,
        )

    leg = await open_on(router.plan_session(runtime, route, transcription=transcription))

    async def reopen(reason: MigrationReason, old: Leg) -> Leg:
        now = router.runtime  # a reload since the session began: its targets now
        current = now.routes.get(route_name)
        if current is None or not now.realtime.serves(current.config):
            raise NoTargetAvailable(f"the route '{route_name}' is gone")
        try:
            planned = router.plan_session(now, current, transcription=transcription)
            return await open_on(reorder(planned, old.target.name, reason))
        except NoTargetAvailable:
            if reason in PROACTIVE:
                raise  # the old upstream still works: stay on it
            # Every breaker says no (many sessions failed at once): a live conversation
            # is worth trying them anyway, the failed target last.
            everyone = [now.realtime.targets[n] for n in current.config.targets]
            ranked = reorder(everyone, old.target.name, reason)
            return await open_on(ranked, force=True)

    return Session(
        route=route_name,
        client=socket,
        leg=leg,
        reopen=reopen,
        events=events,
        limits=session_limits(route.config, client.sessions if client else None),
        clock=router.clock,
        client_name=client.name if client else None,
        initial=initial,
        transcription=transcription,
    )


async def _open_asked(
    router: Router, scope: Scope, socket: AsgiClientSocket, authorization: str | None
) -> tuple[Session, Client | None]:
    """A new session on the route the URL (or the ephemeral key) names."""
    auth = router.runtime.auth
    ephemeral = auth.ephemeral_client(authorization)
    transcription = transcribing(scope)
    if ephemeral is None:
        client = auth.client(authorization)
        name, initial = route_name(scope, router, client, transcription), None
    else:
        grant, client = ephemeral
        made_for = grant.session.get("type") == "transcription"
        if transcription and not made_for:
            raise BadRequest("this ephemeral key was made for a realtime session")
        transcription = made_for
        name, initial = ephemeral_route(scope, grant.route), grant.session
    session = await open_session(
        router, name, socket, client, initial=initial, transcription=transcription
    )
    return session, client


async def serve(router: Router, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket connection, from its upgrade to its close."""
    if (await receive())["type"] != "websocket.connect":
        return
    socket = AsgiClientSocket(receive, send)
    try:
        if scope["path"] != REALTIME_PATH:
            raise NotFound(f"no WebSocket endpoint {scope['path']}")
        authorization, offered = credentials(scope)
        call_id = _query(scope, "call_id")
        if call_id is None:
            session, client = await _open_asked(router, scope, socket, authorization)
        else:
            if router.runtime.auth.ephemeral_client(authorization) is not None:
                raise BadRequest(
                    "a call's session is joined with a client key, not an ephemeral key"
                )
            client = router.runtime.auth.client(authorization)
            model = _query(scope, "model")
            session = await open_sideband(router, call_id, socket, client, model)
    except FirstTokenError as err:
        router.metrics.rejected(err.status)
        log.log(
            logging.WARNING if err.status >= 500 else logging.INFO, "%s %s", err.status, err.message
        )
        await refuse(send, err)
        return
    try:
        await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL if offered else None})
    except (OSError, RuntimeError):
        socket.gone = True  # the client left while the upstream session opened
    quota = client.sessions if client is not None else None
    started = quota.start() if quota is not None else 0.0
    router.active_sessions += 1
    try:
        await session.run()
    finally:
        router.active_sessions -= 1
        if quota is not None:
            quota.end(started)
