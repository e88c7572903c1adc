"""WebRTC calls (`client.realtime.calls`): the SDP exchange routed, the media direct.

    POST /v1/realtime/calls                                 an SDP offer -> the answer
    POST /v1/realtime/calls/{call_id}/accept|reject|refer|hangup    to the call's target

A browser opens a WebRTC call to a Realtime API by posting its SDP offer; the media
then flows between the browser and the provider, not through the router. So the
router does what can be done before the call exists: it ranks the route's targets by
its policy (on the realtime signals a WebSocket session is ranked on), passes the
offer on with the target's own model and key, and moves to the next target when one
cannot be reached, answers 5xx or 429, or is too slow (a failover the caller does not
see); a 4xx of the offer's own comes back as the target wrote it. The answer is
OpenAI's: 201, the SDP answer (`application/sdp`), `Location:
/v1/realtime/calls/{call_id}`. The router remembers which target holds each call (as
it does a stored response's, Redis included), so the call's actions go there. An action on a
call it never saw (an incoming SIP call the provider announced to the app by webhook)
is asked of the route's targets in turn until one knows the call, which is then
remembered; so is the call's sideband (`GET /v1/realtime?call_id=`, `?model=` naming
the route if the key has several), where the router's own server joins it first.

The offer comes as a multipart form with the fields `sdp` and `session` (JSON): what
the SDK's `client.realtime.calls.create(sdp=..., session=...)` sends and OpenAI's
WebRTC guide posts from a server; as the bare SDP (`application/sdp`) with an
ephemeral key (`ek_...`, from `/v1/realtime/client_secrets`), whose route and session
configuration the key holds, as the guide posts from a browser; or as a JSON body
`{"sdp", "session"}`. The target is sent the SDK's form, whatever came.
The route is `session.model`, else `?model=`, else the key's only realtime route.

What the router cannot do for a call: move it (the media is bound to the provider
that answered), time its audio, or count it against a key's `max_sessions` or
`session_minutes` (it never sees the call end): a key with either limit is refused
WebRTC calls (403), so the limit holds. Cascades answer over the WebSocket only: a
route without a `kind: realtime` target is a 400.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from router.errors import (
    BadRequest,
    Forbidden,
    NoTargetAvailable,
    NotFound,
    StateConflict,
    UpstreamError,
    UpstreamStatusError,
)
from router.gateway import client_secrets
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.gateway.forms import multipart_parts
from router.gateway.request import decode
from router.gateway.stateful import ID, on_owner, respond, upstream_error
from router.realtime.target import RealtimeTarget
from router.responses.owners import Owner
from router.responses.pinning import Pin, lookup_pin
from router.runtime import Router
from router.upstream.realtime import CallAnswer, RealtimeUpstream
from router.vocabulary import RelayedCallOutcome

log = logging.getLogger("firsttoken.realtime")

PATH = "/v1/realtime/calls"
PREFIX = PATH + "/"
ACTIONS = frozenset({"accept", "reject", "refer", "hangup"})
#: an SDP offer is a few KiB; a form or JSON around it, a few more
MAX_OFFER_BYTES = 256 * 1024
_CALL_ID = re.compile(r"/realtime/calls/([A-Za-z0-9_-]{1,256})/?$")


def action_of(path: str) -> tuple[str, str] | None:
    """(call id, action) of a call's action path, or None."""
    if not path.startswith(PREFIX):
        return None
    call_id, slash, action = path[len(PREFIX) :].partition("/")
    if not slash or action not in ACTIONS or not ID.match(call_id):
        return None
    return call_id, action


def _offer(raw: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """The SDP offer and the session configuration sent with it (may be empty)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    sdp: object
    session: object = {}
    if kind == "application/sdp":
        sdp = raw.decode("utf-8", "replace")
    elif kind == "application/json":
        body = decode(raw or b"{}")
        sdp, session = body.get("sdp"), body.get("session", {})
    elif kind == "multipart/form-data":
        parts = multipart_parts(raw, content_type, "a call's offer as a form")
        sdp = parts["sdp"].text if "sdp" in parts else None
        text = parts["session"].payload if "session" in parts else b""
        try:  # the request decoder's limits: a nesting too deep is a 400, not a crash
            session = decode(text) if text.strip() else {}
        except BadRequest as exc:
            raise BadRequest(f"the form's 'session' field: {exc.message}") from exc
    else:
        raise BadRequest(
            "a call's offer is a multipart form with 'sdp' and 'session', the bare SDP "
            "(application/sdp), or JSON {sdp, session}"
        )
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadRequest("'sdp' is required: the caller's SDP offer")
    if not isinstance(session, dict):
        raise BadRequest("'session' must be an object")
    return sdp, session


def _targets(
    router: Router, route_name: str, *, everywhere: bool = False
) -> list[tuple[RealtimeTarget, RealtimeUpstream]]:
    """The route's `kind: realtime` targets in its policy's order: the ones a new call
    may go to, or, `everywhere` (looking for a call that exists), those first and then
    the rest (a breaker open, sessions full: the call may still be there)."""
    runtime = router.runtime
    route = runtime.routes[route_name]
    try:
        ranked = router.plan_session(runtime, route, book=not everywhere)
    except NoTargetAvailable:
        if not everywhere:
            raise
        ranked = []
    if everywhere:
        planned = {t.name for t in ranked}
        targets = runtime.realtime.targets
        ranked += [targets[n] for n in route.config.targets if n not in planned]
    callable_ = [(t, t.connector) for t in ranked if isinstance(t.connector, RealtimeUpstream)]
    if not callable_ and not any(
        isinstance(runtime.realtime.targets[n].connector, RealtimeUpstream)
        for n in route.config.targets
    ):
        raise BadRequest(
            f"the route '{route_name}' has no kind: realtime target to take a WebRTC call "
            "(a cascade answers over the WebSocket: GET /v1/realtime)"
        )
    return callable_


def _caller(
    router: Router, session: dict[str, Any], authorization: str | None, query: str
) -> tuple[Client | None, str, dict[str, Any]]:
    """Who calls, on which route, with which session configuration (an ephemeral key's
    route and configuration, under what the offer itself says)."""
    auth = router.runtime.auth
    ephemeral = auth.ephemeral_client(authorization)
    client: Client | None
    if ephemeral is not None:
        grant, client = ephemeral
        route_name, session = grant.route, {**grant.session, **session}
    else:
        client = auth.client(authorization)
        named = [v for k, v in parse_qsl(query) if k == "model"]
        if "model" not in session and named:
            session = {**session, "model": named[-1]}
        route_name = client_secrets.realtime_route(router, session, client)
    if session.get("type", "realtime") != "realtime":
        raise BadRequest("a WebRTC call is a 'realtime' session ('session.type')")
    auth.admit(client, route_name, 0)
    if client is not None and client.sessions is not None:
        raise Forbidden(
            f"the key '{client.name}' has session limits, which the router cannot keep on "
            "a WebRTC call (its media does not pass through the router): use the WebSocket"
        )
    return client, route_name, session


async def create(
    router: Router,
    raw: bytes,
    *,
    content_type: str,
    authorization: str | None,
    query: str,
    send: Send,
) -> None:
    """`POST /v1/realtime/calls`: the offer to the route's first target that answers."""
    sdp, session = _offer(raw, content_type)
    _, route_name, session = _caller(router, session, authorization, query)
    failures: list[str] = []
    for target, upstream in _targets(router, route_name):
        if not target.signals.breaker.available:
            failures.append(f"{target.name}: its circuit breaker is open")
            continue
        sent = {**session, "type": "realtime", "model": upstream.model}
        answered = await _offer_to(router, route_name, target, upstream, (sdp, sent), send=send)
        if answered is None:
            return
        failures.append(answered)
    raise NoTargetAvailable("no realtime target took the call: " + "; ".join(failures))


async def _offer_to(
    router: Router,
    route_name: str,
    target: RealtimeTarget,
    upstream: RealtimeUpstream,
    offer: tuple[str, Mapping[str, Any]],
    *,
    send: Send,
) -> str | None:
    """Offer the call to one target: None once the client has its answer (the SDP, or
    the target's 4xx about the offer), else why the next target should be asked."""
    signals = target.signals
    outcome: RelayedCallOutcome = "failed"
    try:
        answer = await upstream.offer(*offer)
        signals.relayed(None)
        outcome = "ok"
    except UpstreamStatusError as err:
        signals.relayed(err)
        if err.retryable:  # 5xx, 429, our key refused, a model it lacks: the next target
            return err.message
        outcome = "client_error"
        await upstream_error(send, err)
        return None
    except UpstreamError as err:
        signals.relayed(err)
        return err.message
    finally:
        router.metrics.relayed_call(target.name, "realtime_call", outcome)
    call_id = _call_id(answer)
    extra = [(b"x-firsttoken-target", target.name.encode())]
    if call_id is not None:
        router.owners.remember("realtime_call", call_id, Owner(target.name, route_name))
        extra.append((b"location", f"{PATH}/{call_id}".encode()))
    log.info("WebRTC call %s on %s (route %s)", call_id, target.name, route_name)
    ctype = answer.content_type or "application/sdp"
    await respond(send, answer.status, answer.body, ctype, extra)
    return None


def _call_id(answer: CallAnswer) -> str | None:
    """The call's id, from the answer's Location (an absolute URL or a path)."""
    found = _CALL_ID.search(answer.headers.get("location", ""))
    return found.group(1) if found else None


async def act(
    router: Router, path: str, raw: bytes, *, authorization: str | None, send: Send
) -> None:
    """`POST /v1/realtime/calls/{id}/{action}`: to the target that holds the call."""
    parts = action_of(path)
    assert parts is not None, "dispatched on `action_of`"
    call_id, action = parts
    client = router.runtime.auth.client(authorization)
    body: dict[str, Any] = decode(raw or b"{}")
    known = await lookup_pin(router.owners, "realtime_call", call_id)
    if known is None:
        await _act_where_found(router, client, call_id, action, body, send=send)
        return
    owner = known.owner
    target, upstream = _holder(router, owner, call_id, client)
    if "model" in body:  # accepting a call names its model: the target's own
        body = {**body, "model": upstream.model}

    async def attempt() -> None:
        answer = await upstream.call(body, f"/{call_id}/{action}")
        await respond(send, answer.status, answer.body, answer.content_type or "application/json")

    pin = Pin("realtime_call", call_id, owner)
    done = await on_owner(
        router, pin, target.signals, "realtime_call", attempt, send=send, total_s=None
    )
    if action == "hangup" and done:
        router.owners.forget("realtime_call", call_id)


#: where a call's session may be: (the owner to remember, its target, the connector)
Holder = tuple[Owner, RealtimeTarget, RealtimeUpstream]


async def call_holders(
    router: Router, call_id: str, client: Client | None, model: str | None
) -> tuple[bool, list[Holder]]:
    """Where a call's sideband is, for this client: the target holding it (True: known;
    404 not its route, 409 target removed), or, for a call the router never saw (an
    incoming SIP call, one placed before a restart without Redis), every `kind:
    realtime` target of the route `model` names (else the key's only realtime route),
    in its policy's order (False: to be searched, as an action on such a call is)."""
    pin = await lookup_pin(router.owners, "realtime_call", call_id)
    if pin is not None:
        return True, [(pin.owner, *_holder(router, pin.owner, call_id, client))]
    try:
        route_name = client_secrets.realtime_route(
            router, {"model": model} if model else {}, client
        )
    except BadRequest as err:
        raise NotFound(
            f"no call '{call_id}' is known to this router; to look for it at a route's"
            " targets, name the route with ?model="
        ) from err
    holders = _targets(router, route_name, everywhere=True)
    return False, [(Owner(t.name, route_name), t, u) for t, u in holders]


def _holder(
    router: Router, owner: Owner, call_id: str, client: Client | None
) -> tuple[RealtimeTarget, RealtimeUpstream]:
    """The target `owner` names, for this client (404 not its route, 409 removed)."""
    runtime = router.runtime
    if not runtime.auth.may_use(client, owner.route):
        raise NotFound(f"no call '{call_id}' is known to this router")
    target = runtime.realtime.targets.get(owner.target)
    if (
        target is None
        or not isinstance(target.connector, RealtimeUpstream)
        or owner.route not in runtime.routes
    ):
        raise StateConflict(
            f"the call '{call_id}' is on target '{owner.target}' (route '{owner.route}'), "
            "which is no longer configured"
        )
    return target, target.connector


async def _act_where_found(
    router: Router,
    client: Client | None,
    call_id: str,
    action: str,
    body: dict[str, Any],
    *,
    send: Send,
) -> None:
    """An action on a call the router did not place: an incoming SIP call the provider
    announced to the app by webhook (or one placed before a restart without Redis). The
    route's realtime targets (the route `model` names in the body, else the key's only
    realtime route) in its policy's order; the first that knows the call answers (a 404
    passes it on), and the call is remembered there, so its sideband finds it."""
    named = body.get("model")
    session = {"model": named} if isinstance(named, str) else {}
    route_name = client_secrets.realtime_route(router, session, client)
    failures: list[str] = []
    for target, upstream in _targets(router, route_name, everywhere=True):
        if not target.signals.breaker.available:
            failures.append(f"{target.name}: its circuit breaker is open")
            continue
        payload = {**body, "model": upstream.model} if "model" in body else body
        outcome: RelayedCallOutcome = "failed"
        try:
            answer = await upstream.call(payload, f"/{call_id}/{action}")
            target.signals.relayed(None)
            outcome = "ok"
        except UpstreamStatusError as err:
            target.signals.relayed(err)
            if err.upstream_status == 404:
                outcome = "not_here"
                continue
            if not err.retryable:
                outcome = "client_error"
                await upstream_error(send, err)
                return
            failures.append(err.message)
            continue
        except UpstreamError as err:
            target.signals.relayed(err)
            failures.append(err.message)
            continue
        finally:
            router.metrics.relayed_call(target.name, "realtime_call", outcome)
        if action != "hangup":
            router.owners.remember("realtime_call", call_id, Owner(target.name, route_name))
        await respond(send, answer.status, answer.body, answer.content_type or "application/json")
        return
    if failures:
        raise NoTargetAvailable("no realtime target could answer: " + "; ".join(failures))
    raise NotFound(f"no target of the route '{route_name}' knows the call '{call_id}'")
