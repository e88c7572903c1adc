"""A session's limits, and the supervisor that enforces them on each upstream leg.

The supervisor sleeps until the next deadline (idle, maximum duration, upstream age,
the client key's session-minutes running out) or until the target's breaker opens
(`BreakerWatch`: one timer per target, not a wake per session). A key's minutes are
shared by its open sessions: the deadline is the time left in its window over the
sessions spending it, read afresh at least every `BREAKER_CHECK_S` while a key has
an allowance, so a key that opens a second session brings the first one's end
nearer. The two proactive moves, reaching `max_upstream_s` and the target's breaker
opening, wait for a pause between responses with no user turn open (speech the
server's VAD heard, or audio not yet committed with VAD off; `Session.calm`),
looked at every `BREAKER_CHECK_S`, or 50 ms for the upstream's age, so no answer
and no utterance is cut for them; when one finds no better target, the session
stays where it is and tries again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.realtime.events import MigrationReason, SessionEnd
from router.realtime.quota import SessionQuota
from router.realtime.target import BREAKER_CHECK_S, BreakerWatch
from router.realtime.wire import error_event

if TYPE_CHECKING:
    from router.realtime.session import Session
    from router.realtime.target import Leg


@dataclass(frozen=True, slots=True)
class SessionLimits:
    #: no client frame for this long ends the session (None: never)
    idle_s: float | None = None
    max_duration_s: float | None = None
    #: an upstream session older than this is replaced (below a provider's cap)
    max_upstream_s: float | None = None
    #: a response cut by a migration is asked for again on the new target
    regenerate: bool = False
    #: the transcription model asked for the router's own copy (`migrate.transcribe`)
    transcribe: str | None = None
    #: how much of the caller's uncommitted audio a migration appends again (bytes of
    #: append frames, `migrate.input_audio_kib`)
    input_audio_bytes: int = 0
    #: the route's `first_token_s`: over its targets' own first-output bound
    first_output_s: float | None = None
    #: the client key's allowance (its `session_minutes`), spent while the session runs
    quota: SessionQuota | None = None


@dataclass(frozen=True, slots=True)
class End:
    why: SessionEnd
    #: close code for the client (None: it is gone already)
    code: int | None = None
    #: an `error` event to send the client first
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Migrate:
    reason: MigrationReason


async def supervise(session: Session, leg: Leg) -> End | Migrate:
    limits, clock = session.limits, session.clock
    watch = leg.target.breaker_watch
    breaker = leg.target.signals.breaker
    upstream_due = None if limits.max_upstream_s is None else leg.opened_at + limits.max_upstream_s
    session_due = (
        None if limits.max_duration_s is None else session.started_at + limits.max_duration_s
    )
    while True:
        now = clock()
        wake = math.inf
        if limits.idle_s is not None:
            idle_due = session.last_client_frame + limits.idle_s
            if now >= idle_due:
                return End("idle", 1000, _idle_error(limits.idle_s))
            wake = idle_due - now
        if session_due is not None:
            if now >= session_due:
                return End("max_duration", 1008, _duration_error(limits.max_duration_s))
            wake = min(wake, session_due - now)
        left_s = limits.quota.remaining_s() if limits.quota is not None else None
        if left_s is not None and limits.quota is not None:
            if left_s <= 0.0:
                return End("session_minutes", 1008, _minutes_error(limits.quota))
            # read afresh: another session of the key brings this one's end nearer
            wake = min(wake, left_s / max(limits.quota.open_sessions, 1), BREAKER_CHECK_S)
        # Proactive moves wait for a pause between responses (and the user's turns),
        # and for a while after one found nowhere better to go.
        calm = session.calm(now)
        broken = breaker.state == "open"
        if calm and now >= session.proactive_after:
            if upstream_due is not None and now >= upstream_due:
                return Migrate("max_upstream")
            if broken:
                return Migrate("breaker_open")
        if upstream_due is not None:
            wake = min(wake, max(upstream_due - now, 0.05))
        if broken:  # open, but not now: look again soon
            await asyncio.sleep(max(min(wake, BREAKER_CHECK_S), 0.001))
        else:
            await _until_open(watch, max(wake, 0.001))


async def _until_open(watch: BreakerWatch, timeout_s: float) -> None:
    """Wait for the target's breaker to open, for at most `timeout_s` (inf: no limit)."""
    if math.isinf(timeout_s):
        await watch.opened()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await watch.opened()


def _idle_error(idle_s: float) -> str:
    return error_event(
        f"The session was idle for {idle_s:g}s (no client event) and is closed.",
        code="session_idle_timeout",
    )


def _minutes_error(quota: SessionQuota) -> str:
    return error_event(
        f"This API key has used its {quota.session_minutes:g} realtime session-minutes "
        "in the last 60 minutes; the session is closed. A new one is refused (429) until "
        "minutes free up.",
        type="rate_limit_error",
        code="session_minutes_exceeded",
    )


def _duration_error(max_s: float | None) -> str:
    return error_event(
        f"The session reached its maximum duration of {max_s:g}s on this router.",
        code="session_max_duration",
    )
