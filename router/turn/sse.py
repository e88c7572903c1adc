"""Server-sent events (the WHATWG HTML spec's event-stream format) over bytes, for
OpenAI-style streams.

`Framer` cuts the byte stream into complete events however the upstream frames
them: lines ending in LF, CRLF or CR alone (normalised to LF), a CRLF split across
two reads, `data:` with or without its space, comments (`: OPENROUTER PROCESSING`).
An event larger than `max_event` bytes is an error (`EventTooLarge`), so an upstream
that never sends a blank line cannot grow a buffer without bound.

Two speeds. Before the commit point each event is parsed as JSON (there are only a
few: the role chunk, Azure's prompt-filter chunk, perhaps an empty delta) to find
the first token the user sees and to reject malformed frames. After it, the relay
searches the bytes of each block of events for the rare markers it must act on
(`"usage":{`, `"error"`, `[DONE]`, an answer after reasoning) and parses only the
events that hold one, so `[DONE]` and error events are found however they are
framed, and content that merely mentions them is not mistaken for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from router import jsontext
from router.vocabulary import FirstTokenKind

DONE = b"data: [DONE]\n\n"
_USAGE = b'"usage":{'
_USAGE_SPACED = b'"usage": {'
_ERROR = b'"error"'
_ERROR_EVENT = b"event:"
_DONE_MARK = b"[DONE]"
#: bytes an answer delta holds (content, tool or function call, completion text)
_ANSWER_MARKS = (b'"content":"', b'"content": "', b'"tool_calls"', b'"function_call"', b'"text"')


class Frame(Enum):
    #: the first token the user sees (content, reasoning, refusal, audio, a tool call)
    TOKEN = "token"
    #: the turn is over without any token (finish_reason set, empty answer): commit too
    FINISH = "finish"
    #: role chunk, keep-alive comment, empty delta, usage: pass on, keep waiting
    OTHER = "other"
    DONE = "done"
    ERROR = "error"


class EventTooLarge(ValueError):
    """An event grew past the configured bound without ending."""


class Framer:
    """Complete SSE events out of a byte stream, with line ends normalised to LF."""

    __slots__ = ("_buffer", "_skip_lf", "max_event")

    def __init__(self, max_event: int, rest: bytes = b"") -> None:
        self.max_event = max_event
        self._buffer = rest
        #: the last read ended in a CR (a line end already): an LF first in the next
        #: read is the other half of that CRLF
        self._skip_lf = False

    def feed(self, chunk: bytes) -> bytes:
        """The complete events the buffer now holds (b"" if none yet)."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if chunk.find(b"\r") >= 0:  # not `in`: see `scan`
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            if len(buffer) > self.max_event:
                self._overflow()
            return b""
        rest = self._buffer = buffer[cut + 2 :]
        if len(rest) > self.max_event:
            self._overflow()
        return buffer[: cut + 2]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buffer

    def _overflow(self) -> None:
        size = len(self._buffer)
        self._buffer = b""
        raise EventTooLarge(f"an SSE event grew past {self.max_event} bytes ({size} so far)")


def split_events(block: bytes) -> list[bytes]:
    """The events of a block of complete, LF-normalised events, each ending in a blank line."""
    events: list[bytes] = []
    start = 0
    while (end := block.find(b"\n\n", start)) >= 0:
        events.append(block[start : end + 2])
        start = end + 2
    return events


def event_data(event: bytes) -> bytes | None:
    """The joined `data:` payload of one event, or None for comments and empty events."""
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(parts) if parts else None


def _event_type(event: bytes) -> bytes | None:
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip()
    return None


class MalformedFrame(ValueError):
    """A frame that is not an OpenAI chunk."""


def _nonempty(value: Any) -> bool:
    return bool(value) if isinstance(value, str | list | dict) else value is not None


def token_kind(choice: dict[str, Any]) -> FirstTokenKind | None:
    """What the user sees first in one choice of a chunk, if anything."""
    if _nonempty(choice.get("text")):
        return "answer"
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return None
    if (
        _nonempty(delta.get("content"))
        or _nonempty(delta.get("tool_calls"))
        or _nonempty(delta.get("function_call"))
    ):
        return "answer"
    if _nonempty(delta.get("reasoning_content")) or _nonempty(delta.get("reasoning")):
        return "reasoning"
    if _nonempty(delta.get("refusal")):
        return "refusal"
    if _nonempty(delta.get("audio")):
        return "audio"
    return None


def is_error(event: bytes, chunk: Any) -> bool:
    """An error event: `event: error`, a top-level `error`, or vLLM's `object: error`."""
    if isinstance(chunk, dict) and (
        chunk.get("error") is not None or chunk.get("object") == "error"
    ):
        return True
    return _event_type(event) == b"error"


def classify(event: bytes) -> tuple[Frame, FirstTokenKind | None, dict[str, Any] | None]:
    """What one pre-commit event means (parsed as JSON): the frame, the kind of its
    first token, and the parsed chunk."""
    data = event_data(event)
    if data is None:
        return Frame.OTHER, None, None
    if data.strip() == b"[DONE]":
        return Frame.DONE, None, None
    try:
        chunk = jsontext.loads(data)
    except ValueError as exc:
        if _event_type(event) == b"error":
            return Frame.ERROR, None, {"error": {"message": data[:200].decode(errors="replace")}}
        raise MalformedFrame(f"invalid JSON in an SSE frame: {data[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise MalformedFrame("an SSE frame is not a JSON object")
    if is_error(event, chunk):
        return Frame.ERROR, None, chunk
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise MalformedFrame("an SSE frame has no 'choices' list")
    finished = False
    first: FirstTokenKind | None = None
    for choice in choices:
        if not isinstance(choice, dict):
            raise MalformedFrame("a choice is not a JSON object")
        kind = token_kind(choice)
        if kind == "answer":
            return Frame.TOKEN, kind, chunk
        first = first or kind
        finished = finished or choice.get("finish_reason") is not None
    if first is not None:
        return Frame.TOKEN, first, chunk
    return (Frame.FINISH if finished else Frame.OTHER), ("finish" if finished else None), chunk


@dataclass(slots=True)
class Scan:
    """What the bytes of a post-commit block hold that the relay must act on."""

    has_usage: bool
    has_error: bool
    has_done: bool


def parsed_event(event: bytes) -> Any:
    """An event's JSON data, or None (no data line, or not JSON)."""
    data = event_data(event)
    if data is None:
        return None
    try:
        return jsontext.loads(data)
    except ValueError:
        return None


#: what most blocks hold: nothing to act on (shared by every dialect's `scan`, which
#: returns this very object then; a `Scan` is never changed)
NOTHING = Scan(has_usage=False, has_error=False, has_done=False)


def scan(block: bytes) -> Scan:
    """Bytes searches first (about a microsecond per event); only an event holding a
    marker is parsed, to be sure.

    `data.find(mark) >= 0`, not `mark in data`: on Python 3.11 `bytes.__contains__`
    first tries the needle as an integer and formats a TypeError message it then
    throws away (~2,000 instructions a search, 3 % of a turn's before this)."""
    has_usage = block.find(_USAGE) >= 0 or block.find(_USAGE_SPACED) >= 0
    has_error = block.find(_ERROR) >= 0 or block.find(_ERROR_EVENT) >= 0  # _marked_error
    has_done = block.find(_DONE_MARK) >= 0
    if not (has_usage or has_error or has_done):
        return NOTHING
    if has_error:
        marked = (e for e in split_events(block) if _marked_error(e))
        has_error = any(is_error(e, parsed_event(e)) for e in marked)
    if has_done:
        has_done = any(
            (data := event_data(e)) is not None and data.strip() == b"[DONE]"
            for e in split_events(block)
            if e.find(_DONE_MARK) >= 0
        )
    return Scan(has_usage, has_error, has_done)


def _marked_error(event: bytes) -> bool:
    return event.find(_ERROR) >= 0 or event.find(_ERROR_EVENT) >= 0


def first_answer_in(block: bytes) -> bool:
    """Whether a block holds an answer token (content or a tool call): after a commit on
    reasoning, this finds the time to first answer. Parses only marked events."""
    if not any(block.find(mark) >= 0 for mark in _ANSWER_MARKS):
        return False
    for event in split_events(block):
        chunk = parsed_event(event)
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if isinstance(choices, list) and any(
            isinstance(c, dict) and token_kind(c) == "answer" for c in choices
        ):
            return True
    return False


def usage_of(event: bytes) -> tuple[dict[str, Any] | None, bool]:
    """(usage, usage_only) of one event; only an event that mentions usage is parsed.
    Groq's `x_groq.usage` counts when there is no top-level usage."""
    if event.find(_USAGE) < 0 and event.find(_USAGE_SPACED) < 0:
        return None, False
    chunk = parsed_event(event)
    if not isinstance(chunk, dict):
        return None, False
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        groq = chunk.get("x_groq")
        usage = groq.get("usage") if isinstance(groq, dict) else None
        if not isinstance(usage, dict):
            return None, False
        return usage, False
    return usage, chunk.get("choices") == []


def error_event(
    message: str, type_: str = "upstream_error", code: str = "stream_interrupted"
) -> bytes:
    """An OpenAI-shaped error as one SSE event (what the `openai` SDK raises on)."""
    body = {"error": {"message": message, "type": type_, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
