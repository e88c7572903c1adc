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

from router.gateway import openapi_calls
from router.gateway.openapi_parts import (
    FORBIDDEN,
    JSON,
    NOT_JSON,
    SSE,
    WRONG_METHOD,
    error,
    options,
)
from router.gateway.openapi_schemas import SCHEMAS, ref
from router.gateway.openapi_state import stored_chat_list, stored_state

_ROUTING_HEADERS = {
    "x-firsttoken-target": {"schema": {"type": "string"}, "description": "the target chosen"},
    "x-firsttoken-attempts": {"schema": {"type": "string"}, "description": "attempts made"},
    "x-firsttoken-reason": {"schema": {"type": "string"}, "description": "why that target"},
}


_TURN_ANSWER = (
    "the answer: a JSON completion, or an SSE stream of chunks ending in `data: [DONE]`; a "
    "failure after the first token ends the stream with an SSE event in the Error shape "
    "instead"
)


def _turn(
    summary: str,
    request_schema: str,
    answer: str = "Completion",
    description: str = _TURN_ANSWER,
    *,
    streams: bool = True,
    content_type: str = JSON,
) -> dict[str, Any]:
    answers: dict[str, Any] = {JSON: {"schema": ref(answer)}}
    if streams:
        answers[SSE] = {"schema": {"type": "string"}}
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
                "content": {content_type: {"schema": ref(request_schema)}},
            },
            "responses": {
                "200": {
                    "description": description,
                    "headers": _ROUTING_HEADERS,
                    "content": answers,
                },
                "400": error("invalid request (or a target rejected it as invalid)"),
                "401": error("missing or unknown client key"),
                "403": error(FORBIDDEN + "; or the client key may not use this route"),
                "404": error("no such route (model); lists the routes the key may use"),
                "405": error(WRONG_METHOD),
                "413": error("request body over server.max_body_bytes"),
                "415": error(NOT_JSON),
                "429": error("the client key is over its rate limit"),
                "502": error("every target failed"),
                "503": error(
                    "no target is available, the router is draining, or too many large "
                    "bodies wait to be parsed (code overloaded)"
                ),
                "504": error("every target timed out"),
            },
        },
        **options(),
    }


def _get(summary: str, schema: dict[str, Any], ctype: str = JSON) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {"description": "OK", "content": {ctype: {"schema": schema}}},
                "403": error(FORBIDDEN),
                "405": error(WRONG_METHOD),
            },
        },
        **options(),
    }


def _admin(operation: dict[str, Any]) -> dict[str, Any]:
    for method, op in operation.items():
        if method == "options":
            continue
        op["security"] = [{"bearer": []}]
        op["responses"]["401"] = error("the admin key is required")
        op["responses"]["403"] = error(FORBIDDEN + "; or /admin is closed without an admin key")
    return operation


def _audio_form(verb: str) -> dict[str, Any]:
    operation = _turn(
        f"{verb} an upload, routed over a route of stt targets (the form passed on)",
        "AudioForm",
        "Transcript",
        "the chosen target's answer as it sent it",
        streams=False,
        content_type="multipart/form-data",
    )
    ok = operation["post"]["responses"]["200"]
    ok["content"]["text/plain"] = {"schema": {"type": "string"}}
    operation["post"]["responses"]["400"] = error(
        "not a multipart form with a 'file', not a route of stt targets, or a target "
        "rejected the request as invalid"
    )
    del operation["post"]["responses"]["415"]  # a form, not JSON
    return operation


def _realtime() -> dict[str, Any]:
    return {
        "get": {
            "summary": "a Realtime session: a WebSocket upgrade (`?model=ROUTE`); the "
            "subprotocols `realtime` and `openai-insecure-api-key.<key>` carry a browser's key "
            "(best an ephemeral one, from /v1/realtime/client_secrets, which names its route)",
            "security": [{}, {"bearer": []}],
            "parameters": [
                {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
                {
                    "name": "intent",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["transcription"]},
                    "description": "a transcription session (model optional: the only "
                    "realtime route)",
                },
            ],
            "responses": {
                "101": {"description": "the WebSocket; events in OpenAI's Realtime shape"},
                "400": error(
                    "no `model` (or, for a transcription session, several realtime routes), "
                    "an unknown intent, or a bad upgrade"
                ),
                "401": error("missing or unknown client key; an ephemeral key invalid or expired"),
                "403": error(
                    FORBIDDEN + "; or the client key may not use this route; or an ephemeral "
                    "key made for another route"
                ),
                "404": error("no such realtime route"),
                "405": error(WRONG_METHOD),
                "426": error("a plain HTTP request: this endpoint is a WebSocket"),
                "429": error("the client key is over its session limit"),
                "502": error("every target failed to open a session"),
                "503": error("no target is available, or the router is draining"),
                "504": error("every target timed out"),
            },
        },
        **options(),
    }


def _client_secrets() -> dict[str, Any]:
    return {
        "post": {
            "summary": "an ephemeral key (`ek_...`) for one realtime route, acting as the "
            "caller's client key, with the session configuration it starts with",
            "security": [{}, {"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("ClientSecretRequest")}},
            },
            "responses": {
                "200": {
                    "description": "the key (Cache-Control: no-store)",
                    "content": {JSON: {"schema": ref("ClientSecret")}},
                },
                "400": error(
                    "not a JSON object; a session type other than realtime; seconds out of "
                    "10-7200; no session.model where several realtime routes could be meant"
                ),
                "401": error("missing or unknown client key"),
                "403": error(FORBIDDEN + "; or the client key may not use this route"),
                "404": error("no such realtime route (code model_not_found)"),
                "405": error(WRONG_METHOD),
                "415": error(NOT_JSON),
            },
        },
        **options(),
    }


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the router's endpoints (a fresh dict each call)."""
    readyz = _get("ready to take turns (503 while starting or draining)", ref("Status"))
    readyz["get"]["responses"]["503"] = {
        "description": "not ready",
        "content": {JSON: {"schema": ref("Status")}},
    }
    responses = _turn(
        "one Responses turn, routed; a follow-up goes to the target that stored its state",
        "ResponsesRequest",
        "Response",
        "the answer: a JSON response object, or an SSE stream of its events; a failure "
        "after the first token ends the stream with `response.failed` or `error`",
    )
    responses["post"]["responses"]["409"] = error(
        "the response or conversation this follow-up continues is stored at a target this "
        "route cannot reach now (code response_state_elsewhere)"
    )
    speech = _turn(
        "speech from text, routed over a route of tts targets",
        "SpeechRequest",
        description="the audio in the format asked for, streamed as it is made (`pcm`: "
        "16-bit mono at 24 kHz)",
        streams=False,
    )
    speech["post"]["responses"]["200"]["content"] = {
        kind: {"schema": {"type": "string", "format": "binary"}}
        for kind in ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm")
    }
    models = _get("the routes the client key may use, as OpenAI models", ref("ModelList"))
    models["get"]["security"] = [{}, {"bearer": []}]
    models["get"]["responses"]["401"] = error("missing or unknown client key (with auth)")
    model = _get("one route the client key may use, as an OpenAI model", ref("Model"))
    model["parameters"] = [
        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    model["get"]["security"] = [{}, {"bearer": []}]
    model["get"]["responses"]["401"] = error("missing or unknown client key (with auth)")
    model["get"]["responses"]["404"] = error(
        "no such route, or one the key may not use (code model_not_found)"
    )
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
                "400": error(
                    "the policy file is invalid (code invalid_config), or the body is not "
                    "a JSON object"
                ),
                "403": error(FORBIDDEN),
                "405": error(WRONG_METHOD),
                "415": error(NOT_JSON),
            },
        },
        **options(),
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
            "/v1/chat/completions": {
                **_turn("one chat turn, routed", "ChatCompletionRequest"),
                "get": stored_chat_list(),
            },
            "/v1/completions": _turn("one legacy completion, routed", "CompletionRequest"),
            "/v1/responses": responses,
            **stored_state(),
            "/v1/embeddings": _turn(
                "embeddings of a batch of inputs, routed",
                "EmbeddingsRequest",
                "EmbeddingList",
                "the target's embeddings",
                streams=False,
            ),
            "/v1/audio/transcriptions": _audio_form("transcribe"),
            "/v1/audio/translations": _audio_form("translate into English"),
            "/v1/audio/speech": speech,
            "/v1/realtime": _realtime(),
            "/v1/realtime/client_secrets": _client_secrets(),
            **openapi_calls.paths(),
            "/v1/models": models,
            "/v1/models/{model}": model,
            "/health": {
                "get": {
                    "summary": "the process is alive, answered as vLLM does (200, empty body)",
                    "responses": {
                        "200": {"description": "OK"},
                        "403": error(FORBIDDEN),
                        "405": error(WRONG_METHOD),
                    },
                },
                **options(),
            },
            "/healthz": _get("the process is alive", ref("Status")),
            "/readyz": readyz,
            "/metrics": _get("Prometheus metrics", {"type": "string"}, "text/plain; version=0.0.4"),
            "/admin/targets": _admin(
                _get(
                    "every target's live signals and each route's last decision",
                    ref("AdminTargets"),
                )
            ),
            "/admin/reload": _admin(reload),
        },
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
