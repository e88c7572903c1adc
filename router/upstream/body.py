"""The client's JSON body as each target gets it: the same object with the target's
`model`, and usage asked for on streams.

The body is serialised once per request (its `rest`: everything but `model`), and
each target's model is spliced in front of those bytes, so an attempt, a hedge or
a fallback costs a copy, not a `json.dumps`. A large body is parsed in a worker
process (gateway/admission.py) and reaches the event loop only as `rest`: the
object is built again only if an upstream that re-frames the request (litellm)
reads it as a mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

#: one encoder for every body (`json.dumps` with options builds a new one per call)
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(value: Any) -> bytes:
    """Compact JSON; a non-finite number is a ValueError (JSON has none)."""
    return _COMPACT.encode(value).encode()


def rest_of(body: Mapping[str, Any], stream: bool) -> bytes:
    """`body` without its `model`, with `stream_options.include_usage` on a stream."""
    out = {k: v for k, v in body.items() if k != "model"}
    if stream:
        options = out.get("stream_options")
        out["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return dumps(out)


class ClientBody:
    """One request's body, ready for any target: `rest`, a JSON object's bytes."""

    __slots__ = ("rest",)

    def __init__(self, rest: bytes) -> None:
        self.rest = rest

    @classmethod
    def of(cls, body: Mapping[str, Any], stream: bool) -> ClientBody:
        return cls(rest_of(body, stream))

    def for_target(self, model: str) -> TargetBody:
        return TargetBody(self, model)

    def __reduce__(self) -> tuple[type[ClientBody], tuple[bytes]]:
        return (ClientBody, (self.rest,))


class TargetBody(Mapping[str, Any]):
    """What one target is sent: `wire` for a byte relay, a mapping for litellm."""

    __slots__ = ("_body", "_mapping", "model")

    def __init__(self, body: ClientBody, model: str) -> None:
        self._body = body
        self.model = model
        self._mapping: dict[str, Any] | None = None

    @property
    def wire(self) -> bytes:
        rest = self._body.rest
        head = b'{"model":' + dumps(self.model)
        return head + b"}" if rest == b"{}" else head + b"," + rest[1:]

    def _object(self) -> dict[str, Any]:
        if self._mapping is None:
            self._mapping = {**json.loads(self._body.rest), "model": self.model}
        return self._mapping

    def __getitem__(self, key: str) -> Any:
        return self._object()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._object())

    def __len__(self) -> int:
        return len(self._object())


def wire_bytes(body: Mapping[str, Any]) -> bytes:
    """A request body's bytes: a `TargetBody`'s own, any other mapping serialised."""
    return body.wire if isinstance(body, TargetBody) else dumps(body)
