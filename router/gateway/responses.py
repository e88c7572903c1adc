"""A stored response's own endpoints, sent to the target that stored it:

    GET    /v1/responses/{id}                 the response (`?stream=true` replays its events)
    DELETE /v1/responses/{id}                 delete it (the router forgets its owner too)
    POST   /v1/responses/{id}/cancel          cancel a background response
    GET    /v1/responses/{id}/input_items     the items it was made from

The owner comes from router/responses/owners.py (memory, then Redis). A client key
may reach a response only through a route it may use: the route the response was
made on. An id no replica remembers goes to the only target that serves
`/v1/responses` to this client, if there is exactly one (a router restarted without
Redis still reaches a single backend); otherwise it is a 404 that says so. The
target's answer is relayed as it comes (its status, its JSON body, or its event
stream); its errors keep their status with only their OpenAI error fields, redacted.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

import anyio

from router.errors import (
    FirstTokenError,
    NotFound,
    StateConflict,
    UpstreamError,
    UpstreamStatusError,
    upstream_error_fields,
)
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.responses.owners import Owner
from router.responses.pinning import Pin, find_pin
from router.runtime import Router
from router.turn.types import TargetRuntime
from router.upstream.base import Method, UpstreamRequest, UpstreamResponse

log = logging.getLogger("firsttoken.responses")

PREFIX = "/v1/responses/"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
#: the calls on one stored response: path suffix -> methods
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "": ("GET", "HEAD", "DELETE", "OPTIONS"),
    "/cancel": ("POST", "OPTIONS"),
    "/input_items": ("GET", "HEAD", "OPTIONS"),
}
#: a client's query string is passed on if it is this short and plain
_QUERY = re.compile(r"^[A-Za-z0-9_.~%=&+\-\[\]]{0,1024}$")


def split(path: str) -> tuple[str, str] | None:
    """(response id, action suffix) of a stored response's path, or None."""
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    response_id, slash, action = rest.partition("/")
    suffix = slash + action
    if not _ID.match(response_id) or suffix not in ACTIONS:
        return None
    return response_id, suffix


def methods(path: str) -> tuple[str, ...] | None:
    parts = split(path)
    return ACTIONS[parts[1]] if parts is not None else None


def _only_target(router: Router, client: Client | None) -> Owner | None:
    """The one target serving /v1/responses to this client, if there is exactly one."""
    runtime = router.runtime
    found: dict[str, str] = {}
    for name, route in runtime.routes.items():
        if runtime.auth.may_use(client, name):
            for target in route.serving.get("responses", ()):
                found.setdefault(target, name)
    if len(found) != 1:
        return None
    ((target, route_name),) = found.items()
    return Owner(target, route_name)


async def _owner(router: Router, response_id: str, client: Client | None) -> TargetRuntime:
    pin = await find_pin(router.owners, response_id, None)  # 503 if Redis cannot say
    owner = pin.owner if pin is not None else _only_target(router, client)
    if owner is None or not router.runtime.auth.may_use(client, owner.route):
        ttl_days = router.runtime.config.responses.owner_ttl_s / 86400
        raise NotFound(
            f"no response '{response_id}' is known to this router (it remembers the "
            f"target of each response it relayed for {ttl_days:g} days)"
        )
    target = router.runtime.targets.get(owner.target)
    if target is None:
        raise StateConflict(
            f"the response '{response_id}' is stored on target '{owner.target}', "
            "which is no longer configured"
        )
    return target


async def stored(
    router: Router,
    *,
    path: str,
    method: str,
    query: str,
    send: Send,
    client: Client | None,
    forward_headers: Mapping[str, str],
) -> None:
    """Relay one call on a stored response to its owner."""
    parts = split(path)
    assert parts is not None, "dispatched on `methods`"
    response_id, action = parts
    target = await _owner(router, response_id, client)
    verb: Method = "DELETE" if method == "DELETE" else ("POST" if method == "POST" else "GET")
    request = UpstreamRequest(
        "responses",
        {},
        stream=False,
        headers=forward_headers,
        method=verb,
        path=f"/responses/{response_id}{action}",
        query=query if _QUERY.match(query) else "",
    )
    pin = Pin("response", response_id, Owner(target.config.name, ""))
    timeouts = target.config.timeouts
    try:
        with anyio.fail_after(timeouts.total_s):
            answer = await target.upstream.send(request)
            try:
                await _relay(answer, send, head_only=method == "HEAD")
            finally:
                await answer.aclose()
    except UpstreamStatusError as err:
        if err.upstream_status >= 500 or err.upstream_status == 429:
            raise pin.unavailable(err.message) from err
        await _upstream_error(send, err)
        return
    except UpstreamError as err:
        raise pin.unavailable(err.message) from err
    except TimeoutError as exc:
        raise pin.unavailable(f"no answer within {timeouts.total_s:g}s") from exc
    if verb == "DELETE":
        router.owners.forget("response", response_id)


async def _relay(response: UpstreamResponse, send: Send, *, head_only: bool) -> None:
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


async def _upstream_error(send: Send, err: UpstreamStatusError) -> None:
    """The target's 4xx, with its OpenAI error fields only (redacted)."""
    fields = upstream_error_fields(err.body) or FirstTokenError(err.message).to_dict()["error"]
    body = json.dumps({"error": fields}).encode()
    log.info("%s answered %s", err.target, err.upstream_status)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.upstream_status, "headers": head})
    await send({"type": "http.response.body", "body": body})
