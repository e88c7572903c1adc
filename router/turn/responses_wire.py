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
`response.created`.

What is parsed, and what is read from bytes: `response.created` and
`response.completed` repeat the whole response (the request's instructions and
tools: kilobytes for an agent), and a stream has ~1.4 events per token, so the
events are typed from their compact JSON where its layout makes that certain (`type`
first, as OpenAI writes it, or last, as vLLM's pydantic models do; `sniffed_type`),
and parsed otherwise. Before the commit point `response.created` gives its id from
its anchored head, the `*.added`/`in_progress` events are relayed unparsed (a
malformed one reaches the client rather than failing over), and a delta is parsed
(is it empty?). After it a block costs four bytes searches; an event holding a
marker is typed, and the final event's usage is parsed from its tail.

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
import re
from collections.abc import Mapping
from typing import Any

from router import jsontext
from router.turn.dialect import Classified, Tokens, Whole, count, detail_count, last_usage
from router.turn.sse import (
    NOTHING,
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
_ANSWER_MARKS = (
    b"response.output_text.delta",
    b"response.function_call_arguments.delta",
    b"response.custom_tool_call_input.delta",
)
#: bytes every event the relay acts on after the commit point holds: an end
#: (`response.completed`, `response.incomplete`, `response.failed`), an `error`, `[DONE]`
_ACT_MARKS = (b"complete", b"failed", b"error", b"[DONE]")
#: the types that need nothing from their JSON before the commit point
_PASSING = frozenset(
    {
        "response.in_progress",
        "response.queued",
        "response.output_item.added",
        "response.content_part.added",
        "response.reasoning_summary_part.added",
    }
)
_TYPE_FIRST = b'{"type":"'
_TYPE_LAST = b',"type":"'
#: the id at the head of `response.created` (OpenAI: type, sequence number, then the
#: response, id first; vLLM: the response first, its type last): anchored, so the
#: structure around it is certain
_CREATED_ID = re.compile(
    rb'\{(?:"type":"response\.created",(?:"sequence_number":\d+,)?)?"response":\{"id":"([^"\\]+)"'
)


def _type(parsed: Any) -> str | None:
    kind = parsed.get("type") if isinstance(parsed, dict) else None
    return kind if isinstance(kind, str) else None


def _holds(block: bytes, marks: tuple[bytes, ...]) -> bool:
    # `find`, not `in`: CPython 3.11's `bytes.__contains__` first tries its argument as
    # an int and formats a TypeError it then drops (~2 microseconds a test). A loop,
    # not `any()` over a generator (a frame more per call).
    for mark in marks:  # noqa: SIM110
        if block.find(mark) >= 0:
            return True
    return False


def sniffed_type(data: bytes) -> str | None:
    """An event's `type` read from its compact JSON without parsing it: the first key
    (OpenAI writes it first) or the last (vLLM's pydantic models write fields in
    alphabetical order). An unescaped quote cannot occur inside a JSON string, so the
    key found there is the object's own. None when neither holds: parse instead."""
    if data.startswith(_TYPE_FIRST):
        end = data.find(b'"', 9)
        head = data[9:end]
        if end > 9 and data[end + 1 : end + 2] in (b",", b"}") and head.find(b"\\") < 0:
            return head.decode("ascii", "replace")
        return None
    if data.endswith(b'"}'):
        start = data.rfind(_TYPE_LAST)
        tail = data[start + 9 : -2] if start > 0 else b""
        if tail and tail.find(b'"') < 0 and tail.find(b"\\") < 0:
            return tail.decode("ascii", "replace")
    return None


def typed_event(event: bytes) -> tuple[str | None, Any, bool]:
    """(type, parsed JSON or None, whether it was parsed) of one event: compact JSON
    whose type can be read from its bytes is not parsed."""
    data = event_data(event)
    if data is None:
        return None, None, False
    kind = sniffed_type(data)
    if kind is not None:
        return kind, None, False
    try:
        parsed = jsontext.loads(data)
    except ValueError:
        return None, None, True
    return _type(parsed), parsed, True


def _acted_on(block: bytes) -> Scan:
    """The slow path of `scan`: each event that holds a marker is typed."""
    has_usage = has_error = has_done = False
    for event in split_events(block):
        if not _holds(event, _ACT_MARKS):
            continue
        data = event_data(event)
        if data is not None and data.strip() == b"[DONE]":
            has_done = True
            continue
        kind, parsed, _ = typed_event(event)
        if kind in ENDS:
            has_done = True
            has_usage = has_usage or _holds(event, _USAGE_MARKS)
        if kind in FAILURES or (
            kind is None and isinstance(parsed, dict) and parsed.get("error") is not None
        ):
            has_error = True  # a typeless `{"error": ...}` is chat's error event
    return Scan(has_usage, has_error, has_done)


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
        kind = sniffed_type(data)
        if kind in _PASSING:
            return Frame.OTHER, None, None  # relayed as it came; nothing in it is needed
        if kind == "response.created":
            # It repeats the request's instructions and tools: only its id is read.
            found = _CREATED_ID.match(data)
            if found is not None:
                rid = found.group(1).decode("ascii", "replace")
                return Frame.OTHER, None, {"type": kind, "response": {"id": rid}}
        if data.strip() == b"[DONE]":
            return Frame.DONE, None, None
        try:
            parsed = jsontext.loads(data)
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
        # Most blocks are deltas: four bytes searches (`_ACT_MARKS`), nothing parsed.
        if (
            block.find(b"complete") < 0
            and block.find(b"failed") < 0
            and block.find(b"error") < 0
            and block.find(b"[DONE]") < 0
        ):
            return NOTHING
        return _acted_on(block)

    def usage_of(self, event: bytes) -> tuple[dict[str, Any] | None, bool]:
        if not _holds(event, _USAGE_MARKS):
            return None, False
        kind, parsed, was_parsed = typed_event(event)
        if not was_parsed:
            if kind not in ENDS:
                return None, False
            # The end event repeats the whole response (output, instructions, tools):
            # its usage comes last, so only that is parsed when it reads as one.
            usage = last_usage(event)
            if usage is not None and ("input_tokens" in usage or "output_tokens" in usage):
                return usage, False
            parsed = parsed_event(event)
        response = parsed.get("response") if _type(parsed) in ENDS else None
        usage = response.get("usage") if isinstance(response, dict) else None
        return (usage if isinstance(usage, dict) else None), False

    def first_answer_in(self, block: bytes) -> bool:
        if not _holds(block, _ANSWER_MARKS):
            return False
        for event in split_events(block):
            kind, parsed, was_parsed = typed_event(event)
            if DELTAS.get(kind or "") != "answer":
                continue
            if not was_parsed:
                parsed = parsed_event(event)
            if isinstance(parsed, dict) and parsed.get("delta"):
                return True
        return False

    def whole(self, target: str, body: bytes) -> Whole:
        try:
            parsed = jsontext.loads(body)
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
