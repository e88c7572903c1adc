"""Anthropic's Messages API on the wire, for the simulator in `anthropic.py`: the
error bodies, the SSE events of a stream (`event:` lines exactly as Anthropic
sends them) and the JSON of a whole answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Anthropic's error `type` for each HTTP status it uses
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class Answer:
    """One answer: its identity, its token counts and its text, token by token."""

    model: str
    input_tokens: int
    output_tokens: int
    stop_reason: str
    message_id: str
    texts: list[str] = field(default_factory=list)


def error_body(status: int, message: str) -> bytes:
    kind = ERROR_TYPES.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Whitespace-separated words of the system prompt and every text block."""

    def words(content: Any) -> int:
        if isinstance(content, str):
            return len(content.split())
        if isinstance(content, list):
            return sum(words(b.get("text", "")) for b in content if isinstance(b, dict))
        return 0

    messages = body.get("messages")
    total = words(body.get("system", ""))
    if isinstance(messages, list):
        total += sum(words(m.get("content")) for m in messages if isinstance(m, dict))
    return max(1, total)


def message(a: Answer) -> dict[str, Any]:
    """The whole answer, as a non-streaming `POST /v1/messages` returns it."""
    return {
        "id": a.message_id,
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [{"type": "text", "text": "".join(a.texts)}],
        "stop_reason": a.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
    }


def opening(a: Answer) -> bytes:
    """What a stream sends before its first token: message_start, content_block_start, ping."""
    start: dict[str, Any] = {
        "id": a.message_id,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": a.model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": 1},
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return (
        _sse("message_start", {"type": "message_start", "message": start})
        + _sse("content_block_start", block)
        + _sse("ping", {"type": "ping"})
    )


def text_delta(text: str) -> bytes:
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }
    return _sse("content_block_delta", delta)


def error_event(message: str) -> bytes:
    """A mid-stream `event: error` (Anthropic sends `overloaded_error` this way)."""
    return _sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": message}}
    )


def closing(a: Answer) -> bytes:
    """What a stream sends after its last token: content_block_stop, message_delta, message_stop."""
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": a.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": a.output_tokens},
    }
    return (
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _sse("message_delta", delta)
        + _sse("message_stop", {"type": "message_stop"})
    )
