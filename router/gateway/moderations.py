"""`POST /v1/moderations`: a moderation, relayed to the first of a route's targets that
answers.

`client.moderations.create(input=..., model=...)` names the route in `model`; the SDK
sends none by default (OpenAI then uses `omni-moderation-latest`), so without one the
call goes to a route of that name if there is one, else to the only route that serves
moderations to the client's key (a 400 that lists them otherwise). The route's targets
that serve `moderations` (capabilities: by default `kind: openai` ones) are tried in its
policy's order, each given its own model name; one that cannot be reached, fails, or
says it has no such endpoint passes the call to the next (router/gateway/stateful.py).
A moderation is a unary lookup, not a turn: no hedge, no TTFT sample; each call is
counted in `firsttoken_relayed_calls_total`.
"""

from __future__ import annotations

from router.errors import BadRequest
from router.gateway import stateful
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.runtime import Router

PATH = "/v1/moderations"
#: OpenAI's model when a request names none: a route may carry this name
DEFAULT_MODEL = "omni-moderation-latest"


def _route_name(router: Router, model: object, client: Client | None) -> str:
    if model is not None:
        if not isinstance(model, str) or not model:
            raise BadRequest("'model' must be a route name")
        return model
    runtime = router.runtime
    if DEFAULT_MODEL in runtime.routes and runtime.auth.may_use(client, DEFAULT_MODEL):
        return DEFAULT_MODEL
    served = [n for n in router.models(client) if runtime.routes[n].serving.get("moderations")]
    if len(served) == 1:
        return served[0]
    raise BadRequest(
        f"{PATH} names no model, no route is named '{DEFAULT_MODEL}', and "
        f"{len(served)} routes serve moderations here ({', '.join(served) or 'none'}): "
        "name one in 'model'"
    )


async def create(router: Router, call: stateful.Call, send: Send) -> None:
    body = stateful.json_object(call.raw, PATH)
    if "input" not in body:
        raise BadRequest("'input' is required: a string, an array of strings, or of parts")
    name = _route_name(router, body.get("model"), call.client)
    router.precheck(name, call.client)
    route = router.runtime.routes[name]
    if not route.serving.get("moderations"):
        raise stateful.not_served(route, "moderations")

    request_for = stateful.with_model("embeddings", body, name, call, "/moderations")
    ranked = stateful.ranked(router, route, "moderations")
    answer = await stateful.fresh(router, ranked, request_for, "moderation")
    await stateful.respond(send, answer.status, answer.body, answer.content_type)
