"""The Responses API's stream (`POST /v1/responses`, `stream: true`), as a `Dialect`.

A stream is a sequence of typed events, each framed `event: <type>` + `data: {...}`
(OpenAI and vLLM both write the `event:` line; only `data` is relied on here), with
a `sequence_number` from 0:

    response.created, response.in_progress        (before any token: no commit)
    response.output_item.added, response.content_part.added
    response.output_text.delta ...                (the commit point: the first delta)
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed | response.incomplete | response.failed   (the end; usage)

The commit point is the first non-empty delta the user sees: output text, a function
(or custom tool) call's arguments, a reasoning summary or reasoning text (vLLM's
reasoning parser streams `response.reasoning_text.delta`), a refusal, audio. A stream
that ends without any (`response.completed` of an empty answer) commits at its end;
an `error` or `response.failed` before it fails over. The response's id is in
`response.created`, which is parsed before the commit point anyway.

After the commit point a broken stream ends with an `error` event and a
`response.failed` whose response is the one `response.created` announced, failed.
The `error` event carries `code`, `message` and `param` at its top level, as
openai-python's `ResponseErrorEvent` has them, and the same fields nested under
`error`, as OpenAI's servers send them (openai/openai-dotnet issue 881): clients
that read either shape find the message, and openai-python raises `APIError` on it
as it does for a broken chat stream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.turn.dialect import Classified, Tokens, Whole, count, detail_count
from router.turn.sse import (
    Frame,
    MalformedFrame,
    Scan,
    event_data,
    parsed_event,
    split_events,
)
from router.vocabulary import FirstTokenKind

#: delta events, and what the user sees in them
DELTAS: Mapping[str, FirstTokenKind] = {
    "response.output_text.delta": "answer",
    "response.function_call_arguments.delta": "answer",
    "response.custom_tool_call_input.delta": "answer",
    "response.reasoning_summary_text.delta": "reasoning",
    "response.reasoning_text.delta": "reasoning",
    "response.refusal.delta": "refusal",
    "response.audio.delta": "audio",
}
#: the events that end a stream, and the ones of them that carry the usage
ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
FAILURES = frozenset({"error", "response.failed"})

_USAGE_MARKS = (b'"usage":{', b'"usage": {')
_ERROR_MARKS = (b'"type":"error"', b'"type": "error"', b"event: error", b"response.failed")
_END_MARKS = (b"response.completed", b"response.incomplete", b"response.failed", b"[DONE]")
_ANSWER_MARKS = (
    b"response.output_text.delta",
    b"response.function_call_arguments.delta",
    b"response.custom_tool_call_input.delta",
)


def _type(parsed: Any) -> str | None:
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    return kind if isinstance(kind, str) else None


def _marked(block: bytes, marks: tuple[bytes, ...], types: frozenset[str]) -> bool:
    """Whether an event of `block` that holds one of `marks` is of one of `types`."""
    if not any(mark in block for mark in marks):
        return False
    for event in split_events(block):
        if any(mark in event for mark in marks):
            data = event_data(event)
            if data is not None and data.strip() == b"[DONE]":
                if "[DONE]" in types:
                    return True
                continue
            if _type(parsed_event(event)) in types:
                return True
    return False


def _frame(kind: str, payload: Mapping[str, Any]) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def created_response(head: bytes) -> dict[str, Any] | None:
    """The response object `response.created` announced, from a stream's first bytes."""
    for event in split_events(head):
        parsed = parsed_event(event)
        if _type(parsed) == "response.created" and isinstance(parsed.get("response"), dict):
            response: dict[str, Any] = parsed["response"]
            return response
    return None


def failure_events(message: str, response: Mapping[str, Any] | None, sequence: int) -> bytes:
    """`error` and `response.failed`, numbered from `sequence`."""
    fields = {"code": "stream_interrupted", "message": message, "param": None}
    error = {
        "type": "error",
        **fields,
        "sequence_number": sequence,
        "error": {"type": "upstream_error", **fields},
    }
    failed = {
        **(response or {"object": "response", "output": []}),
        "status": "failed",
        "error": {"code": "server_error", "message": message},
    }
    return _frame("error", error) + _frame(
        "response.failed",
        {"type": "response.failed", "response": failed, "sequence_number": sequence + 1},
    )


class ResponsesDialect:
    """`POST /v1/responses` streams and bodies."""

    error_ends = False  # `error` is followed by `response.failed`, or the stream's end
    end_marker = "response.completed"

    def classify(self, event: bytes) -> Classified:
        data = event_data(event)
        if data is None:
            return Frame.OTHER, None, None
        if data.strip() == b"[DONE]":
            return Frame.DONE, None, None
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise MalformedFrame(f"invalid JSON in an SSE frame: {data[:80]!r}") from exc
        kind = _type(parsed)
        if kind is None:
            if isinstance(parsed, dict) and parsed.get("error") is not None:
                return Frame.ERROR, None, parsed  # a chat-style error event
            raise MalformedFrame("a Responses event has no 'type'")
        if kind in FAILURES:
            return Frame.ERROR, None, parsed
        token = DELTAS.get(kind)
        if token is not None:
            delta = parsed.get("delta")
            return (Frame.TOKEN if delta else Frame.OTHER), token if delta else None, parsed
        if kind in ENDS:
            return Frame.FINISH, "finish", parsed
        return Frame.OTHER, None, parsed

    def response_id(self, parsed: dict[str, Any]) -> str | None:
        if parsed.get("type") != "response.created":
            return None
        response = parsed.get("response")
        found = response.get("id") if isinstance(response, dict) else None
        return found if isinstance(found, str) else None

    def scan(self, block: bytes) -> Scan:
        return Scan(
            has_usage=any(mark in block for mark in _USAGE_MARKS),
            has_error=_marked(block, _ERROR_MARKS, FAILURES),
            has_done=_marked(block, _END_MARKS, ENDS | {"[DONE]"}),
        )

    def usage_of(self, event: bytes) -> tuple[dict[str, Any] | None, bool]:
        if not any(mark in event for mark in _USAGE_MARKS):
            return None, False
        parsed = parsed_event(event)
        response = parsed.get("response") if _type(parsed) in ENDS else None
        usage = response.get("usage") if isinstance(response, dict) else None
        return (usage if isinstance(usage, dict) else None), False

    def first_answer_in(self, block: bytes) -> bool:
        if not any(mark in block for mark in _ANSWER_MARKS):
            return False
        for event in split_events(block):
            parsed = parsed_event(event)
            if DELTAS.get(_type(parsed) or "") == "answer" and parsed.get("delta"):
                return True
        return False

    def whole(self, target: str, body: bytes) -> Whole:
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise MalformedFrame("response is not JSON") from exc
        if not isinstance(parsed, dict) or not (
            parsed.get("object") == "response" or "output" in parsed
        ):
            raise MalformedFrame("response is not a Responses object")
        usage = parsed.get("usage")
        found = parsed.get("id")
        return Whole(
            usage if isinstance(usage, dict) else None, found if isinstance(found, str) else None
        )

    def tokens(self, usage: Mapping[str, Any]) -> Tokens:
        return Tokens(
            count(usage.get("input_tokens")),
            count(usage.get("output_tokens")),
            detail_count(usage, "input_tokens_details", "cached_tokens"),
            detail_count(usage, "output_tokens_details", "reasoning_tokens"),
        )

    def interrupted(self, message: str, head: bytes, events: int) -> bytes:
        return failure_events(message, created_response(head), events)


RESPONSES = ResponsesDialect()
