"""Realtime events on the wire: a cheap read of the type, and the few the router writes.

Every frame of a session passes through the relay unchanged. The relay reads only
its `type`, from the start of the text: OpenAI's servers and the openai SDK put it
first (`{"type":"response.output_audio.delta",...}`), so a regular expression
anchored at the start finds it in well under a microsecond and an audio payload is
never decoded. A frame whose type is not first is parsed in full once to find it
(correct, just slower). Only the events in `CLIENT_PARSED` and `SERVER_PARSED` are
decoded in full: the ones that change the session's configuration or conversation,
carry usage, errors or rate limits.

A frame that is not a JSON object with a string `type` is refused (the gateway
answers an `error` event and closes 1003). The check is cheap on purpose: the
first non-blank character must be `{` and the last `}`; the body of an audio
append is not validated, which is the upstream's job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_TYPE_AT_START = re.compile(r'\s*\{\s*"type"\s*:\s*"([^"\\]{1,200})"')
_DELTA_KEY = '"delta":'
#: a delta event's `response_id` (a string value cannot hold an unescaped quote, so the
#: key is found only where it is one)
_RESPONSE_ID = re.compile(r'"response_id"\s*:\s*"([^"\\]{1,256})"')
_COMPACT = '{"type":"'
_SPACED = '{"type": "'

#: client events the router decodes: only the configuration (items, truncations and
#: deletions are learned from the server's acknowledgements, which carry them whole)
CLIENT_PARSED: frozenset[str] = frozenset({"session.update"})
#: client events that end what the input buffer holds (kept until the upstream answers)
BUFFER_ENDS: frozenset[str] = frozenset({"input_audio_buffer.commit", "input_audio_buffer.clear"})

#: server events the router decodes: items, usage, errors, rate limits
SERVER_PARSED: frozenset[str] = frozenset(
    {
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.created",
        "response.done",
        "rate_limits.updated",
        "error",
    }
)

AUDIO_DELTA = "response.output_audio.delta"
#: a function call's arguments: a response's output, not timed
ARGUMENTS_DELTA = "response.function_call_arguments.delta"
#: the first text of a committed turn's transcript (timed, not decoded)
TRANSCRIPT_DELTA = "conversation.item.input_audio_transcription.delta"
#: deltas that count as the first text of a response
TEXT_DELTAS: frozenset[str] = frozenset(
    {"response.output_text.delta", "response.output_audio_transcript.delta"}
)
#: the deltas of a response's output that the relay times or counts
OUTPUT_DELTAS: frozenset[str] = TEXT_DELTAS | {AUDIO_DELTA}


def sniff(text: str) -> str | None:
    """The event's `type`, or None when the frame is not a JSON object with one."""
    # The shapes OpenAI, the SDK and json.dumps write, read with two string searches
    # (the regular expression cost ~3 % of the relay's instructions).
    start = 9 if text.startswith(_COMPACT) else 10 if text.startswith(_SPACED) else 0
    if start and text[-1] == "}":
        end = text.find('"', start, start + 201)
        if end > start and text.find("\\", start, end) < 0:
            return text[start:end]
    match = _TYPE_AT_START.match(text)
    if match is not None:
        if text[-1] == "}" or text.rstrip()[-1:] == "}":
            return match.group(1)
        return None
    event = parse(text)
    if event is None:
        return None
    kind = event.get("type")
    return kind if isinstance(kind, str) else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: strict JSON: no NaN or Infinity (not JSON: a configuration carrying one is not
#: recorded, so never replayed to another target)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def parse(text: str) -> dict[str, Any] | None:
    """The whole event as a dict, or None if it is not a JSON object the router can
    use (not JSON, a NaN or an infinity, or nested past the decoder's depth guard): the
    frame still passes, unread, and the upstream answers it."""
    try:
        event = _DECODER.decode(text)
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


def delta_b64_chars(text: str) -> int:
    """Length of the base64 `delta` of an audio delta event, found without decoding.

    Base64 has no quotes or backslashes, so the value ends at the next quote.
    """
    start = text.find(_DELTA_KEY)
    if start < 0:
        return 0
    start = text.find('"', start + len(_DELTA_KEY))
    if start < 0:
        return 0
    end = text.find('"', start + 1)
    return max(end - start - 1, 0)


def response_id_of(text: str) -> str | None:
    """The `response_id` of a delta event, found without decoding it (None: none)."""
    match = _RESPONSE_ID.search(text)
    return match.group(1) if match is not None else None


def b64_bytes(chars: int) -> int:
    """Decoded size of `chars` base64 characters (padding ignored: off by at most 2)."""
    return chars * 3 // 4


def rate_limit_headers(rate_limits: Any) -> dict[str, str]:
    """A `rate_limits.updated` event's limits as the `x-ratelimit-*` headers they mirror,
    so one parser reads both."""
    headers: dict[str, str] = {}
    if not isinstance(rate_limits, list):
        return headers
    for limit in rate_limits:
        if not isinstance(limit, Mapping) or limit.get("name") not in ("requests", "tokens"):
            continue
        name = limit["name"]
        for field in ("limit", "remaining"):
            if isinstance(limit.get(field), int | float):
                headers[f"x-ratelimit-{field}-{name}"] = str(limit[field])
        if isinstance(limit.get("reset_seconds"), int | float):
            headers[f"x-ratelimit-reset-{name}"] = f"{limit['reset_seconds']}s"
    return headers


def dumps(event: Mapping[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def error_event(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    event_id: str | None = None,
) -> str:
    """An `error` server event in OpenAI's shape."""
    error: dict[str, Any] = {"type": type, "code": code, "message": message, "param": None}
    error["event_id"] = event_id
    return dumps({"type": "error", "event_id": "event_ft_error", "error": error})


def failed_response_done(response_id: str | None, code: str, message: str) -> str:
    """A `response.done` that ends a response with status `failed`."""
    response: dict[str, Any] = {
        "object": "realtime.response",
        "id": response_id,
        "status": "failed",
        "status_details": {
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        },
        "output": [],
        "usage": None,
    }
    return dumps({"type": "response.done", "event_id": "event_ft_failed", "response": response})


def names_event(frame: str, event_id: str) -> bool:
    """Whether the client event `frame` carries `event_id` (an `error`'s `event_id`
    names the client event it refuses; a quoted match, not a prefix of another id)."""
    return f'"{event_id}"' in frame


def truncated_event(item_id: str, content_index: object, audio_end_ms: int) -> str:
    """A `conversation.item.truncated`, as the upstream answers a client's truncate."""
    return dumps(
        {
            "type": "conversation.item.truncated",
            "event_id": "event_ft_truncated",
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }
    )
