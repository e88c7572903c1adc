"""The Conversations API, sent to the target that holds each conversation:

    POST   /v1/conversations                          create one (on a route's target)
    GET    /v1/conversations/{id}                     read it
    POST   /v1/conversations/{id}                     update its metadata
    DELETE /v1/conversations/{id}                     delete it (the owner is forgotten)
    GET    /v1/conversations/{id}/items               list its items
    POST   /v1/conversations/{id}/items               add items
    GET    /v1/conversations/{id}/items/{item_id}     one item
    DELETE /v1/conversations/{id}/items/{item_id}     delete one

A conversation lives on one target, so `client.responses.create(conversation=...)`
can only be answered there (router/responses/pinning.py). Creating one names no model:
it is made on the route the body names in `model` (the SDK's
`extra_body={"model": ROUTE}`; the field is not sent upstream), else on the only route
that serves `/v1/responses` to the client's key; within the route, on its targets in
its policy's order, the first that answers (router/gateway/stateful.py). The router
remembers the target of the id it answers with, as it does for a response's, and
sends every later call on the conversation, and every Responses turn in it, there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from router.errors import BadRequest
from router.gateway import stateful
from router.gateway.asgi import Send
from router.responses.owners import Owner
from router.runtime import Router
from router.turn.types import TargetRuntime
from router.upstream.base import UpstreamRequest

PATH = "/v1/conversations"
PREFIX = PATH + "/"
_CREATE = ("POST", "OPTIONS")
#: the calls on one conversation: path suffix (item ids as "{item}") -> methods
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "": ("GET", "HEAD", "POST", "DELETE", "OPTIONS"),
    "/items": ("GET", "HEAD", "POST", "OPTIONS"),
    "/items/{item}": ("GET", "HEAD", "DELETE", "OPTIONS"),
}


def split(path: str) -> tuple[str, str, str] | None:
    """(conversation id, action, the suffix as sent) of a call on one conversation."""
    if not path.startswith(PREFIX):
        return None
    conversation_id, slash, rest = path[len(PREFIX) :].partition("/")
    if not stateful.ID.match(conversation_id):
        return None
    if not slash:
        return conversation_id, "", ""
    items, slash, item = rest.partition("/")
    if items != "items":
        return None
    if not slash:
        return conversation_id, "/items", "/items"
    if not stateful.ID.match(item):
        return None
    return conversation_id, "/items/{item}", f"/items/{item}"


def methods(path: str) -> tuple[str, ...] | None:
    if path == PATH:
        return _CREATE
    parts = split(path)
    return ACTIONS[parts[1]] if parts is not None else None


async def create(router: Router, call: stateful.Call, send: Send) -> None:
    """Make a conversation on a route's target; remember which."""
    body, client = stateful.json_object(call.raw, PATH), call.client
    model = body.pop("model", None)
    if model is None:
        model = stateful.default_route(router, client, f"POST {PATH}")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' names the route to keep the conversation on: a string")
    router.precheck(model, client)
    route = router.runtime.routes[model]
    if not route.serving.get("responses"):
        raise stateful.not_served(route)

    def request_for(target: TargetRuntime) -> UpstreamRequest:
        return UpstreamRequest(
            "responses",
            body,
            stream=False,
            headers=call.headers,
            path="/conversations",
            has_body=True,
        )

    ranked = stateful.ranked(router, route)
    answer = await stateful.fresh(router, ranked, request_for, "conversation_create")
    conversation_id = _id_of(answer.body)
    if conversation_id is not None:
        router.owners.remember("conversation", conversation_id, Owner(answer.target, model))
    await stateful.respond(send, answer.status, answer.body, answer.content_type)


async def owned(router: Router, call: stateful.Call, send: Send) -> None:
    """Relay one call on a conversation to the target holding it."""
    parts = split(call.path)
    assert parts is not None, "dispatched on `methods`"
    conversation_id, _, suffix = parts
    await stateful.call_owner(
        router,
        call,
        send,
        ("conversation", conversation_id),
        endpoint="responses",
        path=f"/conversations/{conversation_id}{suffix}",
        relayed="conversation",
    )
    if call.verb == "DELETE" and not suffix:
        router.owners.forget("conversation", conversation_id)


def _id_of(body: bytes) -> str | None:
    """The id of the conversation a target made (None if its answer has none)."""
    try:
        made = json.loads(body)
    except (ValueError, RecursionError):
        return None
    found = made.get("id") if isinstance(made, dict) else None
    return found if isinstance(found, str) and stateful.ID.match(found) else None
