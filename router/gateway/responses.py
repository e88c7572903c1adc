"""A stored response's own endpoints, sent to the target that stored it:

    GET    /v1/responses/{id}                 the response (`?stream=true` replays its events)
    DELETE /v1/responses/{id}                 delete it (the router forgets its owner too)
    POST   /v1/responses/{id}/cancel          cancel a background response
    GET    /v1/responses/{id}/input_items     the items it was made from

and the two unary calls of the family that name a route (`model`) and may build on
stored state:

    POST   /v1/responses/input_tokens         count a request's input tokens
    POST   /v1/responses/compact              compact a conversation's items

The owner comes from router/responses/owners.py (memory, then Redis); what an owned
call and a fresh one do is router/gateway/stateful.py's. A token count or a compaction
that names `previous_response_id` or `conversation` goes to the target holding it (409
if the route named cannot reach it); otherwise to the route's targets in its policy's
order, each given its own model name.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.errors import BadRequest
from router.gateway import stateful
from router.gateway.asgi import Send
from router.gateway.shapes import responses_fields
from router.responses.pinning import find_pin, pinned_targets
from router.runtime import Router
from router.vocabulary import RelayedCall

PREFIX = "/v1/responses/"
#: the calls on one stored response: path suffix -> methods
ACTIONS: Mapping[str, tuple[str, ...]] = {
    "": ("GET", "HEAD", "DELETE", "OPTIONS"),
    "/cancel": ("POST", "OPTIONS"),
    "/input_items": ("GET", "HEAD", "OPTIONS"),
}
#: the unary calls that name a route: path -> what the route must name in `model`
MODEL_CALLS: Mapping[str, RelayedCall] = {
    PREFIX + "input_tokens": "input_tokens",
    PREFIX + "compact": "compact",
}
_POST = ("POST", "OPTIONS")


def split(path: str) -> tuple[str, str] | None:
    """(response id, action suffix) of a stored response's path, or None."""
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    response_id, slash, action = rest.partition("/")
    suffix = slash + action
    if path in MODEL_CALLS or not stateful.ID.match(response_id) or suffix not in ACTIONS:
        return None
    return response_id, suffix


def methods(path: str) -> tuple[str, ...] | None:
    if path in MODEL_CALLS:
        return _POST
    parts = split(path)
    return ACTIONS[parts[1]] if parts is not None else None


async def stored(router: Router, call: stateful.Call, send: Send) -> None:
    """Relay one call on a stored response to its owner."""
    parts = split(call.path)
    assert parts is not None, "dispatched on `methods`"
    response_id, action = parts
    await stateful.call_owner(
        router,
        call,
        send,
        ("response", response_id),
        endpoint="responses",
        path=f"/responses/{response_id}{action}",
        relayed="response",
        with_body=False,  # a cancel's body is drained, not sent
    )
    if call.verb == "DELETE":
        router.owners.forget("response", response_id)


async def model_call(router: Router, call: stateful.Call, send: Send) -> None:
    """`POST /v1/responses/input_tokens` or `/compact`: to the target holding the state
    it builds on, else the route's first target that answers."""
    path, client = call.path, call.client
    what = MODEL_CALLS[path]
    body = stateful.json_object(call.raw, path)
    model = body.get("model")
    if model is None and what == "input_tokens":  # optional there: the only route
        model = stateful.default_route(router, client, path)
    if not isinstance(model, str) or not model:
        raise BadRequest(f"{path} needs 'model': the route to send it to")
    router.precheck(model, client)
    route = router.runtime.routes[model]
    names = route.serving.get("responses", ())
    if not names:
        raise stateful.not_served(route)
    fields = responses_fields(body, router.runtime.config.server.limits)
    pin = await find_pin(router.owners, fields.previous_response_id, fields.conversation)
    request_for = stateful.with_model(
        "responses", body, model, call, "/" + path.removeprefix("/v1/")
    )

    if pin is not None:
        (owner,) = pinned_targets(pin, model, names)  # 409 if the route cannot reach it
        target = router.runtime.targets[owner]
        await stateful.owned(router, pin, request_for(target), send, what)
        return
    answer = await stateful.fresh(router, stateful.ranked(router, route), request_for, what)
    await stateful.respond(send, answer.status, answer.body, answer.content_type)
