"""The Responses API and embeddings through litellm: what a client's body becomes as
litellm's arguments, and what litellm's objects become as OpenAI's wire format.

Pure functions, no I/O; litellm's objects are duck-typed (`Any`): this is the litellm
boundary, as in `litellm_frames` for chat.

- **Arguments.** The Responses API's own parameters are passed by name (`PARAMS`);
  any other field of the body rides in `extra_body`, which litellm merges into the
  provider's HTTP body (unknown fields pass through, as they do to an OpenAI target),
  never among litellm's keyword arguments, where `api_base` or `api_key` from a client
  would redirect the call and its key. Embeddings take `EMBEDDING_PARAMS` only.
- **Events.** Each of litellm's stream events becomes `event: <type>` + `data: {...}`,
  numbered by `sequence_number` from 0 as it leaves (litellm's bridge to chat
  completions numbers almost none of its events).
- **Ids** are the provider's own: litellm wraps each in one of its own (base64 of
  its provider, deployment and the provider's id, for its proxy's routing), which
  is unwrapped as it leaves. A follow-up names the provider's id, which litellm
  passes on as it is, and the id fits a URL path (`GET /v1/responses/{id}`); base64
  would not always.
- **Usage** is OpenAI's Responses usage (`input_tokens`, `output_tokens`,
  `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`),
  whatever litellm attached: on some paths it is chat usage (`prompt_tokens`) in a
  Responses object, with a `cost` of litellm's reckoning, which is not OpenAI's.
- **State.** A provider litellm reaches through its own Responses API (OpenAI, Azure,
  xAI, a vLLM as `hosted_vllm/`) stores responses itself: `previous_response_id`
  works there as at an OpenAI target. One litellm bridges to chat completions
  (Anthropic, Gemini, Bedrock, Groq, ...) stores nothing: the bridge would look the
  previous response up in litellm's proxy database, and without one it silently
  drops the conversation. Such a target refuses a follow-up (`stateless_follow_up`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from router.errors import UpstreamStatusError
from router.upstream.litellm_frames import json_bytes

#: OpenAI Responses parameters litellm takes by name
PARAMS: frozenset[str] = frozenset(
    {
        "background",
        "include",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
#: set by the upstream itself, never taken from the body
_FRAMING = frozenset({"model", "input", "stream"})
#: OpenAI embeddings parameters passed on; anything else is dropped
EMBEDDING_PARAMS: frozenset[str] = frozenset({"encoding_format", "dimensions", "user"})
#: the fields of a request that build on state stored upstream
STATE_FIELDS = ("previous_response_id", "conversation")


def responses_kwargs(body: Mapping[str, Any]) -> dict[str, Any]:
    """litellm's arguments for a Responses body (without the upstream's plumbing)."""
    kwargs: dict[str, Any] = {"input": body.get("input")}
    extra: dict[str, Any] = {}
    for key, value in body.items():
        if key in PARAMS:
            kwargs[key] = value
        elif key not in _FRAMING:
            extra[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def embeddings_kwargs(body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """litellm's arguments for an embeddings body, and the fields dropped."""
    kwargs = {k: v for k, v in body.items() if k in EMBEDDING_PARAMS}
    kwargs["input"] = body.get("input")
    dropped = sorted(set(body) - EMBEDDING_PARAMS - {"model", "input"})
    return kwargs, dropped


def _stateless(target: str, model: str) -> str:
    return f"target '{target}' ({model} through litellm's bridge to chat completions)"


def _refusal(
    target: str, status: int, message: str, param: str | None, code: str | None
) -> UpstreamStatusError:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return UpstreamStatusError(
        f"{target}: {message[:120]}",
        target=target,
        upstream_status=status,
        body=json_bytes({"error": error}),
        rejection="unsupported_parameter" if code == "unsupported_parameter" else None,
    )


def stateless_follow_up(target: str, model: str, body: Mapping[str, Any]) -> UpstreamStatusError:
    """The 400 of a target that stores no responses, asked to build on one (another
    target may serve the request: it is a rejection, not the client's fault)."""
    field = next(f for f in STATE_FIELDS if body.get(f) is not None)
    message = (
        f"{_stateless(target, model)} stores no responses, so it cannot continue from "
        f"'{field}' (this is not supported): send the whole conversation as 'input', or "
        "use a target that stores responses"
    )
    return _refusal(target, 400, message, field, "unsupported_parameter")


def not_stored(target: str, model: str, path: str) -> UpstreamStatusError:
    """The 404 of a stored response's call at a target that stores no responses."""
    message = f"{_stateless(target, model)} stores no responses: nothing at /v1{path}"
    return _refusal(target, 404, message, None, None)


#: a stored response's own calls: (method, path suffix) -> litellm's function
STORED_CALLS: Mapping[tuple[str, str], str] = {
    ("GET", ""): "aget_responses",
    ("DELETE", ""): "adelete_responses",
    ("POST", "/cancel"): "acancel_responses",
    ("GET", "/input_items"): "alist_input_items",
}
_PAGING = ("after", "before", "order")


def stored_call(method: str, path: str, query: str) -> tuple[str, dict[str, Any]] | None:
    """litellm's function and arguments for a call on a stored response
    (`/responses/{id}[/cancel|/input_items]`), or None if it has none. Of the query
    only `input_items`' paging is read."""
    response_id, _, action = path.removeprefix("/responses/").partition("/")
    name = STORED_CALLS.get((method, f"/{action}" if action else ""))
    if name is None or not response_id:
        return None
    kwargs: dict[str, Any] = {"response_id": response_id}
    if name == "alist_input_items":
        params = parse_qs(query)
        kwargs.update({k: params[k][0] for k in _PAGING if k in params})
        if params.get("limit", [""])[0].isdigit():
            kwargs["limit"] = int(params["limit"][0])
        include = params.get("include[]") or params.get("include")
        if include:
            kwargs["include"] = include
    return name, kwargs


def _plain(obj: Any) -> dict[str, Any]:
    """A pydantic object as JSON-ready data. Serialisation warnings are silenced:
    litellm stores a plain dict where its models declare a usage object."""
    if hasattr(obj, "model_dump"):
        dumped: dict[str, Any] = obj.model_dump(mode="json", warnings=False)
        return dumped
    if isinstance(obj, Mapping):
        return dict(json.loads(json.dumps(obj, default=str)))
    raise TypeError(f"not a litellm object: {type(obj).__name__}")


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _detail(usage: Mapping[str, Any], block: str, name: str) -> int:
    details = usage.get(block)
    return _count(details.get(name)) if isinstance(details, Mapping) else 0


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """OpenAI's Responses usage from what litellm attached (Responses or chat usage)."""
    if not isinstance(usage, Mapping):
        return None
    if "input_tokens" in usage:
        read = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
    else:
        read = (
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    prompt, completion = _count(usage.get(read[0])), _count(usage.get(read[1]))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _detail(usage, read[2], "cached_tokens")},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _detail(usage, read[3], "reasoning_tokens")},
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def provider_id(response_id: str) -> str:
    """The provider's own id inside litellm's (`resp_` + base64 of
    `litellm:custom_llm_provider:...;model_id:...;response_id:<id>`), decoded by
    litellm's own function; any other id as it is."""
    from litellm.responses.utils import ResponsesAPIRequestUtils

    inner = ResponsesAPIRequestUtils.decode_responses_api_response_id(response_id).get(
        "response_id"
    )
    return inner if isinstance(inner, str) and inner else response_id


def _as_openai(response: dict[str, Any]) -> dict[str, Any]:
    """A response object as the provider made it: its own id, OpenAI's usage."""
    if isinstance(response.get("id"), str):
        response["id"] = provider_id(response["id"])
    if response.get("usage") is not None:
        response["usage"] = responses_usage(response["usage"])
    return response


def response_payload(response: Any) -> dict[str, Any]:
    """A non-streamed `ResponsesAPIResponse` (or a stored response's other answers:
    a deletion, a list of input items) as OpenAI's JSON."""
    return _as_openai(_plain(response))


def event_frame(event: Any, sequence: int) -> tuple[str, bytes]:
    """One stream event's type and its SSE frame, numbered `sequence`."""
    payload = _plain(event)
    kind = payload.get("type")
    if not isinstance(kind, str):
        kind = "error" if payload.get("error") is not None else "message"
    payload["sequence_number"] = sequence
    response = payload.get("response")
    if isinstance(response, dict):
        _as_openai(response)
    return kind, b"event: " + kind.encode() + b"\ndata: " + json_bytes(payload) + b"\n\n"


def embeddings_payload(response: Any) -> dict[str, Any]:
    """An `EmbeddingResponse` as OpenAI's embeddings list (vectors as the provider sent
    them: floats, or base64 text when `encoding_format` asked for it)."""
    plain = _plain(response)
    data = [
        {"object": "embedding", "index": item.get("index", i), "embedding": item.get("embedding")}
        for i, item in enumerate(plain.get("data") or ())
        if isinstance(item, Mapping)
    ]
    found = plain.get("usage")
    usage: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    prompt = _count(usage.get("prompt_tokens"))
    return {
        "object": "list",
        "data": data,
        "model": plain.get("model"),
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": _count(usage.get("total_tokens")) or prompt,
        },
    }
