"""The OpenAPI paths of stored state (`openapi.py`): stored responses, conversations and
chat completions, answered by the target holding each, and the unary calls around them."""

from __future__ import annotations

from typing import Any

from router.gateway.openapi_parts import (
    FORBIDDEN,
    JSON,
    NOT_JSON,
    WRONG_METHOD,
    error,
    options,
)
from router.gateway.openapi_schemas import ref


def _owned(summary: str, schema: str, what: str, *, body: str | None = None) -> dict[str, Any]:
    """A call on stored state (a response, a conversation), answered by its owner."""
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{}, {"bearer": []}],
        "responses": {
            "200": {
                "description": "the owner's answer",
                "content": {JSON: {"schema": ref(schema)}},
            },
            "401": error("missing or unknown client key"),
            "403": error(FORBIDDEN + "; or the key may not use the route it was made on"),
            "404": error(f"no such {what} (as the owner, or the router, says)"),
            "405": error(WRONG_METHOD),
            "502": error("the owner failed"),
            "503": error("the owner is not available (code response_state_unavailable)"),
            "504": error("the owner timed out"),
        },
    }
    if body is not None:
        operation["requestBody"] = {"content": {JSON: {"schema": ref(body)}}}
        operation["responses"]["400"] = error("the body is not a JSON object, or the owner says")
        operation["responses"]["415"] = error(NOT_JSON)
    return operation


def _fresh(summary: str, request: str, answer: str, *, pinned: bool) -> dict[str, Any]:
    """A unary call made on a route's targets (or on the owner of what it builds on)."""
    operation = _owned(summary, answer, "route (code model_not_found)", body=request)
    operation["requestBody"]["required"] = True
    operation["responses"]["400"] = error(
        "the body is not a JSON object, names no route where several could serve it, the "
        "route serves no /v1/responses, or the target rejected it"
    )
    operation["responses"]["429"] = error("the client key is over its rate limit")
    operation["responses"]["503"] = error(
        "no target could answer, or the owner of the state it builds on is not available"
    )
    if pinned:
        operation["responses"]["409"] = error(
            "the response or conversation it builds on is stored at a target this route "
            "cannot reach (code response_state_elsewhere)"
        )
    return {"post": operation, **options()}


def stored_chat_list() -> dict[str, Any]:
    """`GET /v1/chat/completions`: one target's stored chat completions."""
    operation = _owned(
        "the stored chat completions of the first of a route's targets that answers "
        "(`model`: the route, sent as each target's own model; or the only route serving "
        "chat)",
        "ItemList",
        "route (code model_not_found)",
    )
    operation["parameters"] = [
        {"name": name, "in": "query", "schema": {"type": kind}}
        for name, kind in (("model", "string"), ("after", "string"), ("limit", "integer"))
    ]
    operation["responses"]["400"] = error(
        "names no route where several serve chat, or the route serves no chat"
    )
    operation["responses"]["503"] = error("no target could answer")
    return operation


def stored_state() -> dict[str, Any]:
    """Stored responses and conversations (answered by the target holding each), and
    the Responses family's unary calls."""
    path_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    item_id = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
    response, conversation, items = "Response", "Conversation", "ItemList"
    return {
        "/v1/responses/{id}": {
            "parameters": [path_id],
            "get": _owned(
                "a stored response (`?stream=true` replays its events)", response, "response"
            ),
            "delete": _owned("delete it (the router forgets its owner too)", response, "response"),
            **options(),
        },
        "/v1/responses/{id}/cancel": {
            "parameters": [path_id],
            "post": _owned("cancel a background response", response, "response"),
            **options(),
        },
        "/v1/responses/{id}/input_items": {
            "parameters": [path_id],
            "get": _owned("the items it was made from", items, "response"),
            **options(),
        },
        "/v1/responses/input_tokens": _fresh(
            "count a Responses request's input tokens (at the owner of its state, if any)",
            "ResponsesCall",
            "InputTokens",
            pinned=True,
        ),
        "/v1/responses/compact": _fresh(
            "compact a conversation's items (at the owner of its state, if any)",
            "ResponsesCall",
            "Compaction",
            pinned=True,
        ),
        "/v1/moderations": _fresh(
            "a moderation, at the first of a route's targets that answers (`model`, or a "
            "route named omni-moderation-latest, or the only route serving moderations)",
            "ModerationRequest",
            "Object",
            pinned=False,
        ),
        "/v1/conversations": _fresh(
            "make a conversation on a target of the route named in `model` (or the only "
            "route serving /v1/responses); the router remembers where",
            "ConversationCreate",
            conversation,
            pinned=False,
        ),
        "/v1/conversations/{id}": {
            "parameters": [path_id],
            "get": _owned("a conversation", conversation, "conversation"),
            "post": _owned("update its metadata", conversation, "conversation", body="Object"),
            "delete": _owned(
                "delete it (the router forgets its owner too)", "Deleted", "conversation"
            ),
            **options(),
        },
        "/v1/conversations/{id}/items": {
            "parameters": [path_id],
            "get": _owned("its items", items, "conversation"),
            "post": _owned("add items", items, "conversation", body="Object"),
            **options(),
        },
        "/v1/chat/completions/{id}": {
            "parameters": [path_id],
            "get": _owned("a stored chat completion", "Completion", "chat completion"),
            "post": _owned("update its metadata", "Completion", "chat completion", body="Object"),
            "delete": _owned(
                "delete it (the router forgets its owner too)", "Deleted", "chat completion"
            ),
            **options(),
        },
        "/v1/chat/completions/{id}/messages": {
            "parameters": [path_id],
            "get": _owned("the messages it was made from", items, "chat completion"),
            **options(),
        },
        "/v1/conversations/{id}/items/{item_id}": {
            "parameters": [path_id, item_id],
            "get": _owned("one item", "Object", "conversation or item"),
            "delete": _owned("delete one item", conversation, "conversation or item"),
            **options(),
        },
    }
