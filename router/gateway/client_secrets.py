"""`POST /v1/realtime/client_secrets`: an ephemeral key for one realtime session's page.

What `client.realtime.client_secrets.create(expires_after=..., session=...)` sends:

    {"expires_after": {"anchor": "created_at", "seconds": 600},
     "session": {"type": "realtime", "model": ROUTE, "instructions": ..., ...}}

`session.model` names a realtime route (or, absent, the only one the caller's key may
use); the rest of `session` is the configuration the session starts with. A
`session.type` of `transcription` makes a key for a transcription session: the page's
session is opened as one (`?intent=transcription` upstream) whatever URL it uses. The caller
needs a client key that may use the route (with `auth`); the key it gets acts as that
client key, on that route only, for `seconds` (10 to 7200, 600 by default). The answer
is OpenAI's shape: `{"value": "ek_...", "expires_at": ..., "session": {...}}`.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

from router.errors import BadRequest, Forbidden, ModelNotFound
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.gateway.stateful import Call, json_object, respond
from router.realtime.secrets import DEFAULT_TTL_S, MAX_TTL_S, MIN_TTL_S
from router.runtime import Router

log = logging.getLogger("firsttoken.realtime")

PATH = "/v1/realtime/client_secrets"
#: fields of `session` that are not configuration to replay
_NOT_CONFIG = frozenset({"model", "type", "object", "id", "client_secret", "expires_at"})


def _ttl(body: dict[str, object]) -> int:
    expires = body.get("expires_after")
    if expires is None:
        return DEFAULT_TTL_S
    if not isinstance(expires, dict):
        raise BadRequest("'expires_after' must be an object: {anchor, seconds}")
    anchor = expires.get("anchor", "created_at")
    if anchor != "created_at":
        raise BadRequest("'expires_after.anchor' must be 'created_at'")
    seconds = expires.get("seconds", DEFAULT_TTL_S)
    if type(seconds) is not int or not MIN_TTL_S <= seconds <= MAX_TTL_S:
        raise BadRequest(
            f"'expires_after.seconds' must be an integer from {MIN_TTL_S} to {MAX_TTL_S}"
        )
    return seconds


def realtime_route(router: Router, session: dict[str, Any], client: Client | None) -> str:
    """The realtime route `session.model` names (or the key's only one), for this key."""
    runtime = router.runtime
    served = [
        name
        for name in router.models(client)
        if runtime.realtime.serves(runtime.routes[name].config)
    ]
    model = session.get("model")
    if model is None:
        if len(served) == 1:
            return served[0]
        raise BadRequest(
            "'session.model' names the realtime route the key opens; routes for this key: "
            + (", ".join(served) or "none")
        )
    if not isinstance(model, str) or not model:
        raise BadRequest("'session.model' must be a route name")
    route = runtime.routes.get(model)
    if route is None or not runtime.realtime.serves(route.config):
        raise ModelNotFound(
            f"no realtime route '{model[:200]}'; realtime routes here: "
            + (", ".join(served) or "none")
        )
    if not runtime.auth.may_use(client, model):
        raise Forbidden(f"the key '{client.name if client else ''}' may not use '{model}'")
    return model


async def create(router: Router, call: Call, send: Send) -> None:
    body, client = json_object(call.raw, PATH), call.client
    ttl_s = _ttl(body)
    session = body.get("session", {})
    if not isinstance(session, dict):
        raise BadRequest("'session' must be an object")
    kind = session.get("type", "realtime")
    if kind not in ("realtime", "transcription"):
        raise BadRequest(
            f"'session.type' {str(kind)[:40]!r} is not served here: 'realtime' or "
            "'transcription' sessions"
        )
    route = realtime_route(router, session, client)
    config = {k: v for k, v in session.items() if k not in _NOT_CONFIG}
    if kind == "transcription":  # replayed as such, and it says what to open
        config["type"] = kind
    try:
        value, expires_at = router.runtime.auth.ephemeral.mint(
            route, client.name if client else None, config, ttl_s
        )
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    log.info(
        "ephemeral key for route %s (client %s), %d s",
        route,
        client.name if client else "-",
        ttl_s,
    )
    answer = {
        "value": value,
        "expires_at": expires_at,
        "session": {
            "id": "sess_" + secrets.token_hex(12),
            "object": "realtime.session"
            if kind == "realtime"
            else "realtime.transcription_session",
            "type": kind,
            "model": route,
            "expires_at": expires_at,
            **config,
        },
    }
    no_store = [(b"cache-control", b"no-store")]  # a credential: no cache keeps it
    await respond(send, 200, json.dumps(answer).encode(), "application/json", no_store)
