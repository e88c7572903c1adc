"""The one seam between a turn and a target: `Upstream.send` -> `UpstreamResponse`.

An upstream talks and never decides. It translates its transport's exceptions into
`router.errors` (in exactly one place per implementation) and hands back OpenAI
bytes: a raw SSE stream for `stream=True`, one JSON body otherwise. Providers that
do not speak OpenAI's protocol re-frame their answers as OpenAI chunks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from router.values import value

#: the OpenAI endpoints a text target serves (a `Capability` each: router/capabilities.py)
Endpoint = Literal["chat", "completions", "responses", "embeddings"]
Method = Literal["POST", "GET", "DELETE"]

ENDPOINT_PATHS: dict[Endpoint, str] = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
}


@value
class UpstreamRequest:
    """What to send: the client's body with `model` already set to the target's (a
    `body.TargetBody`, whose bytes are ready; any other mapping is serialised)."""

    endpoint: Endpoint
    #: empty (and not sent) for a stored response's own calls, which have a `path`
    #: (unless `has_body`)
    body: Mapping[str, Any]
    stream: bool
    #: headers to pass along (request id, ...); never the client's own API key
    headers: Mapping[str, str] = field(default_factory=dict)
    #: a stored response's own calls (`GET /responses/{id}`, `DELETE`, `.../cancel`):
    #: the method, the path after the base URL, and the client's query string
    method: Method = "POST"
    path: str | None = None
    query: str = ""
    #: a call with a `path`: whether `body` is sent as its JSON body (a conversation's
    #: POSTs), rather than nothing (a cancel, a GET, a DELETE)
    has_body: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamSetup:
    """What an upstream needs besides its target's config: secrets read from the
    environment (whitespace stripped, validated), bounds, and a hook for its pool."""

    api_key: str | None = None
    #: the target's `headers` and `headers_env`, resolved
    headers: Mapping[str, str] = field(default_factory=dict)
    #: the largest non-streamed answer read
    max_body_bytes: int = 16 * 1024 * 1024
    keepalive_s: float = 30.0
    #: called with `reused` for every connection a request gets
    on_connection: Callable[[bool], None] | None = None


class UpstreamResponse(Protocol):
    """A 2xx answer whose body has not been read yet.

    A class whose `aclose` and `finish` never wait may say so with a class attribute
    `closes_at_once = True`: the turn then closes it without a shielding cancel scope
    (`turn.types.close_response`)."""

    status: int
    #: lower-cased header names
    headers: Mapping[str, str]

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: OpenAI SSE bytes when streaming."""
        ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None:
        """Close the connection now; the target sees a cancel if the body is unread."""
        ...

    async def finish(self) -> None:
        """The answer is over (`[DONE]` was read): give the connection back for the
        next turn once the rest of the body (the terminal chunk) is in, briefly waited
        for; otherwise close it."""
        ...


class Upstream(Protocol):
    name: str

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Open the request and return once the status and headers are in.

        Raises `UpstreamConnectError`, `UpstreamTimeout` (connect phase) or
        `UpstreamStatusError` (non-2xx, with the body and any Retry-After).
        """
        ...

    async def warm_up(self) -> None:
        """Pay one-time costs (imports, connections) before the first turn does."""
        ...

    async def aclose(self) -> None: ...
