"""The calls relayed to one target without a turn (router/gateway/stateful.py): which
module answers each path, the methods it takes, and the call as read from a request.

    /v1/responses/{id}[/cancel|/input_items]          responses.stored
    /v1/responses/input_tokens, /v1/responses/compact responses.model_call
    /v1/conversations                                 conversations.create
    /v1/conversations/{id}[/items[/{item_id}]]        conversations.owned
    /v1/moderations                                   moderations.create
    /v1/realtime/client_secrets                       client_secrets.create
    /v1/chat/completions/{id}[/messages]              chat_store.stored
    (GET /v1/chat/completions, the list, is dispatched beside the turn's POST)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from router.gateway import chat_store, client_secrets, conversations, moderations, responses
from router.gateway.asgi import Scope, Send
from router.gateway.auth import Client
from router.gateway.stateful import Call, plain_query
from router.runtime import Router

Handler = Callable[[Router, Call, Send], Awaitable[None]]
_POST = ("POST", "OPTIONS")
_ONE_POST: Mapping[str, Handler] = {
    conversations.PATH: conversations.create,
    moderations.PATH: moderations.create,
    client_secrets.PATH: client_secrets.create,
    **dict.fromkeys(responses.MODEL_CALLS, responses.model_call),
}


def handler_for(path: str) -> Handler | None:
    """What answers a relayed call's path (None: not one)."""
    found = _ONE_POST.get(path)
    if found is not None:
        return found
    if path.startswith(responses.PREFIX):
        return responses.stored
    if path.startswith(chat_store.PREFIX):
        return chat_store.stored
    return conversations.owned if path.startswith(conversations.PREFIX) else None


def methods(path: str) -> tuple[str, ...] | None:
    """The methods a relayed call's path takes (None: not one, or no such id)."""
    if path in _ONE_POST:
        return _POST
    if path.startswith(responses.PREFIX):
        return responses.methods(path)
    if path.startswith(chat_store.PREFIX):
        return chat_store.methods(path)
    return conversations.methods(path) if path.startswith(conversations.PREFIX) else None


def bodiless(path: str) -> bool:
    """A stored response's calls take no body (a cancel's is drained, not sent), nor
    does the list of stored chat completions."""
    if path == chat_store.PATH:
        return True
    return path.startswith(responses.PREFIX) and path not in responses.MODEL_CALLS


def takes_json(path: str, method: str) -> bool:
    """A POST that sends a body on: JSON only, as a turn's (no form a page could send)."""
    return method == "POST" and not bodiless(path) and handler_for(path) is not None


def call_of(scope: Scope, raw: bytes, client: Client | None, headers: Mapping[str, str]) -> Call:
    method: str = scope["method"]
    return Call(
        path=scope["path"],
        method=method,
        query=plain_query(scope.get("query_string", b"").decode("latin-1")),
        raw=raw if method == "POST" and not bodiless(scope["path"]) else b"",
        client=client,
        headers=headers,
    )
