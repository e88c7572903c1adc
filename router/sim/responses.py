"""The Responses API as the simulator speaks it: the event stream, stored responses, and
their own endpoints (GET, DELETE, cancel, input items).

A stream is what OpenAI and vLLM send, in their order, each event framed
`event: <type>` + `data: {...}` with a `sequence_number` from 0:

    response.created, response.in_progress, response.output_item.added,
    response.content_part.added, response.output_text.delta (one per token),
    response.output_text.done, response.content_part.done, response.output_item.done,
    response.completed (or response.incomplete at max_output_tokens), with the usage

and no `data: [DONE]`. A fault's error event is an `error` event (its fields at the
top level and nested under `error`, as OpenAI sends it) and a `response.failed`.
Token `i` is `f"t{i} "`, as for chat. Every finished response is stored (unless
`store` is false) and can be read back, deleted, and built on with
`previous_response_id`; an unknown one is a 400 `previous_response_not_found`, as
OpenAI answers.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from router.sim.conversations import ConversationStore
from router.sim.wire import FinishReason, SimRequest, completion_text, error_body, estimate_tokens

#: stored responses kept per server (the oldest go first)
MAX_STORED = 10_000


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


class ResponseStore:
    """Stored responses by id, with the input items each was made from."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()  # ids unique across simulators
        self._ids = itertools.count(1)
        self._stored: OrderedDict[str, tuple[dict[str, Any], list[Any]]] = OrderedDict()
        self.conversations = ConversationStore()
        self._compactions = itertools.count(1)

    def new_id(self) -> str:
        return f"resp_{self._prefix}{next(self._ids):06d}"

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._stored

    def put(self, response: dict[str, Any], items: list[Any]) -> None:
        self._stored[response["id"]] = (response, items)
        while len(self._stored) > MAX_STORED:
            self._stored.popitem(last=False)

    def get(self, response_id: str) -> dict[str, Any] | None:
        found = self._stored.get(response_id)
        return found[0] if found is not None else None

    def delete(self, response_id: str) -> bool:
        return self._stored.pop(response_id, None) is not None

    def items(self, response_id: str) -> list[Any] | None:
        found = self._stored.get(response_id)
        return found[1] if found is not None else None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/responses/{id}", self._get)
        app.router.add_delete("/v1/responses/{id}", self._delete)
        app.router.add_post("/v1/responses/{id}/cancel", self._cancel)
        app.router.add_get("/v1/responses/{id}/input_items", self._input_items)
        app.router.add_post("/v1/responses/input_tokens", self._input_tokens)
        app.router.add_post("/v1/responses/compact", self._compact)
        self.conversations.add_routes(app)

    async def _get(self, request: web.Request) -> web.Response:
        found = self.get(request.match_info["id"])
        return web.json_response(found) if found is not None else _not_found(request)

    async def _delete(self, request: web.Request) -> web.Response:
        response_id = request.match_info["id"]
        if not self.delete(response_id):
            return _not_found(request)
        return web.json_response({"id": response_id, "object": "response", "deleted": True})

    async def _cancel(self, request: web.Request) -> web.Response:
        found = self.get(request.match_info["id"])
        if found is None:
            return _not_found(request)
        body = error_body("Only background responses can be cancelled.", "invalid_request_error")
        return web.json_response(body, status=400)

    async def _input_items(self, request: web.Request) -> web.Response:
        items = self.items(request.match_info["id"])
        if items is None:
            return _not_found(request)
        return web.json_response({"object": "list", "data": items, "has_more": False})

    async def _input_tokens(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None:
            return _invalid("the body must be a JSON object")
        missing = unknown_previous_id(body, self)
        if missing is not None:
            return web.json_response(missing, status=400)
        answer = {"object": "response.input_tokens", "input_tokens": _tokens(body)}
        return web.json_response(answer)

    async def _compact(self, request: web.Request) -> web.Response:
        """The user messages of the input, then one compaction item (its "encrypted"
        content is the rest, base64'd: nothing a test should read)."""
        body = await _body(request)
        if body is None or not isinstance(body.get("model"), str):
            return _invalid("`model` is required")
        missing = unknown_previous_id(body, self)
        if missing is not None:
            return web.json_response(missing, status=400)
        n = next(self._compactions)
        users = [i for i in input_items(body) if i.get("role") == "user"]
        compaction = {
            "id": f"cmp_{self._prefix}{n:06d}",
            "type": "compaction",
            "encrypted_content": base64.b64encode(json.dumps(body).encode()).decode(),
        }
        answer = {
            "id": f"resp_cmp_{self._prefix}{n:06d}",
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [*users, compaction],
            "usage": _usage(_tokens(body), 1),
        }
        return web.json_response(answer)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _tokens(body: Mapping[str, Any]) -> int:
    return estimate_tokens(json.dumps([body.get("instructions"), body.get("input")]))


def _invalid(message: str) -> web.Response:
    return web.json_response(error_body(message, "invalid_request_error"), status=400)


def _not_found(request: web.Request) -> web.Response:
    message = f"Response with id '{request.match_info['id']}' not found."
    return web.json_response(error_body(message, "invalid_request_error"), status=404)


def unknown_previous(sim: SimRequest, store: ResponseStore) -> dict[str, Any] | None:
    """OpenAI's 400 for a `previous_response_id` this server did not store, or None."""
    return unknown_previous_id(sim.body, store)


def unknown_previous_id(body: Mapping[str, Any], store: ResponseStore) -> dict[str, Any] | None:
    previous = body.get("previous_response_id")
    if previous is None or previous in store:
        return None
    body = error_body(
        f"Previous response with id '{previous}' not found.",
        "invalid_request_error",
        "previous_response_not_found",
    )
    body["error"]["param"] = "previous_response_id"
    return body


def input_items(body: Mapping[str, Any]) -> list[Any]:
    value = body.get("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    items = value if isinstance(value, list) else []
    return [
        {"type": "message", **i} if isinstance(i, dict) and "type" not in i else i for i in items
    ]


class ResponsesEncoder:
    """The events of one streamed response (and its whole body), for `SimServer`."""

    #: a Responses stream has no `data: [DONE]`
    done = b""

    def __init__(self, response_id: str, sim: SimRequest, store: ResponseStore) -> None:
        self._id = response_id
        self._sim = sim
        self._store = store
        self._seq = 0
        self._n = 0
        self._item = "msg_" + response_id.removeprefix("resp_")
        body = sim.body
        self._response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": sim.model,
            "output": [],
            "usage": None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True) is not False,
            "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "text": {"format": {"type": "text"}},
            "metadata": {},
        }
        conversation = body.get("conversation")
        if conversation is not None:
            cid = conversation.get("id") if isinstance(conversation, dict) else conversation
            self._response["conversation"] = {"id": cid}
        head = f'{{"type":"response.output_text.delta","item_id":"{self._item}",'
        self._delta_head = (
            b"event: response.output_text.delta\ndata: "
            + head.encode()
            + b'"output_index":0,"content_index":0,"logprobs":[],"delta":'
        )

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._seq}
        self._seq += 1
        data = json.dumps(payload, separators=(",", ":")).encode()
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _message(self, text: str, status: str) -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        return {
            "id": self._item,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part] if status == "completed" else [],
        }

    def role(self) -> bytes:
        """Everything before the first token."""
        item = self._message("", "in_progress")
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        common = {"item_id": self._item, "output_index": 0}
        return (
            self._event("response.created", response=self._response)
            + self._event("response.in_progress", response=self._response)
            + self._event("response.output_item.added", output_index=0, item=item)
            + self._event("response.content_part.added", **common, content_index=0, part=part)
        )

    def content(self, i: int) -> bytes:
        self._n += 1
        seq = self._seq
        self._seq += 1
        return self._delta_head + b'"t%d ","sequence_number":%d}\n\n' % (i, seq)

    def final(self, n: int, reason: FinishReason, prompt_tokens: int) -> dict[str, Any]:
        """The whole response after `n` tokens, stored unless `store` is false."""
        text = completion_text(n)
        response = {
            **self._response,
            "status": "incomplete" if reason == "length" else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if reason == "length" else None,
            "output": [self._message(text, "completed")],
            "usage": _usage(prompt_tokens, n),
        }
        if response["store"]:
            self._store.put(response, input_items(self._sim.body))
        conversation = self._response.get("conversation")
        if conversation is not None:
            conversations = self._store.conversations
            added = conversations.items_of(input_items(self._sim.body))
            conversations.extend(conversation["id"], [*added, *response["output"]])
        return response

    def finish(self, reason: FinishReason) -> bytes:
        n = self._n
        response = self.final(n, reason, self._sim.prompt_tokens)
        item = response["output"][0]
        part = item["content"][0]
        common = {"item_id": self._item, "output_index": 0}
        end = "response.incomplete" if reason == "length" else "response.completed"
        return (
            self._event("response.output_text.done", **common, content_index=0, text=part["text"])
            + self._event("response.content_part.done", **common, content_index=0, part=part)
            + self._event("response.output_item.done", output_index=0, item=item)
            + self._event(end, response=response)
        )

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return b""  # the usage is in `response.completed`

    def error_event(self, message: str) -> bytes:
        fields = {"code": "server_error", "message": message, "param": None}
        failed = {**self._response, "status": "failed", "error": fields}
        return self._event(
            "error", **fields, error={"type": "server_error", **fields}
        ) + self._event("response.failed", response=failed)

    def full(self, n: int, reason: FinishReason, prompt_tokens: int) -> dict[str, Any]:
        return self.final(n, reason, prompt_tokens)
