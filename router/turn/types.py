"""The vocabulary of one turn: what it is asked, what it runs on, what it primed, what
happened. Plain values; the runtime builds them, the race and the relay use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from router.config import TargetConfig
from router.errors import UpstreamError
from router.policy.base import RoutingRequest
from router.signals.attempt import Attempt
from router.signals.target import TargetSignals
from router.turn.dialect import CHAT, Dialect
from router.turn.sse import Framer
from router.upstream.base import Endpoint, Upstream, UpstreamResponse
from router.upstream.body import ClientBody
from router.values import value
from router.vocabulary import FirstTokenKind, Outcome


@value
class TargetRuntime:
    config: TargetConfig
    upstream: Upstream
    signals: TargetSignals


@value
class TurnRequest:
    endpoint: Endpoint
    #: the client's body, serialised once; each target's model goes in front
    body: ClientBody
    stream: bool
    #: the client asked for the usage chunk itself
    client_wants_usage: bool
    routing: RoutingRequest
    #: request headers passed upstream (request id)
    forward_headers: Mapping[str, str] = field(default_factory=dict)
    #: how the endpoint's answers read (chat chunks, Responses events, embeddings)
    dialect: Dialect = CHAT
    #: called at the commit point with the target and the stored answer's id (if any)
    on_commit: Callable[[str, str | None], None] | None = None


@dataclass(slots=True)
class Primed:
    """An attempt that reached its commit point and now owns an open response."""

    target: TargetRuntime
    attempt: Attempt
    response: UpstreamResponse
    chunks: AsyncIterator[bytes] | None
    #: bytes to send first: every event up to and including the first token
    head: bytes
    #: the stream's framer, holding the bytes after the head (None when not streaming)
    framer: Framer | None
    started_at: float
    first_token_at: float
    #: what the first token was (an answer, reasoning, ...); None when not streaming
    first_kind: FirstTokenKind | None = None
    usage: dict[str, Any] | None = None
    #: the stream ended at `[DONE]`: its connection may serve the next turn
    ended: bool = False
    #: the id of the stored answer (Responses: from `response.created` or the body)
    response_id: str | None = None

    async def aclose(self) -> None:
        await close_response(self.response, finish=self.ended)


async def close_response(response: UpstreamResponse, *, finish: bool = False) -> None:
    """`finish` (the answer was read to its end) or `aclose` a response, whatever
    cancel is pending. A response whose class says `closes_at_once = True` does
    neither wait (a cancel cannot cut it short), so it needs no shielding cancel
    scope: ~30,000 instructions a turn."""
    if getattr(response, "closes_at_once", False):
        await (response.finish() if finish else response.aclose())
        return
    with anyio.CancelScope(shield=True):
        await (response.finish() if finish else response.aclose())


@dataclass(slots=True)
class TurnResult:
    """What happened, for logs, headers and metrics."""

    route: str
    target: str | None = None
    attempts: int = 0
    outcome: Outcome = "error"
    hedged: bool = False
    fell_back: bool = False
    #: a hedge was due but the route's `max_cost_share` held it back
    hedge_capped: bool = False
    ttft_s: float | None = None
    #: what the first token was, and the time to the first answer token (content or
    #: a tool call) from the attempt's start, when the stream had one
    first_kind: FirstTokenKind | None = None
    first_answer_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: of those, prompt tokens read from the target's cache, completion tokens spent reasoning
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    #: Responses: the id of the response the target stored (it owns its state)
    response_id: str | None = None
    reason: str = ""
    failures: list[UpstreamError] = field(default_factory=list)
