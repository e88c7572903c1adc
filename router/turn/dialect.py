"""How each endpoint's answers read: what commits a stream, what ends it, where the
usage is, and what the client is told when a stream breaks after its first token.

The race and the relay are the same for every endpoint; a `Dialect` is what differs:

- `CHAT` (`/v1/chat/completions`, `/v1/completions`): chunks with `choices`, usage
  in a final chunk, `data: [DONE]` at the end (router/turn/sse.py).
- `RESPONSES` (`/v1/responses`): typed events ending at `response.completed`,
  `response.incomplete` or `response.failed` (router/turn/responses_wire.py).
- `EMBEDDINGS` (`/v1/embeddings`): one JSON body, never streamed; read without
  parsing its vectors (only its `usage` object is parsed).

Before the commit point every event is parsed (`classify`); after it a block of
events is searched as bytes (`scan`) and only an event holding a marker is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from router import jsontext
from router.turn import sse
from router.turn.sse import Frame, MalformedFrame, Scan
from router.values import value
from router.vocabulary import FirstTokenKind

#: what `classify` says of one pre-commit event
Classified = tuple[Frame, FirstTokenKind | None, dict[str, Any] | None]


@value
class Tokens:
    """Token counts of one answer, from the target's own usage."""

    prompt: int | None
    completion: int | None
    #: input tokens read from the provider's prompt cache (part of `prompt`)
    cached: int = 0
    #: output tokens spent reasoning (part of `completion`)
    reasoning: int = 0


@value
class Whole:
    """What a unary answer's body says: its usage and, for Responses, its id."""

    usage: dict[str, Any] | None
    response_id: str | None = None


class Dialect(Protocol):
    """One endpoint's answers, as the race and the relay need to read them."""

    def classify(self, event: bytes) -> Classified:
        """A pre-commit event (parsed): its frame, first-token kind, and the object."""
        ...

    def response_id(self, parsed: dict[str, Any]) -> str | None:
        """The id of the stored answer a pre-commit event announces, if it does."""
        ...

    def scan(self, block: bytes) -> Scan:
        """Markers in a post-commit block of events (bytes searches; marked events parsed)."""
        ...

    def usage_of(self, event: bytes) -> tuple[dict[str, Any] | None, bool]:
        """(usage, the event is only usage and the client did not ask for it)."""
        ...

    def first_answer_in(self, block: bytes) -> bool: ...

    def whole(self, target: str, body: bytes) -> Whole:
        """Check a unary answer (MalformedFrame if it is not one); its usage."""
        ...

    def tokens(self, usage: Mapping[str, Any]) -> Tokens: ...

    def interrupted(self, message: str, head: bytes, events: int) -> bytes:
        """The events that end a stream broken after its first token."""
        ...

    #: an error event ends the relay (chat); otherwise the stream's own end does
    error_ends: bool
    #: what a stream that ends early did not reach
    end_marker: str


def count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def detail_count(usage: Mapping[str, Any], details: str, name: str) -> int:
    block = usage.get(details)
    return (count(block.get(name)) or 0) if isinstance(block, dict) else 0


#: a completion id the router may remember (what stored ids are made of, bounded)
_ID_MAX = 256


def _stored_id(parsed: Mapping[str, Any]) -> str | None:
    found = parsed.get("id")
    return found if type(found) is str and 0 < len(found) <= _ID_MAX else None


class ChatDialect:
    """Chat and legacy completions: OpenAI's chunk stream (router/turn/sse.py)."""

    error_ends = True
    end_marker = "[DONE]"

    def classify(self, event: bytes) -> Classified:
        return sse.classify(event)

    def response_id(self, parsed: dict[str, Any]) -> str | None:
        """A chunk's `id`: the completion's, which a `store: true` turn stored."""
        return _stored_id(parsed)

    #: the function itself: no method frame per relayed block
    scan = staticmethod(sse.scan)

    def usage_of(self, event: bytes) -> tuple[dict[str, Any] | None, bool]:
        return sse.usage_of(event)

    def first_answer_in(self, block: bytes) -> bool:
        return sse.first_answer_in(block)

    def whole(self, target: str, body: bytes) -> Whole:
        try:
            parsed = jsontext.loads(body)
        except ValueError as exc:
            raise MalformedFrame("response is not JSON") from exc
        if not isinstance(parsed, dict) or "choices" not in parsed:
            raise MalformedFrame("response has no choices")
        usage = parsed.get("usage")
        return Whole(usage if isinstance(usage, dict) else None, _stored_id(parsed))

    def tokens(self, usage: Mapping[str, Any]) -> Tokens:
        return Tokens(
            count(usage.get("prompt_tokens")),
            count(usage.get("completion_tokens")),
            detail_count(usage, "prompt_tokens_details", "cached_tokens"),
            detail_count(usage, "completion_tokens_details", "reasoning_tokens"),
        )

    def interrupted(self, message: str, head: bytes, events: int) -> bytes:
        return sse.error_event(message)


_USAGE_KEY = b'"usage"'
_DECODER = json.JSONDecoder()


def last_usage(text: bytes) -> dict[str, Any] | None:
    """The object of the last `"usage"` key in a JSON text, parsed alone (None if that
    key holds no object). An unescaped quote cannot occur inside a JSON string, so the
    key found is a key. Targets write an answer's usage after its content (embeddings
    after the vectors; a Responses object after its output, instructions and tools),
    so only the tail is read and parsed; callers check the object is the one meant."""
    key = text.rfind(_USAGE_KEY)
    if key < 0:
        return None
    start = text.find(b"{", key + len(_USAGE_KEY))
    if start < 0 or text[key + len(_USAGE_KEY) : start].strip() != b":":
        return None
    try:
        parsed, _ = _DECODER.raw_decode(text[start:].decode())
    except ValueError:  # UnicodeDecodeError too
        return None
    return parsed if isinstance(parsed, dict) else None


class EmbeddingsDialect(ChatDialect):
    """Embeddings: one JSON body of vectors. A batch's answer is large (a float is ~20
    bytes of JSON), so it is checked by its shape and its `usage` object alone is
    parsed: the vectors are relayed as the target wrote them, never copied."""

    def whole(self, target: str, body: bytes) -> Whole:
        text = body.strip()  # the same object when there is nothing to strip
        if not (text.startswith(b"{") and text.endswith(b"}")) or text.find(b'"data"') < 0:
            raise MalformedFrame("response is not an embeddings list")
        return Whole(last_usage(text))  # vectors hold no quoted strings: it is the answer's


CHAT: Dialect = ChatDialect()
EMBEDDINGS: Dialect = EmbeddingsDialect()
