"""OpenAI's wire format as the simulator speaks it: requests in, SSE frames and JSON out.

Streams look like OpenAI's and vLLM's: a role-only chunk, one chunk per content
token, a chunk carrying `finish_reason`, an optional usage chunk with
`"choices": []` (when `stream_options.include_usage` is true), then
`data: [DONE]`. Content is deterministic so tests can check integrity and order:
token `i` is `f"t{i} "`. Prompt tokens are estimated as characters / 4 (at least 1).

Content frames are built from pre-encoded bytes: the simulator must stay cheap
enough to be the upstream of the router's overhead benchmark.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Endpoint = Literal["chat", "completions", "responses", "embeddings"]
FinishReason = Literal["stop", "length"]

DONE = b"data: [DONE]\n\n"
MALFORMED_FRAME = b"data: {this is not json\n\n"


class InvalidRequest(ValueError):
    """The request body is not a valid completion request (answered with 400)."""


def token_text(i: int) -> str:
    return f"t{i} "


def completion_text(n: int) -> str:
    """The full text of an answer of `n` tokens (what a client should reassemble)."""
    return "".join(token_text(i) for i in range(n))


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


@dataclass(frozen=True, slots=True)
class SimRequest:
    endpoint: Endpoint
    body: Mapping[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    #: (hash of the first k messages, prompt tokens of those messages) for k = 1..n;
    #: what a prefix cache can match on
    prefix_keys: tuple[tuple[str, int], ...]
    #: the bearer token of the Authorization header, if any
    api_key: str | None


def parse_request(endpoint: Endpoint, body: object, authorization: str | None) -> SimRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required")
    texts: list[str]
    if endpoint in ("responses", "embeddings"):
        texts = input_texts(endpoint, body)
        parts = texts
    elif endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty list")
        if not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("every message must be an object")
        texts = [_message_text(m) for m in messages]
        parts = [json.dumps(m, sort_keys=True) for m in messages]
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = "".join(str(p) for p in prompt)
        if not isinstance(prompt, str):
            raise InvalidRequest("'prompt' must be a string")
        texts = [prompt]
        parts = [prompt]
    max_tokens = body.get(
        "max_output_tokens", body.get("max_completion_tokens", body.get("max_tokens"))
    )
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidRequest("'max_tokens' must be a positive integer")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    api_key = None
    if authorization and authorization.lower().startswith("bearer "):
        api_key = authorization[7:].strip()
    return SimRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=estimate_tokens("".join(texts)),
        prefix_keys=_prefix_keys(parts, texts),
        api_key=api_key,
    )


def input_texts(endpoint: Endpoint, body: Mapping[str, Any]) -> list[str]:
    """The texts of a Responses request (`instructions`, then each input item) or of an
    embeddings request (each input; a token list counts as one word per token)."""
    value = body.get("input")
    if endpoint == "embeddings":
        items: list[Any] = value if isinstance(value, list) and value else [value]
        if isinstance(value, list) and all(isinstance(t, int) for t in value):
            items = [value]
        texts: list[str] = []
        for item in items:
            if not isinstance(item, str | list):
                raise InvalidRequest("'input' must be a string, strings, or token lists")
            texts.append(item if isinstance(item, str) else " ".join(map(str, item)))
        return texts
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    if isinstance(value, str):
        return [*texts, value]
    if value is not None and not isinstance(value, list):
        raise InvalidRequest("'input' must be a string or a list of items")
    for item in value or []:
        if not isinstance(item, Mapping):
            raise InvalidRequest("every input item must be an object")
        texts.append(_message_text(item))
    return texts or [""]


def _prefix_keys(parts: Sequence[str], texts: Sequence[str]) -> tuple[tuple[str, int], ...]:
    digest = hashlib.blake2b(digest_size=16)
    keys = []
    chars = 0
    for part, text in zip(parts, texts, strict=True):
        digest.update(part.encode())
        digest.update(b"\x00")
        chars += len(text)
        keys.append((digest.hexdigest(), max(1, chars // 4)))
    return tuple(keys)


def error_body(
    message: str, type_: str = "server_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def padded_error_chunks(message: str, size: int, chunk: int = 65536) -> Iterator[bytes]:
    """An OpenAI-shaped error body of exactly `size` bytes (at least its unpadded
    size), in chunks: a hostile upstream's huge error answer, never held whole."""
    head = json.dumps(error_body(message))[:-2].encode() + b', "padding": "'
    tail = b'"}}'
    pad = max(0, size - len(head) - len(tail))
    yield head
    while pad > 0:
        n = min(pad, chunk)
        yield b"x" * n
        pad -= n
    yield tail


class Encoder:
    """Frames for one response; content frames are pre-encoded halves around the text."""

    __slots__ = (
        "_created",
        "_endpoint",
        "_head",
        "_id",
        "_model",
        "_object",
        "_tail",
        "_words",
    )

    #: what ends a stream
    done = DONE

    def __init__(
        self, request_id: str, endpoint: Endpoint, model: str, reply: str | None = None
    ) -> None:
        #: the answer's words, each sent as one token with its space
        self._words = [json.dumps(w + " ").encode() for w in reply.split()] if reply else None
        self._id = request_id
        self._endpoint = endpoint
        self._model = model
        self._created = int(time.time())
        self._object = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        common = (
            f'data: {{"id":{json.dumps(request_id)},"object":"{self._object}",'
            f'"created":{self._created},"model":{json.dumps(model)},"choices":[{{"index":0,'
        )
        if endpoint == "chat":
            self._head = (common + '"delta":{"content":').encode()
            self._tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        else:
            self._head = (common + '"text":').encode()
            self._tail = b',"logprobs":null,"finish_reason":null}]}\n\n'

    def _frame(self, payload: Mapping[str, Any]) -> bytes:
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return self._frame(
            {
                "id": self._id,
                "object": self._object,
                "created": self._created,
                "model": self._model,
                "choices": choices,
                **extra,
            }
        )

    def role(self) -> bytes:
        if self._endpoint == "chat":
            delta = {"role": "assistant", "content": ""}
            return self._chunk(
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]
            )
        return self._chunk([{"index": 0, "text": "", "logprobs": None, "finish_reason": None}])

    def content(self, i: int) -> bytes:
        if self._words:
            return self._head + self._words[i % len(self._words)] + self._tail
        return self._head + b'"t%d "' % i + self._tail

    def finish(self, reason: FinishReason) -> bytes:
        if self._endpoint == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {}, "logprobs": None}
        else:
            choice = {"index": 0, "text": "", "logprobs": None}
        choice["finish_reason"] = reason
        return self._chunk([choice])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return self._chunk([], usage=_usage(prompt_tokens, completion_tokens))

    def error_event(self, message: str) -> bytes:
        return self._frame(error_body(message))

    def text(self, n: int) -> str:
        """The whole text of `n` tokens, as `content` sends them."""
        if self._words:
            return "".join(json.loads(self._words[i % len(self._words)]) for i in range(n))
        return completion_text(n)

    def full(self, n: int, reason: FinishReason, prompt_tokens: int) -> dict[str, Any]:
        """A non-streaming response body with `n` tokens."""
        text = self.text(n)
        if self._endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
            obj = "text_completion"
        return {
            "id": self._id,
            "object": obj,
            "created": self._created,
            "model": self._model,
            "choices": [choice],
            "usage": _usage(prompt_tokens, n),
        }


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
