"""The OpenAPI operations of WebRTC calls (`realtime_calls.py`): the offer and a call's
actions, for `openapi.py`."""

from __future__ import annotations

from typing import Any

from router.gateway.openapi_parts import FORBIDDEN, JSON, NOT_JSON, WRONG_METHOD, error, options

_SDP = "application/sdp"
_OFFER = {
    "type": "object",
    "required": ["sdp"],
    "properties": {
        "sdp": {"type": "string", "description": "the caller's SDP offer"},
        "session": {
            "type": "object",
            "description": "the session's configuration; `model` names the realtime route",
            "additionalProperties": True,
        },
    },
}


def realtime_calls() -> dict[str, Any]:
    return {
        "post": {
            "summary": "a WebRTC call: the SDP offer to the route's first realtime target "
            "that answers it (failover before the call exists); the media then flows "
            "between the caller and that target",
            "parameters": [
                {
                    "name": "model",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the realtime route, when session.model names none",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": _OFFER},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "sdp": {"type": "string"},
                                "session": {"type": "string", "description": "JSON"},
                            },
                        }
                    },
                    _SDP: {"schema": {"type": "string", "description": "with an ephemeral key"}},
                },
            },
            "responses": {
                "201": {
                    "description": "the SDP answer; Location: /v1/realtime/calls/{call_id}",
                    "content": {_SDP: {"schema": {"type": "string"}}},
                },
                "400": error("no SDP; another session type; a route of cascades only"),
                "401": error("missing or unknown client key"),
                "403": error(
                    FORBIDDEN + "; or the key may not use the route, or has session limits"
                ),
                "404": error("no such realtime route (code model_not_found)"),
                "405": error(WRONG_METHOD),
                "503": error("no realtime target could take the call"),
            },
        },
        **options(),
    }


def call_action(action: str) -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "post": {
            "summary": f"{action} a WebRTC call, at the target that holds it",
            "requestBody": {
                "required": False,
                "content": {JSON: {"schema": {"type": "object", "additionalProperties": True}}},
            },
            "responses": {
                "200": {"description": "done, as the target answered"},
                "400": error("the body is not a JSON object"),
                "401": error("missing or unknown client key"),
                "403": error(FORBIDDEN + "; or the key may not use the call's route"),
                "404": error("no call with that id is known to this router"),
                "405": error(WRONG_METHOD),
                "409": error("the call's target is no longer configured"),
                "415": error(NOT_JSON),
                "503": error("the call's target is unavailable"),
            },
        },
        **options(),
    }


def paths() -> dict[str, Any]:
    return {
        "/v1/realtime/calls": realtime_calls(),
        **{
            f"/v1/realtime/calls/{{call_id}}/{action}": call_action(action)
            for action in ("accept", "reject", "refer", "hangup")
        },
    }
