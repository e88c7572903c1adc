"""From a client's bytes to a typed turn request, with OpenAI-style 400s.

Only what routing needs is read: the model (the route), stream flags, token
estimates and the conversation key. The body is otherwise forwarded unchanged
(re-serialised once, so what a target gets is always valid JSON: a number JSON
cannot carry, `1e999` or `NaN`, is a 400 here).

Two steps, so the gateway can check the route and the client's key between them:
`decode` (C-speed `json.loads`) and `validate` (the walk: shape limits, estimates).
Both are bounded by `server.limits`; gateway/admission.py decides whether they run
on the event loop (small bodies) or in a worker process (large ones).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from router import jsontext
from router.edge import LimitsConfig
from router.errors import BadRequest
from router.gateway.prescan import too_many_messages
from router.gateway.shapes import ResponsesFields, embeddings_tokens, responses_fields
from router.upstream.base import Endpoint
from router.upstream.body import ClientBody
from router.values import value

#: rough characters per token for estimates before the target counts for real
CHARS_PER_TOKEN = 4
#: no model writes more in one turn; larger values are mistakes (or attacks)
MAX_OUTPUT_TOKENS = 2**31 - 1
DEFAULT_LIMITS = LimitsConfig()


def _no_constants(name: str) -> Any:
    raise BadRequest(f"the request body contains {name}, which is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the number {text[:40]} is too large for a JSON number")
    return value


@value
class ParsedRequest:
    endpoint: Endpoint
    body: ClientBody
    model: str
    stream: bool
    client_wants_usage: bool
    prompt_tokens: int
    max_output_tokens: int | None
    session_key: str | None
    #: Responses: the stored state the request builds on (it lives on one target), and
    #: whether the answer is to be stored (`store`: true unless false for Responses,
    #: false unless true for chat)
    previous_response_id: str | None = None
    conversation: str | None = None
    store: bool = True


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest past `limit` levels (no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and "text" in p)
    return 0


def _check_messages(messages: list[Any], limits: LimitsConfig) -> None:
    if len(messages) > limits.max_messages:
        raise BadRequest(
            f"'messages' has {len(messages)} items; the limit is {limits.max_messages}"
        )
    parts = 0
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("each message must be an object with a 'role'")
        content = message.get("content")
        if not isinstance(content, list):
            continue
        parts += len(content)
        if parts > limits.max_content_parts:
            raise BadRequest(
                f"the messages have over {limits.max_content_parts} content parts in all"
            )
        for part in content:
            if isinstance(part, dict) and "text" in part and not isinstance(part["text"], str):
                raise BadRequest("a content part's 'text' must be a string")


def _estimate_prompt_tokens(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    if endpoint == "chat":
        messages = body.get("messages", [])
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return max(1, chars // CHARS_PER_TOKEN + 4 * len(messages))
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return max(1, sum(len(p) if isinstance(p, str) else 1 for p in prompt) // CHARS_PER_TOKEN)
    return max(1, len(str(prompt)) // CHARS_PER_TOKEN)


def _session_key(endpoint: Endpoint, body: Mapping[str, Any], header: str | None) -> str | None:
    """x-session-id, else `user`, else a hash of the conversation's opening messages."""
    if header:
        return "h:" + header[:200]
    user = body.get("user")
    if isinstance(user, str) and user:
        return "u:" + user[:200]
    if endpoint != "chat":
        return None
    messages = body.get("messages", [])
    if len(messages) < 2:  # a first turn has no previous target to prefer
        return None
    opening = json.dumps(messages[:2], sort_keys=True, default=str).encode()
    return "p:" + hashlib.sha256(opening).hexdigest()[:24]


def _optional_int(body: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadRequest(f"'{name}' must be a non-negative integer")
        if value > MAX_OUTPUT_TOKENS:
            raise BadRequest(f"'{name}' is larger than {MAX_OUTPUT_TOKENS}")
        return value
    return None


def _endpoint_fields(
    endpoint: Endpoint, body: Mapping[str, Any], limits: LimitsConfig
) -> tuple[int, ResponsesFields | None]:
    """The estimated prompt tokens, and a Responses request's state fields."""
    if endpoint == "embeddings":
        return embeddings_tokens(body, limits), None
    if endpoint == "responses":
        fields = responses_fields(body, limits)
        return fields.prompt_tokens, fields
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("missing required field 'messages' (a non-empty list)")
        _check_messages(messages, limits)
    elif not isinstance(body.get("prompt"), str | list):
        raise BadRequest("missing required field 'prompt'")
    return _estimate_prompt_tokens(endpoint, body), None


#: one decoder for every body (`json.loads` with options builds a new one per call);
#: it decodes bytes as `json.loads` does (`jsontext.text_of`)
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)


def decode(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400. C-speed: no walk of the tree here."""
    try:
        body = _DECODER.decode(jsontext.text_of(raw))
    except RecursionError as exc:
        raise BadRequest("the request body nests too deeply") from exc
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError too
        raise BadRequest("the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def validate(
    endpoint: Endpoint,
    body: dict[str, Any],
    raw: bytes,
    session_header: str | None,
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> ParsedRequest:
    """The walk: shape limits, the fields routing reads, the body to forward."""
    # Nesting needs brackets: count them (in C) before walking the tree (in Python).
    if raw.count(b"{") + raw.count(b"[") > limits.max_depth and _deeper_than(
        body, limits.max_depth
    ):
        raise BadRequest(f"the request body nests deeper than {limits.max_depth} levels")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("missing required field 'model' (a string)")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be a boolean")
    prompt_tokens, responses = _endpoint_fields(endpoint, body, limits)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object")
    # Only chat and completions have a usage chunk to ask for (Responses always end
    # with their usage; OpenAI refuses `stream_options.include_usage` there).
    asks_usage = endpoint in ("chat", "completions")
    wants_usage = bool(asks_usage and stream and options and options.get("include_usage") is True)
    return ParsedRequest(
        endpoint=endpoint,
        body=ClientBody.of(body, stream and asks_usage),
        model=model,
        stream=stream,
        client_wants_usage=wants_usage,
        prompt_tokens=prompt_tokens,
        max_output_tokens=_optional_int(
            body, "max_completion_tokens", "max_tokens", "max_output_tokens"
        ),
        session_key=_session_key(endpoint, body, session_header),
        previous_response_id=responses.previous_response_id if responses else None,
        conversation=responses.conversation if responses else None,
        store=responses.store if responses else _chat_store(endpoint, body),
    )


def _chat_store(endpoint: Endpoint, body: Mapping[str, Any]) -> bool:
    """A chat request's `store` (a boolean; false unless given)."""
    store = body.get("store") if endpoint == "chat" else None
    if store is None:
        return False
    if not isinstance(store, bool):
        raise BadRequest("'store' must be a boolean")
    return store


def parse_request(
    endpoint: Endpoint,
    raw: bytes,
    session_header: str | None,
    limits: LimitsConfig = DEFAULT_LIMITS,
) -> ParsedRequest:
    """`decode` then `validate` (what a parse worker runs, and tests). A chat body
    whose `messages` are over the limit is refused before the parse, after at most
    `limits.max_messages` items."""
    if endpoint == "chat":
        too_many_messages(raw, limits)
    return validate(endpoint, decode(raw), raw, session_header, limits)
