"""The bodies of `POST /v1/responses` and `POST /v1/embeddings`: what routing reads.

As for chat (`request.py`), only what the router needs is checked; every other field
goes to the target unchanged, so a field OpenAI adds tomorrow passes through.

Responses: `input` (a string, or a list of items, counted against
`limits.max_messages`, their content parts against `limits.max_content_parts`),
`instructions`, `previous_response_id` or `conversation` (not both, as OpenAI
answers), `store`, `max_output_tokens`. Embeddings: `input` (a string, a list of
strings, a list of token ids, or a list of such lists; at most `limits.max_inputs`),
never streamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.edge import LimitsConfig
from router.errors import BadRequest

#: rough characters per token for estimates before the target counts for real
CHARS_PER_TOKEN = 4
#: response and conversation ids are short opaque tokens (`resp_...`, `conv_...`)
MAX_ID_CHARS = 256
#: the one type a token id has in a parsed body (`bool` is a subclass: not a token)
_INT = frozenset({int})


@dataclass(frozen=True, slots=True)
class ResponsesFields:
    """What a Responses request tells routing: where its state is, and its size."""

    prompt_tokens: int
    previous_response_id: str | None
    conversation: str | None
    store: bool


def _id(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise BadRequest(f"'{name}' must be an id (a string of at most {MAX_ID_CHARS} characters)")
    return value


def _conversation(value: Any) -> str | None:
    """`conversation`: an id, or an object `{"id": ...}`."""
    if isinstance(value, Mapping):
        return _id(value.get("id"), "conversation.id")
    return _id(value, "conversation")


def _content_chars(content: Any, limits: LimitsConfig, parts: list[int]) -> int:
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    parts[0] += len(content)
    if parts[0] > limits.max_content_parts:
        raise BadRequest(f"'input' has over {limits.max_content_parts} content parts in all")
    chars = 0
    for part in content:
        if isinstance(part, Mapping) and "text" in part:
            if not isinstance(part["text"], str):
                raise BadRequest("a content part's 'text' must be a string")
            chars += len(part["text"])
    return chars


def _input_chars(items: Any, limits: LimitsConfig) -> int:
    if items is None:
        return 0
    if isinstance(items, str):
        return len(items)
    if not isinstance(items, list):
        raise BadRequest("'input' must be a string or a list of items")
    if len(items) > limits.max_messages:
        raise BadRequest(f"'input' has {len(items)} items; the limit is {limits.max_messages}")
    parts = [0]
    chars = 0
    for item in items:
        if not isinstance(item, Mapping):
            raise BadRequest("each item of 'input' must be an object")
        chars += _content_chars(item.get("content"), limits, parts)
        output = item.get("output")  # a function call's output, sent back
        chars += len(output) if isinstance(output, str) else 0
    return chars


def responses_fields(body: Mapping[str, Any], limits: LimitsConfig) -> ResponsesFields:
    """Check a Responses body's routed fields; what routing reads from it."""
    chars = _input_chars(body.get("input"), limits)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise BadRequest("'instructions' must be a string")
    chars += len(instructions or "")
    previous = _id(body.get("previous_response_id"), "previous_response_id")
    conversation = _conversation(body.get("conversation"))
    if previous is not None and conversation is not None:
        raise BadRequest("'previous_response_id' and 'conversation' cannot be used together")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise BadRequest("'store' must be a boolean")
    return ResponsesFields(
        prompt_tokens=max(1, chars // CHARS_PER_TOKEN),
        previous_response_id=previous,
        conversation=conversation,
        store=store is not False,
    )


def _is_tokens(value: Any) -> bool:
    """A list of token ids (ints, not booleans). The types are collected in C (`map`,
    `set`): a batch of token lists can hold hundreds of thousands of ids, and a
    Python-level check per id cost ~1 microsecond each on the event loop."""
    return isinstance(value, list) and set(map(type, value)) <= _INT


def embeddings_tokens(body: Mapping[str, Any], limits: LimitsConfig) -> int:
    """Check an embeddings body's `input`; its estimated tokens."""
    if body.get("stream") is True:
        raise BadRequest("embeddings are not streamed: 'stream' must be false or absent")
    value = body.get("input")
    if isinstance(value, str):
        return max(1, len(value) // CHARS_PER_TOKEN)
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "missing required field 'input' (a string, a list of strings or of token lists)"
        )
    if len(value) > limits.max_inputs:
        raise BadRequest(f"'input' has {len(value)} items; the limit is {limits.max_inputs}")
    if _is_tokens(value):
        return len(value)
    chars = tokens = 0
    for item in value:
        if isinstance(item, str):
            chars += len(item)
        elif _is_tokens(item):
            tokens += len(item)
        else:
            raise BadRequest("each item of 'input' must be a string or a list of token ids")
    return max(1, chars // CHARS_PER_TOKEN + tokens)
