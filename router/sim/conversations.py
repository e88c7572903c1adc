"""The Conversations API as the simulator speaks it (OpenAI's shapes):

    POST   /v1/conversations                          create (`items`, `metadata`)
    GET    /v1/conversations/{id}                     the conversation
    POST   /v1/conversations/{id}                     update its `metadata`
    DELETE /v1/conversations/{id}                     delete it
    POST   /v1/conversations/{id}/items               add items
    GET    /v1/conversations/{id}/items               list them (`order`, `limit`, `after`)
    GET    /v1/conversations/{id}/items/{item_id}     one item
    DELETE /v1/conversations/{id}/items/{item_id}     delete one (answers the conversation)

A Responses request with `conversation` reads it and appends its input and output
items (`ResponseStore`); an unknown id is a 404, as OpenAI answers. Ids are unique
across simulators, so a test can tell which server holds a conversation.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.sim.wire import error_body

#: conversations kept per server (the oldest go first)
MAX_CONVERSATIONS = 10_000
_PAGE = 20


def as_items(value: object, prefix: str, ids: itertools.count[int]) -> list[dict[str, Any]]:
    """Input as conversation items: a string is a user message; a message's text
    content becomes `input_text` (or `output_text` from the assistant) parts."""
    raw = [{"role": "user", "content": value}] if isinstance(value, str) else value
    items: list[dict[str, Any]] = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        item = {"type": "message", **entry}
        if item["type"] == "message":
            role = item.get("role", "user")
            content = item.get("content")
            kind = "output_text" if role == "assistant" else "input_text"
            if isinstance(content, str):
                content = [{"type": kind, "text": content}]
            item.update(role=role, content=content or [], status="completed")
        item.setdefault("id", f"msg_{prefix}{next(ids):06d}")
        items.append(item)
    return items


class ConversationStore:
    """Conversations by id, each with its items in order."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self._items_ids = itertools.count(1)
        self._stored: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._stored

    def create(self, items: object, metadata: object) -> dict[str, Any]:
        conversation = {
            "id": f"conv_{self._prefix}{next(self._ids):06d}",
            "object": "conversation",
            "created_at": int(time.time()),
            "metadata": metadata if isinstance(metadata, dict) else {},
        }
        self._stored[str(conversation["id"])] = (conversation, self.items_of(items))
        while len(self._stored) > MAX_CONVERSATIONS:
            self._stored.popitem(last=False)
        return conversation

    def items_of(self, value: object) -> list[dict[str, Any]]:
        return as_items(value, self._prefix, self._items_ids)

    def extend(self, conversation_id: str, items: list[dict[str, Any]]) -> None:
        found = self._stored.get(conversation_id)
        if found is not None:
            found[1].extend(items)

    def items(self, conversation_id: str) -> list[dict[str, Any]] | None:
        found = self._stored.get(conversation_id)
        return found[1] if found is not None else None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/conversations", self._create)
        app.router.add_get("/v1/conversations/{id}", self._get)
        app.router.add_post("/v1/conversations/{id}", self._update)
        app.router.add_delete("/v1/conversations/{id}", self._delete)
        app.router.add_post("/v1/conversations/{id}/items", self._add_items)
        app.router.add_get("/v1/conversations/{id}/items", self._list_items)
        app.router.add_get("/v1/conversations/{id}/items/{item}", self._get_item)
        app.router.add_delete("/v1/conversations/{id}/items/{item}", self._delete_item)

    async def _create(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return _bad("the body must be a JSON object")
        return web.json_response(self.create(body.get("items"), body.get("metadata")))

    async def _get(self, request: web.Request) -> web.Response:
        found = self._stored.get(request.match_info["id"])
        return web.json_response(found[0]) if found is not None else _not_found(request)

    async def _update(self, request: web.Request) -> web.Response:
        found = self._stored.get(request.match_info["id"])
        if found is None:
            return _not_found(request)
        return await update_metadata(request, found[0])

    async def _delete(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["id"]
        if self._stored.pop(conversation_id, None) is None:
            return _not_found(request)
        answer = {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
        return web.json_response(answer)

    async def _add_items(self, request: web.Request) -> web.Response:
        items = self.items(request.match_info["id"])
        if items is None:
            return _not_found(request)
        body = await _json_object(request)
        if body is None or not isinstance(body.get("items"), list):
            return _bad("`items` (an array) is required")
        added = self.items_of(body["items"])
        items.extend(added)
        return web.json_response(_page(added, has_more=False))

    async def _list_items(self, request: web.Request) -> web.Response:
        items = self.items(request.match_info["id"])
        if items is None:
            return _not_found(request)
        ordered = items if request.query.get("order") == "asc" else items[::-1]
        after = request.query.get("after")
        if after is not None:
            ids = [i["id"] for i in ordered]
            ordered = ordered[ids.index(after) + 1 :] if after in ids else []
        limit_text = request.query.get("limit", "")
        limit = int(limit_text) if limit_text.isdigit() else _PAGE
        return web.json_response(_page(ordered[:limit], has_more=len(ordered) > limit))

    async def _get_item(self, request: web.Request) -> web.Response:
        items = self.items(request.match_info["id"])
        found = [i for i in items or () if i["id"] == request.match_info["item"]]
        return web.json_response(found[0]) if found else _not_found(request, item=True)

    async def _delete_item(self, request: web.Request) -> web.Response:
        conversation_id = request.match_info["id"]
        items = self.items(conversation_id)
        found = [i for i in items or () if i["id"] == request.match_info["item"]]
        if items is None or not found:
            return _not_found(request, item=True)
        items.remove(found[0])
        return web.json_response(self._stored[conversation_id][0])


def _page(items: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else "",
        "last_id": items[-1]["id"] if items else "",
        "has_more": has_more,
    }


async def update_metadata(request: web.Request, stored: dict[str, Any]) -> web.Response:
    """A stored object's `metadata` replaced by the request's (a 400 without one)."""
    body = await _json_object(request)
    if body is None or not isinstance(body.get("metadata"), dict):
        return _bad("`metadata` (an object) is required")
    stored["metadata"] = body["metadata"]
    return web.json_response(stored)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _bad(message: str) -> web.Response:
    return web.json_response(error_body(message, "invalid_request_error"), status=400)


def _not_found(request: web.Request, *, item: bool = False) -> web.Response:
    if item:
        message = f"Item with id '{request.match_info['item']}' not found."
    else:
        message = f"Conversation with id '{request.match_info['id']}' not found."
    return web.json_response(error_body(message, "invalid_request_error"), status=404)


def unknown_conversation(
    body: Mapping[str, Any], store: ConversationStore
) -> dict[str, Any] | None:
    """OpenAI's 404 body for a Responses request naming a conversation this server
    does not hold, or None."""
    conversation = body.get("conversation")
    if conversation is None:
        return None
    cid = conversation.get("id") if isinstance(conversation, dict) else conversation
    if cid in store:
        return None
    found = error_body(f"Conversation with id '{cid}' not found.", "invalid_request_error")
    found["error"]["param"] = "conversation"
    return found
