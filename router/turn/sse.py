"""Incremental SSE framing over bytes, for OpenAI-style streams.

Two speeds. Before the commit point each event is parsed as JSON (there are only a
few: the role chunk, perhaps an empty delta) to find the first content token and
to reject malformed frames. After it, the relay only cuts the byte stream at the
last complete event and searches the bytes for the rare events it must act on
(usage, error, [DONE]); no JSON is parsed per chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

DONE = b"data: [DONE]\n\n"
_USAGE = b'"usage":{'
_USAGE_SPACED = b'"usage": {'
_ERROR_EVENT = b'data: {"error"'


class Frame(Enum):
    #: carries the first content, a tool-call delta or completion text: commit here
    CONTENT = "content"
    #: the turn is over without content (finish_reason set, empty answer): commit too
    FINISH = "finish"
    #: role chunk, keep-alive comment, empty delta: pass on, keep waiting
    OTHER = "other"
    DONE = "done"
    ERROR = "error"


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete events (each ending in a blank line) and the incomplete rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    events: list[bytes] = []
    start = 0
    while (end := buffer.find(b"\n\n", start)) >= 0:
        events.append(buffer[start : end + 2])
        start = end + 2
    return events, buffer[start:]


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` payload of one event, or None for comments and empty events."""
    parts = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


class MalformedFrame(ValueError):
    """A frame that is not an OpenAI chunk."""


def classify(event: bytes) -> tuple[Frame, dict[str, Any] | None]:
    """What one pre-commit event means (parsed as JSON)."""
    data = event_data(event)
    if data is None:
        return Frame.OTHER, None
    if data.strip() == b"[DONE]":
        return Frame.DONE, None
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise MalformedFrame(f"invalid JSON in an SSE frame: {data[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise MalformedFrame("an SSE frame is not a JSON object")
    if "error" in chunk:
        return Frame.ERROR, chunk
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise MalformedFrame("an SSE frame has no 'choices' list")
    finished = False
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedFrame("a choice is not a JSON object")
        delta = choice.get("delta")
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return Frame.CONTENT, chunk
        if choice.get("text"):
            return Frame.CONTENT, chunk
        finished = finished or choice.get("finish_reason") is not None
    return (Frame.FINISH if finished else Frame.OTHER), chunk


@dataclass(slots=True)
class Scan:
    """What the bytes of a post-commit block hold that the relay must act on."""

    has_usage: bool
    has_error: bool
    has_done: bool


def scan(block: bytes) -> Scan:
    """Bytes searches only: about a microsecond per event."""
    return Scan(
        has_usage=_USAGE in block or _USAGE_SPACED in block,
        has_error=_ERROR_EVENT in block,
        has_done=DONE in block,
    )


def usage_of(event: bytes) -> tuple[dict[str, Any] | None, bool]:
    """(usage, usage_only) of one event; only an event that mentions usage is parsed."""
    if _USAGE not in event and _USAGE_SPACED not in event:
        return None, False
    data = event_data(event)
    if data is None:
        return None, False
    try:
        chunk = json.loads(data)
    except ValueError:
        return None, False
    if not isinstance(chunk, dict):
        return None, False
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None, False
    return usage, chunk.get("choices") == []


def error_event(
    message: str, type_: str = "upstream_error", code: str = "stream_interrupted"
) -> bytes:
    """An OpenAI-shaped error as one SSE event (what the `openai` SDK raises on)."""
    body = {"error": {"message": message, "type": type_, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
