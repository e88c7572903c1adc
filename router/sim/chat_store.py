"""Stored chat completions as the simulator speaks them (OpenAI's shapes):

    GET    /v1/chat/completions                  list (`model`, `metadata[k]`, `after`,
                                                 `limit`, `order`)
    GET    /v1/chat/completions/{id}             one
    POST   /v1/chat/completions/{id}             update its `metadata`
    DELETE /v1/chat/completions/{id}             delete it
    GET    /v1/chat/completions/{id}/messages    the request's messages (`after`,
                                                 `limit`, `order`)

A chat request with `store: true` that runs to its end is kept (`put`), with its
`metadata` and its messages; an unknown id is a 404, as OpenAI answers. Every call
on these paths is recorded in `calls` ("GET /v1/chat/completions?model=m"), so a
test can tell which server a router sent it to.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from router.sim.conversations import update_metadata
from router.sim.wire import error_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: completions kept per server (the oldest go first)
MAX_STORED = 10_000
_PAGE = 20
_MAX_PAGE = 100


class ChatStore:
    """Stored chat completions by id, in the order they were made."""

    def __init__(self) -> None:
        self._stored: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()
        #: "METHOD path?query" of every call on the stored completions, newest last
        self.calls: deque[str] = deque(maxlen=MAX_STORED)

    def __contains__(self, completion_id: object) -> bool:
        return completion_id in self._stored

    def put(self, completion: dict[str, Any], request: Mapping[str, Any]) -> None:
        """Keep a finished completion made from `request` (its metadata and messages)."""
        metadata = request.get("metadata")
        stored = {**completion, "metadata": metadata if isinstance(metadata, dict) else {}}
        cid = str(completion["id"])
        messages = [
            {"id": f"{cid}-{i}", **m}
            for i, m in enumerate(request.get("messages") or [])
            if isinstance(m, dict)
        ]
        self._stored[cid] = (stored, messages)
        while len(self._stored) > MAX_STORED:
            self._stored.popitem(last=False)

    def add_routes(self, app: web.Application) -> None:
        for method, path, handler in (
            ("GET", "/v1/chat/completions", self._list),
            ("GET", "/v1/chat/completions/{id}", self._get),
            ("POST", "/v1/chat/completions/{id}", self._update),
            ("DELETE", "/v1/chat/completions/{id}", self._delete),
            ("GET", "/v1/chat/completions/{id}/messages", self._messages),
        ):
            app.router.add_route(method, path, self._recorded(handler))

    def _recorded(self, handler: Handler) -> Handler:
        async def record(request: web.Request) -> web.StreamResponse:
            self.calls.append(f"{request.method} {request.path_qs}")
            return await handler(request)

        return record

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        model = query.get("model")
        wanted = {
            key[len("metadata[") : -1]: value
            for key, value in query.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        found = [
            completion
            for completion, _ in self._stored.values()
            if (model is None or completion.get("model") == model)
            and all(completion["metadata"].get(k) == v for k, v in wanted.items())
        ]
        return _paged(found, query)

    async def _get(self, request: web.Request) -> web.Response:
        found = self._stored.get(request.match_info["id"])
        return web.json_response(found[0]) if found is not None else _not_found(request)

    async def _update(self, request: web.Request) -> web.Response:
        found = self._stored.get(request.match_info["id"])
        if found is None:
            return _not_found(request)
        return await update_metadata(request, found[0])

    async def _delete(self, request: web.Request) -> web.Response:
        completion_id = request.match_info["id"]
        if self._stored.pop(completion_id, None) is None:
            return _not_found(request)
        answer = {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}
        return web.json_response(answer)

    async def _messages(self, request: web.Request) -> web.Response:
        found = self._stored.get(request.match_info["id"])
        if found is None:
            return _not_found(request)
        return _paged(found[1], request.query)


def _paged(items: list[dict[str, Any]], query: Mapping[str, str]) -> web.Response:
    """One page of `items` (oldest first unless `order=desc`), after the id `after`."""
    if query.get("order") == "desc":
        items = items[::-1]
    after = query.get("after")
    if after:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit_text = query.get("limit", "")
    limit = min(int(limit_text), _MAX_PAGE) if limit_text.isdigit() else _PAGE
    page = items[:limit]
    answer = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return web.json_response(answer)


def _not_found(request: web.Request) -> web.Response:
    message = f"Chat completion with id '{request.match_info['id']}' not found."
    return web.json_response(error_body(message, "invalid_request_error"), status=404)
