"""OpenAI chat-completion stream frames, as an upstream sends them (tests only)."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, *, source: str = "c1"
) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return frame({"id": source, "object": "chat.completion.chunk", "choices": [choice]})


def role(source: str = "c1") -> bytes:
    return chunk({"role": "assistant", "content": ""}, source=source)


def content(text: str, source: str = "c1") -> bytes:
    return chunk({"content": text}, source=source)


def tool_call(source: str = "c1") -> bytes:
    function = {"name": "get_weather", "arguments": ""}
    call = {"index": 0, "id": "call_1", "type": "function", "function": function}
    return chunk({"tool_calls": [call]}, source=source)


def usage(prompt: int = 7, completion: int = 3) -> bytes:
    counts = {"prompt_tokens": prompt, "completion_tokens": completion}
    return frame({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": counts})


def error(message: str = "overloaded") -> bytes:
    return frame({"error": {"message": message, "type": "server_error", "code": None}})
