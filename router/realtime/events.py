"""What a realtime session reports as it happens: the `SessionEvents` protocol.

`router.metrics.Metrics` satisfies it structurally and is never imported here (as
with a turn's `TurnEvents`), so tests pass a recorder. The vocabularies are
`Literal`s, so labels stay bounded.
"""

from __future__ import annotations

from typing import Literal, Protocol

from router.errors import UpstreamError
from router.realtime.usage import RealtimeUsage

#: why a live session moved to another upstream session
MigrationReason = Literal[
    "upstream_closed", "server_error", "session_expired", "max_upstream", "breaker_open", "stalled"
]
#: why a transcription failed: the upstream's own error (`server_error`, counted by its
#: breaker), or any other (the audio refused, say: the client's, not the target's)
TranscriptionFailure = Literal["server_error", "other"]
#: how a session ended
SessionEnd = Literal[
    "client_closed",
    "upstream_closed",
    "idle",
    "max_duration",
    "session_minutes",
    "bad_input",
    "no_target",
]


class SessionEvents(Protocol):
    def session_opened(self, route: str, target: str) -> None:
        """A client's session opened at `target` (after any failover)."""
        ...

    def upstream_connected(self, route: str, target: str, connect_s: float) -> None:
        """An upstream session opened at `target`, `connect_s` from the upgrade to its
        `session.created`: every one, a session's first and each migration's."""
        ...

    def session_attempt_failed(self, route: str, err: UpstreamError) -> None:
        """Opening a session at one target failed (the next one is tried)."""
        ...

    def session_closed(
        self,
        route: str,
        target: str,
        end: SessionEnd,
        *,
        duration_s: float,
        usage: RealtimeUsage,
        cost_usd: float,
        client: str | None,
    ) -> None:
        """The session ended; `target` is the last one that served it."""
        ...

    def ttfa_observed(self, route: str, target: str, seconds: float) -> None:
        """Time to first audio of one response, as the router saw it."""
        ...

    def out_of_band_delta_observed(self, route: str, target: str, seconds: float) -> None:
        """An out-of-band response's request to its first output delta."""
        ...

    def transcript_observed(self, route: str, target: str, seconds: float) -> None:
        """Time to transcript of one user turn: its commit to its transcript's first text."""
        ...

    def transcription_billed(self, route: str, target: str, cost_usd: float) -> None:
        """One transcript of the session's input audio cost `cost_usd`."""
        ...

    def transcription_failed(self, route: str, target: str, cause: TranscriptionFailure) -> None:
        """A committed turn's transcription failed (`...input_audio_transcription.failed`)."""
        ...

    def realtime_response_done(
        self,
        route: str,
        target: str,
        status: str,
        *,
        usage: RealtimeUsage | None,
        cost_usd: float,
        client: str | None,
    ) -> None:
        """A response ended (`response.done`), with its usage and cost."""
        ...

    def migrated(
        self, route: str, from_target: str, to_target: str, reason: MigrationReason, seconds: float
    ) -> None:
        """A live session moved to a new upstream session (`seconds` until it was ready)."""
        ...
