"""What a turn reports as it happens: the `TurnEvents` protocol.

The race and the relay call these; `router.metrics.Metrics` satisfies the protocol
structurally and is never imported here, so a turn never imports Prometheus, and
its tests pass a recorder instead of a registry.
"""

from __future__ import annotations

from typing import Protocol

from router.errors import Cause, UpstreamError
from router.vocabulary import HedgeEvent, Outcome, OverheadPhase


class TurnEvents(Protocol):
    def attempt_failed(self, route: str, err: UpstreamError) -> None:
        """One attempt failed (before or after the commit point)."""
        ...

    def fell_back(self, route: str, from_target: str, to_target: str, cause: Cause) -> None:
        """The turn moved to the next target of its plan before the first token."""
        ...

    def fallback_skipped(self, route: str, target: str) -> None:
        """A fallback was not tried: the target's predicted median time to first token
        was past its first-token deadline."""
        ...

    def hedge(self, route: str, event: HedgeEvent) -> None: ...

    def overhead_observed(self, phase: OverheadPhase, seconds: float) -> None:
        """Time the router itself added to the turn."""
        ...

    def stream_degraded(self, route: str, target: str) -> None:
        """A stream slowed to a trickle after its first token."""
        ...

    def turn_done(
        self,
        route: str,
        target: str,
        outcome: Outcome,
        *,
        ttft_s: float | None,
        first_answer_s: float | None = None,
        duration_s: float,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        streamed: bool = True,
    ) -> None:
        """A turn a target answered; `ttft_s` from arrival to the response start (its
        first token of any kind), `first_answer_s` to its first answer token; of its
        tokens, `cached_tokens` came from the target's prompt cache and
        `reasoning_tokens` were spent reasoning. A unary answer (`streamed` false)
        arrives whole: its response start is its end, so it has no time per token."""
        ...

    def turn_unanswered(self, route: str, *, cancelled: bool) -> None:
        """A turn no target answered, or whose client left before the first token."""
        ...
