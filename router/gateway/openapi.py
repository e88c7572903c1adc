"""An OpenAPI 3.0 description of the router's own endpoints.

The turn endpoints take OpenAI's request bodies; only the fields the router reads
itself are described strictly (`model`, `messages` or `prompt`, `stream`,
`stream_options`, `max_tokens`), and every other field is passed to the target
unchanged (`additionalProperties: true`). Every error, from the router or from a
target that rejected the request, has OpenAI's shape `{"error": {"message",
"type", "code"}}`. Used by the bad-input tests, and by anyone generating a client.
"""

from __future__ import annotations

import copy
from typing import Any

JSON = "application/json"
SSE = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "string", "nullable": True},
                    "param": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "content": {
                "nullable": True,
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                        },
                    },
                ],
            },
        },
        "additionalProperties": True,
    },
    "StreamOptions": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
        "additionalProperties": True,
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            "stream": {"type": "boolean", "default": False},
            "stream_options": _ref("StreamOptions"),
            "max_tokens": {"type": "integer", "minimum": 0},
            "max_completion_tokens": {"type": "integer", "minimum": 0},
            "user": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "prompt": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
            "stream": {"type": "boolean", "default": False},
            "stream_options": _ref("StreamOptions"),
            "max_tokens": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": True,
    },
    "Completion": {
        "type": "object",
        "description": "the target's answer, relayed unchanged (OpenAI's completion object)",
        "required": ["choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "nullable": True},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                    },
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "AdminTargets": {
        "type": "object",
        "required": ["targets", "routes"],
        "properties": {
            "targets": {"type": "array", "items": {"type": "object"}},
            "routes": {"type": "object"},
        },
    },
}

_ROUTING_HEADERS = {
    "x-firsttoken-target": {"schema": {"type": "string"}, "description": "the target chosen"},
    "x-firsttoken-attempts": {"schema": {"type": "string"}, "description": "attempts made"},
    "x-firsttoken-reason": {"schema": {"type": "string"}, "description": "why that target"},
}


_FORBIDDEN = (
    "the Host is not in server.allowed_hosts (host_not_allowed), or the request comes "
    "from a web page whose Origin server.cors does not allow (origin_not_allowed)"
)
_WRONG_METHOD = "wrong method; Allow lists the methods the endpoint takes"
_NOT_JSON = "the body is not sent as Content-Type: application/json"


def _turn(summary: str, request_schema: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{}, {"bearer": []}],
            "parameters": [
                {
                    "name": "x-session-id",
                    "in": "header",
                    "schema": {"type": "string"},
                    "description": "conversation key for target affinity",
                },
                {"name": "x-request-id", "in": "header", "schema": {"type": "string"}},
            ],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": _ref(request_schema)}},
            },
            "responses": {
                "200": {
                    "description": "the answer: a JSON completion, or an SSE stream of "
                    "chunks ending in `data: [DONE]`; a failure after the first token "
                    "ends the stream with an SSE event in the Error shape instead",
                    "headers": _ROUTING_HEADERS,
                    "content": {
                        JSON: {"schema": _ref("Completion")},
                        SSE: {"schema": {"type": "string"}},
                    },
                },
                "400": _error("invalid request (or a target rejected it as invalid)"),
                "401": _error("missing or unknown client key"),
                "403": _error(_FORBIDDEN + "; or the client key may not use this route"),
                "404": _error("no such route (model); lists the routes the key may use"),
                "405": _error(_WRONG_METHOD),
                "413": _error("request body over server.max_body_bytes"),
                "415": _error(_NOT_JSON),
                "429": _error("the client key is over its rate limit"),
                "502": _error("every target failed"),
                "503": _error(
                    "no target is available, the router is draining, or too many large "
                    "bodies wait to be parsed (code overloaded)"
                ),
                "504": _error("every target timed out"),
            },
        },
        **_options(),
    }


def _get(summary: str, schema: dict[str, Any], ctype: str = JSON) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {ctype: {"schema": schema}}},
                "403": _error(_FORBIDDEN),
                "405": _error(_WRONG_METHOD),
            },
        },
        **_options(),
    }


def _options() -> dict[str, Any]:
    return {
        "options": {
            "summary": "a CORS preflight (answered for origins in server.cors), or the "
            "methods the endpoint takes (Allow)",
            "responses": {
                "204": {"description": "the methods (Allow; Access-Control-* on a preflight)"},
                "403": _error(_FORBIDDEN),
            },
        }
    }


def _admin(operation: dict[str, Any]) -> dict[str, Any]:
    for method, op in operation.items():
        if method == "options":
            continue
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = _error("the admin key is required")
        op["responses"]["403"] = _error(_FORBIDDEN + "; or /admin is closed without an admin key")
    return operation


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the router's endpoints (a fresh dict each call)."""
    readyz = _get("ready to take turns (503 while starting or draining)", _ref("Status"))
    readyz["get"]["responses"]["503"] = {
        "description": "not ready",
        "content": {JSON: {"schema": _ref("Status")}},
    }
    models = _get("the routes the client key may use, as OpenAI models", _ref("ModelList"))
    models["get"]["security"] = [{}, {"bearer": []}]
    models["get"]["responses"]["401"] = _error("missing or unknown client key (with auth)")
    reload = {
        "post": {
            "summary": "re-read the policy file; an invalid one is refused and the "
            "running config keeps serving",
            "requestBody": {
                "required": True,
                "description": "a JSON object (`{}`), so no web page can send it unasked",
                "content": {JSON: {"schema": {"type": "object"}}},
            },
            "responses": {
                "200": {
                    "description": "reloaded",
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["reloaded"],
                                "properties": {"reloaded": {"type": "boolean"}},
                            }
                        }
                    },
                },
                "400": _error(
                    "the policy file is invalid (code invalid_config), or the body is not "
                    "a JSON object"
                ),
                "403": _error(_FORBIDDEN),
                "405": _error(_WRONG_METHOD),
                "415": _error(_NOT_JSON),
            },
        },
        **_options(),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "FirstToken",
            "version": "0.1.0",
            "description": "A latency-aware, OpenAI-compatible inference router.",
        },
        "servers": [{"url": "http://127.0.0.1:8080"}],
        "paths": {
            "/v1/chat/completions": _turn("one chat turn, routed", "ChatCompletionRequest"),
            "/v1/completions": _turn("one legacy completion, routed", "CompletionRequest"),
            "/v1/models": models,
            "/health": {
                "get": {
                    "summary": "the process is alive, answered as vLLM does (200, empty body)",
                    "responses": {
                        "200": {"description": "OK"},
                        "403": _error(_FORBIDDEN),
                        "405": _error(_WRONG_METHOD),
                    },
                },
                **_options(),
            },
            "/healthz": _get("the process is alive", _ref("Status")),
            "/readyz": readyz,
            "/metrics": _get("Prometheus metrics", {"type": "string"}, "text/plain; version=0.0.4"),
            "/admin/targets": _admin(
                _get(
                    "every target's live signals and each route's last decision",
                    _ref("AdminTargets"),
                )
            ),
            "/admin/reload": _admin(reload),
        },
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
