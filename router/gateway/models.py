"""`GET /v1/models` and `GET /v1/models/{model}`: the routes a client key may use, as
OpenAI's model objects, each with what it serves (router/capabilities.py). A route the
key may not use is the same 404 as one that does not exist: a key learns nothing of the
routes it cannot use."""

from __future__ import annotations

import json

from router.errors import ModelNotFound
from router.gateway.auth import Client
from router.runtime import Router

Answer = tuple[int, bytes, bytes]
_JSON = b"application/json"


def _model_object(router: Router, name: str) -> dict[str, object]:
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "firsttoken",
        "capabilities": router.runtime.routes[name].capabilities,
    }


def model_list(router: Router, client: Client | None) -> Answer:
    data = [_model_object(router, name) for name in router.models(client)]
    return 200, json.dumps({"object": "list", "data": data}).encode(), _JSON


def one_model(router: Router, client: Client | None, name: str) -> Answer:
    usable = router.models(client)
    if name not in usable:
        raise ModelNotFound(
            f"the model '{name[:200]}' does not exist; routes here: "
            f"{', '.join(usable) or '(none for this key)'}"
        )
    return 200, json.dumps(_model_object(router, name)).encode(), _JSON
