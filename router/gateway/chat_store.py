"""Stored chat completions (`store: true`), each at the target that stored it:

    GET    /v1/chat/completions                  list them (`model`: the route)
    GET    /v1/chat/completions/{id}             one
    POST   /v1/chat/completions/{id}             update its `metadata`
    DELETE /v1/chat/completions/{id}             delete it (the router forgets its owner)
    GET    /v1/chat/completions/{id}/messages    the messages it was made from

A chat turn whose body says `store: true` is stored by the target that answers it
(OpenAI and Azure store it; a vLLM server ignores the flag), so the router remembers,
at the turn's commit point, which target made the id it answered with
(router/runtime.py), as it does for a response's. The calls on that id go there
(router/gateway/stateful.py: a 404 for an id no replica remembers, unless one target
serves chat to the key; a 503 if the owner is down; a 409 if a reload removed it).

A list reads one target's store: on the route named by `model` in the query
(`client.chat.completions.list(model=ROUTE)`), else the only route serving chat to
the key; its targets in the policy's order, the first that answers (a vLLM target's
404 or 405 passes the call on), with `model` rewritten to that target's own model
name, which is what its stored completions name.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode

from router.gateway import stateful
from router.gateway.asgi import Send
from router.runtime import Router
from router.turn.types import TargetRuntime
from router.upstream.base import UpstreamRequest

PATH = "/v1/chat/completions"
PREFIX = PATH + "/"
#: the calls on one stored completion: path suffix -> methods
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "": ("GET", "HEAD", "POST", "DELETE", "OPTIONS"),
    "/messages": ("GET", "HEAD", "OPTIONS"),
}
#: what the listing takes besides the turn's POST
LIST_METHODS = ("GET", "HEAD")


def split(path: str) -> tuple[str, str] | None:
    """(completion id, action suffix) of a call on one stored completion, or None."""
    if not path.startswith(PREFIX):
        return None
    completion_id, slash, action = path[len(PREFIX) :].partition("/")
    suffix = slash + action
    if not stateful.ID.match(completion_id) or suffix not in ACTIONS:
        return None
    return completion_id, suffix


def methods(path: str) -> tuple[str, ...] | None:
    parts = split(path)
    return ACTIONS[parts[1]] if parts is not None else None


async def stored(router: Router, call: stateful.Call, send: Send) -> None:
    """Relay one call on a stored chat completion to the target that stored it."""
    parts = split(call.path)
    assert parts is not None, "dispatched on `methods`"
    completion_id, action = parts
    await stateful.call_owner(
        router,
        call,
        send,
        ("chat_completion", completion_id),
        endpoint="chat",
        path=f"/chat/completions/{completion_id}{action}",
        relayed="chat_completion",
    )
    if call.verb == "DELETE":
        router.owners.forget("chat_completion", completion_id)


async def listing(router: Router, call: stateful.Call, send: Send) -> None:
    """`GET /v1/chat/completions`: the stored completions of the route's first target
    that answers (`model` in the query names the route; each target gets its own)."""
    params = parse_qsl(call.query, keep_blank_values=True)
    named = [value for key, value in params if key == "model"]
    route_name = named[-1] if named else None
    if route_name is None:
        how = "with 'model' in the query (client.chat.completions.list(model=ROUTE))"
        route_name = stateful.default_route(router, call.client, f"GET {PATH}", "chat", how)
    router.precheck(route_name, call.client)
    route = router.runtime.routes[route_name]
    if not route.serving.get("chat"):
        raise stateful.not_served(route, "chat")
    rest = [(key, value) for key, value in params if key != "model"]

    def request_for(target: TargetRuntime) -> UpstreamRequest:
        query = rest + ([("model", target.config.model or route_name)] if named else [])
        return UpstreamRequest(
            "chat",
            {},
            stream=False,
            headers=call.headers,
            method="GET",
            path="/chat/completions",
            query=urlencode(query),
        )

    targets = stateful.ranked(router, route, "chat")
    answer = await stateful.fresh(router, targets, request_for, "chat_completion_list")
    body = b"" if call.method == "HEAD" else answer.body
    await stateful.respond(send, answer.status, body, answer.content_type)
