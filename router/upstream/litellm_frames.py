"""litellm's response objects, re-framed as OpenAI's wire format.

Pure functions, no I/O: a `ModelResponseStream` chunk becomes one
`data: {chat.completion.chunk}\\n\\n` frame, a `ModelResponse` one
`chat.completion` JSON body. Only OpenAI's fields are kept (litellm adds
`provider_specific_fields`, `citations`, nulls everywhere, ...), so clients see
the same shapes from a litellm target as from an OpenAI-compatible one.
litellm's objects are duck-typed here (`Any`): this is the litellm boundary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

DONE = b"data: [DONE]\n\n"

_DELTA_FIELDS = ("role", "content", "reasoning_content", "refusal")
_MESSAGE_FIELDS = ("role", "content", "reasoning_content", "refusal")
#: transport-level headers that describe litellm's HTTP body, not ours
_HOP_HEADERS = frozenset(
    {
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "date",
        "server",
    }
)
_LITELLM_PREFIX = "llm_provider-"


def json_bytes(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def sse(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json_bytes(payload) + b"\n\n"


def _plain(obj: Any) -> Any:
    """A pydantic object (or dict) as plain data without nulls."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(exclude_none=True)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for call in calls:
        plain = _plain(call)
        out.append({k: plain[k] for k in ("index", "id", "type", "function") if k in plain})
    return out


def usage_dict(usage: Any) -> dict[str, Any] | None:
    """OpenAI's usage object (with cached prompt tokens when the provider reports them)."""
    if usage is None:
        return None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(getattr(usage, "total_tokens", 0) or prompt + completion),
    }
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    return out


def chunk_payload(chunk: Any) -> dict[str, Any] | None:
    """One `chat.completion.chunk`, or None when the chunk carries nothing to relay
    (an empty delta without a finish reason, e.g. litellm's usage-only chunk)."""
    choices = []
    for choice in getattr(chunk, "choices", None) or ():
        delta_obj = getattr(choice, "delta", None)
        delta: dict[str, Any] = {}
        for name in _DELTA_FIELDS:
            value = getattr(delta_obj, name, None)
            if value is not None:
                delta[name] = value
        calls = _tool_calls(getattr(delta_obj, "tool_calls", None))
        if calls:
            delta["tool_calls"] = calls
        finish = getattr(choice, "finish_reason", None)
        if set(delta) - {"role"} or finish is not None:
            choices.append(
                {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": finish}
            )
    if not choices:
        return None
    return {
        "id": chunk.id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": chunk.model,
        "choices": choices,
    }


def usage_payload(
    chunk_id: str, created: int, model: str, usage: Mapping[str, Any]
) -> dict[str, Any]:
    """OpenAI's final usage chunk (sent when `stream_options.include_usage` was asked)."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": dict(usage),
    }


def completion_payload(response: Any) -> dict[str, Any]:
    """A non-streamed `ModelResponse` as OpenAI's `chat.completion` body."""
    choices = []
    for choice in response.choices:
        msg = choice.message
        message: dict[str, Any] = {
            "role": getattr(msg, "role", None) or "assistant",
            "content": getattr(msg, "content", None),
        }
        for name in _MESSAGE_FIELDS[2:]:
            value = getattr(msg, name, None)
            if value is not None:
                message[name] = value
        calls = _tool_calls(getattr(msg, "tool_calls", None))
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
        )
    out: dict[str, Any] = {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": choices,
    }
    usage = usage_dict(getattr(response, "usage", None))
    if usage is not None:
        out["usage"] = usage
    return out


def provider_headers(raw: Mapping[str, str] | None, hidden_params: Any) -> dict[str, str]:
    """The provider's own response headers, lower-cased, as it sent them.

    Prefer the raw HTTP headers; otherwise undo litellm's `llm_provider-` prefix in
    `_hidden_params["additional_headers"]` (dropping its `x-ratelimit-*` copies,
    which are translations, not what the provider sent).
    """
    if raw is not None:
        items = [(k.lower(), v) for k, v in raw.items()]
    else:
        extra = hidden_params.get("additional_headers") if isinstance(hidden_params, dict) else None
        items = [
            (k.lower().removeprefix(_LITELLM_PREFIX), str(v))
            for k, v in (extra or {}).items()
            if k.lower().startswith(_LITELLM_PREFIX)
        ]
    return {k: v for k, v in items if k not in _HOP_HEADERS}
