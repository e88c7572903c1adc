"""The pieces every operation of the router's OpenAPI document (`openapi.py`) is built
from: content types, the error answer, the OPTIONS operation, shared wording."""

from __future__ import annotations

from typing import Any

from router.gateway.openapi_schemas import ref

JSON = "application/json"
SSE = "text/event-stream"

FORBIDDEN = (
    "the Host is not in server.allowed_hosts (host_not_allowed), or the request comes "
    "from a web page whose Origin server.cors does not allow (origin_not_allowed)"
)
WRONG_METHOD = "wrong method; Allow lists the methods the endpoint takes"
NOT_JSON = "the body is not sent as Content-Type: application/json"


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": ref("Error")}}}


def options() -> dict[str, Any]:
    return {
        "options": {
            "summary": "a CORS preflight (answered for origins in server.cors), or the "
            "methods the endpoint takes (Allow)",
            "responses": {
                "204": {"description": "the methods (Allow; Access-Control-* on a preflight)"},
                "403": error(FORBIDDEN),
            },
        }
    }
