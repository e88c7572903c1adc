"""Calls on state stored upstream (a response, a conversation, a stored chat
completion), and the unary calls that make or read such state without a turn.

Two kinds of call:

- **owned**: the id names state one target holds (router/responses/owners.py): the
  call goes to that target only. A key may reach it only through a route it may use:
  the route the state was made on. An id no replica remembers goes to the only target
  that serves its endpoint (`/v1/responses`, or `/v1/chat/completions` for a stored
  chat completion) to this client, if there is exactly one (a router
  restarted without Redis still reaches a single backend); otherwise it is a 404 that
  says so. The owner down is a 503 `response_state_unavailable` (never another target,
  which lacks the state).
- **fresh**: nothing is stored yet (`POST /v1/conversations`, a token count, a
  compaction), or the call reads a list (stored chat completions): the route's
  targets that serve the endpoint, in its policy's order;
  a target that cannot be reached, answers 5xx or 429, or says it cannot serve the
  call (404, 405, or a 4xx naming the endpoint or model: a litellm target has no
  Conversations API) passes it to the next, since nothing was made there.

The target's answer is relayed as it comes (its status, its JSON body, or its event
stream); its errors keep their status with only their OpenAI error fields, redacted.
`on_owner` is the owned call's verdicts for any transport (a WebRTC call's actions use
it too). Kept whole past 400 lines: both kinds of call share their verdicts, answers and
the owner lookup, and a split would pass them back and forth.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from router import capabilities
from router.capabilities import Capability
from router.errors import (
    BadRequest,
    FirstTokenError,
    NoTargetAvailable,
    NotFound,
    StateConflict,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    upstream_error_fields,
)
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.gateway.request import decode
from router.policy.base import RoutingRequest
from router.responses.owners import IdKind, Owner
from router.responses.pinning import Pin, lookup_pin
from router.runtime import Router
from router.signals.target import TargetSignals
from router.turn.types import TargetRuntime
from router.upstream.base import Endpoint, Method, UpstreamRequest, UpstreamResponse
from router.upstream.rejections import rejection_reason
from router.vocabulary import RelayedCall, RelayedCallOutcome
from router.wiring import RouteRuntime

log = logging.getLogger("firsttoken.responses")

#: an id in a path: what OpenAI's ids are made of, bounded
ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: a client's query string is passed on if it is this short and plain
_QUERY = re.compile(r"^[A-Za-z0-9_.~%=&+\-\[\]]{0,1024}$")
_WHAT: dict[IdKind, str] = {
    "response": "response",
    "conversation": "conversation",
    "chat_completion": "chat completion",
}
#: the endpoint a call is planned as, by the capability it needs (else a unary one)
_PLANNED_AS: dict[Capability, Endpoint] = {"responses": "responses", "chat": "chat"}
#: the endpoint whose targets may hold each kind of id
_SERVED_BY: dict[IdKind, Capability] = {
    "response": "responses",
    "conversation": "responses",
    "chat_completion": "chat",
}
#: a fresh call's answers that say "not here" (no such endpoint): the next target may
_NOT_HERE = (404, 405)


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP call on stored state (or one that makes some), as the gateway read it."""

    path: str
    method: str
    #: the client's query string, if short and plain (else none)
    query: str
    #: the body as it came (empty for a GET or DELETE)
    raw: bytes
    client: Client | None
    #: what is passed on: the client's request id
    headers: Mapping[str, str]

    @property
    def verb(self) -> Method:
        return "DELETE" if self.method == "DELETE" else ("POST" if self.method == "POST" else "GET")


def plain_query(query: str) -> str:
    """The client's query string if it is short and plain, else none."""
    return query if _QUERY.match(query) else ""


def _only_target(router: Router, client: Client | None, capability: Capability) -> Owner | None:
    """The one target serving `capability` to this client, if there is exactly one."""
    runtime = router.runtime
    found: dict[str, str] = {}
    for name, route in runtime.routes.items():
        if runtime.auth.may_use(client, name):
            for target in route.serving.get(capability, ()):
                found.setdefault(target, name)
    if len(found) != 1:
        return None
    ((target, route_name),) = found.items()
    return Owner(target, route_name)


async def owner_of(router: Router, kind: IdKind, value: str, client: Client | None) -> Pin:
    """The target holding an id, for this client (404 unknown, 409 target removed)."""
    pin = await lookup_pin(router.owners, kind, value)  # a 503 if Redis cannot say
    owner = pin.owner if pin is not None else _only_target(router, client, _SERVED_BY[kind])
    if owner is None or not router.runtime.auth.may_use(client, owner.route):
        ttl_days = router.runtime.config.responses.owner_ttl_s / 86400
        raise NotFound(
            f"no {_WHAT[kind]} '{value}' is known to this router (it remembers the "
            f"target of each {_WHAT[kind]} it relayed for {ttl_days:g} days)"
        )
    if owner.target not in router.runtime.targets:
        raise StateConflict(
            f"the {_WHAT[kind]} '{value}' is stored on target '{owner.target}', "
            "which is no longer configured"
        )
    return Pin(kind, value, owner)


async def owned(
    router: Router,
    pin: Pin,
    request: UpstreamRequest,
    send: Send,
    call: RelayedCall,
    *,
    head_only: bool = False,
) -> None:
    """Relay one call to the target holding `pin`'s state (a 503 at once while its
    breaker is open; the call's verdict feeds the breaker, as a turn's does)."""
    target = router.runtime.targets[pin.owner.target]

    async def attempt() -> None:
        answer = await target.upstream.send(request)
        try:
            await relay(answer, send, head_only=head_only)
        finally:
            await answer.aclose()

    total_s = target.config.timeouts.total_s
    await on_owner(router, pin, target.signals, call, attempt, send=send, total_s=total_s)


async def on_owner(
    router: Router,
    pin: Pin,
    signals: TargetSignals,
    call: RelayedCall,
    attempt: Callable[[], Awaitable[None]],
    *,
    send: Send,
    total_s: float | None,
) -> bool:
    """Run `attempt` (one call to the target holding `pin`'s state, its answer relayed)
    under that target's verdicts: a 503 at once while its breaker is open; a 5xx, a
    429, no connection or no answer within `total_s` a 503 (no other target holds the
    state); its other 4xx relayed as its own. Returns whether it answered 2xx."""
    name = pin.owner.target
    if not signals.breaker.available:
        remaining = signals.breaker.open_remaining_s()
        raise pin.unavailable(f"its circuit breaker is open for {remaining:.0f}s more")
    outcome: RelayedCallOutcome = "failed"
    try:
        with anyio.fail_after(total_s):
            await attempt()
        signals.relayed(None)
        outcome = "ok"
    except UpstreamStatusError as err:
        signals.relayed(err)
        if err.upstream_status >= 500 or err.upstream_status == 429:
            raise pin.unavailable(err.message) from err
        outcome = "client_error"
        await upstream_error(send, err)
    except UpstreamError as err:
        signals.relayed(err)
        raise pin.unavailable(err.message) from err
    except TimeoutError as exc:
        late = f"no answer within {total_s:g}s"
        signals.relayed(UpstreamTimeout(f"{name}: {late}", target=name, phase="total"))
        raise pin.unavailable(late) from exc
    finally:
        router.metrics.relayed_call(name, call, outcome)
    return outcome == "ok"


async def call_owner(
    router: Router,
    call: Call,
    send: Send,
    pin_of: tuple[IdKind, str],
    *,
    endpoint: Endpoint,
    path: str,
    relayed: RelayedCall,
    with_body: bool = True,
) -> None:
    """Relay `call` on an id's state to the target holding it, at `path` there; a
    POST's JSON body goes along (`with_body`)."""
    kind, value = pin_of
    pin = await owner_of(router, kind, value, call.client)
    sends = with_body and call.verb == "POST"
    request = UpstreamRequest(
        endpoint,
        json_object(call.raw, call.path) if sends else {},
        stream=False,
        headers=call.headers,
        method=call.verb,
        path=path,
        query=call.query,
        has_body=sends,
    )
    await owned(router, pin, request, send, relayed, head_only=call.method == "HEAD")


def default_route(
    router: Router,
    client: Client | None,
    what: str,
    capability: Capability = "responses",
    how: str = "with 'model' in the body (with the openai SDK: extra_body={'model': ROUTE})",
) -> str:
    """The route of a call that names none: the only one serving `capability` to
    this client (400 if there are several or none)."""
    runtime = router.runtime
    names = [n for n in router.models(client) if runtime.routes[n].serving.get(capability)]
    if len(names) == 1:
        return names[0]
    listed = ", ".join(names) or "none for this key"
    raise BadRequest(
        f"{what} names no route, and {len(names)} routes serve "
        f"{capabilities.PATHS[capability]} here ({listed}): name one {how}"
    )


def with_model(
    endpoint: Endpoint, body: Mapping[str, object], route: str, call: Call, path: str
) -> Callable[[TargetRuntime], UpstreamRequest]:
    """The request for each target: `body` as the client sent it, but with the target's
    own model name in `model` (the route's name if it configures none)."""

    def request_for(target: TargetRuntime) -> UpstreamRequest:
        sent = {**body, "model": target.config.model or route}
        return UpstreamRequest(
            endpoint, sent, stream=False, headers=call.headers, path=path, has_body=True
        )

    return request_for


def not_served(route: RouteRuntime, capability: Capability = "responses") -> BadRequest:
    return capabilities.not_served(route.config.name, capability, route.capabilities)


def ranked(
    router: Router, route: RouteRuntime, capability: Capability = "responses"
) -> list[TargetRuntime]:
    """The route's targets serving `capability`, in its policy's order (503 if none is
    eligible), planned as a unary request. Nothing is booked: no turn runs."""
    runtime = router.runtime
    names = route.serving.get(capability, ())
    endpoint = _PLANNED_AS.get(capability, "embeddings")  # unary
    request = RoutingRequest(
        route=route.config.name, prompt_tokens=0, stream=False, endpoint=endpoint
    )
    plan, _ = router.plan(runtime, route, request, names)
    return [runtime.targets[name] for name in plan.order]


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole JSON answer from one target."""

    target: str
    status: int
    body: bytes
    content_type: str


async def fresh(
    router: Router,
    targets: Sequence[TargetRuntime],
    request_for: Callable[[TargetRuntime], UpstreamRequest],
    call: RelayedCall,
) -> Answer:
    """The first whole answer from a target that did not fail itself: a 2xx, or a 4xx
    of the client's own (its OpenAI error fields only, redacted). A 404, a 405 or a
    4xx that says the target cannot serve this (router/upstream/rejections.py: no such
    endpoint, an unknown model, ...) passes the call on; if every target said so, the
    last one's answer; otherwise, with no answer, a 503."""
    failures: list[str] = []
    missing: UpstreamStatusError | None = None
    not_here = 0
    for target in targets:
        name, timeouts, signals = target.config.name, target.config.timeouts, target.signals
        if not signals.breaker.available:  # opened since the plan: passed over
            failures.append(f"{name}: its circuit breaker is open")
            continue
        outcome: RelayedCallOutcome = "failed"
        try:
            with anyio.fail_after(timeouts.total_s):
                answer = await target.upstream.send(request_for(target))
                signals.relayed(None)
                try:
                    body = await answer.aread()
                finally:
                    await answer.aclose()
            outcome = "ok"
            ctype = answer.headers.get("content-type", "application/json")
            return Answer(name, answer.status, body, ctype)
        except UpstreamStatusError as err:
            signals.relayed(err)
            status = err.upstream_status
            here = status not in _NOT_HERE and rejection_reason(status, err.body) is None
            if status < 500 and status != 429 and here:
                outcome = "client_error"
                return _client_error(err)
            if not here:
                outcome, missing, not_here = "not_here", err, not_here + 1
            failures.append(err.message)
        except UpstreamError as err:
            signals.relayed(err)
            failures.append(err.message)
        except TimeoutError:
            late = f"{name}: no answer within {timeouts.total_s:g}s"
            signals.relayed(UpstreamTimeout(late, target=name, phase="total"))
            failures.append(late)
        finally:
            router.metrics.relayed_call(name, call, outcome)
    if missing is not None and not_here == len(targets):
        return _client_error(missing)
    raise NoTargetAvailable("no target could answer: " + "; ".join(failures))


async def relay(response: UpstreamResponse, send: Send, *, head_only: bool) -> None:
    ctype = response.headers.get("content-type", "application/json")
    streaming = ctype.startswith("text/event-stream")
    head = [(b"content-type", ctype.encode("latin-1", "replace"))]
    if not streaming:
        body = b"" if head_only else await response.aread()
        head.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": body})
        return
    head.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": response.status, "headers": head})
    if not head_only:
        async for chunk in response.aiter_bytes():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    head = [
        (b"content-type", content_type.encode("latin-1", "replace")),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def upstream_error(send: Send, err: UpstreamStatusError) -> None:
    """The target's 4xx, with its OpenAI error fields only (redacted)."""
    answer = _client_error(err)
    await respond(send, answer.status, answer.body, answer.content_type)


def _client_error(err: UpstreamStatusError) -> Answer:
    fields = upstream_error_fields(err.body) or FirstTokenError(err.message).to_dict()["error"]
    body = json.dumps({"error": fields}).encode()
    log.info("%s answered %s", err.target, err.upstream_status)
    return Answer(err.target, err.upstream_status, body, "application/json")


def json_object(raw: bytes, what: str) -> dict[str, object]:
    """A request body that must be a JSON object (400 otherwise, as a turn's: not JSON,
    nested too deeply, or a NaN or an infinity, which no target could be sent)."""
    try:
        return decode(raw or b"{}")
    except BadRequest as exc:
        raise BadRequest(f"{what}: {exc.message}") from exc
