"""A response late for its first output, or an upstream gone silent in a response.

A `kind: realtime` target's `timeouts.first_token_s` (a route's `first_token_s`
overrides it) bounds the wait from a response's start (the client's
`response.create`, or the commit that creates one under server VAD) to its first
output (audio, text, an audio transcript, function call arguments); its
`timeouts.idle_s` bounds a silence of the upstream (no event at all) while a
response is asked for or in flight. Past either the upstream is stalled: the
session migrates (reason `stalled`, counted against the target's breaker), and the
response, which the user has heard nothing of, is asked again on the new target
(one that had begun speaking ends `failed`, or is asked again under
`migrate: {regenerate: true}`; one the client cancelled is neither late nor asked
again). A response is moved once for being late: its second try waits for its
first output as long as it takes, within the silence bound. Out-of-band responses
(`conversation: "none"`) are watched alike, each from its own `response.create`
(`router.realtime.out_of_band`).

A cascade (`kind: cascade`) is not watched: its stages have their own deadlines
and fall back within the session (`router.voice`).

What it costs the relay: the upstream pump counts frames (an integer) and marks a
response's first output; one watchdog per upstream leg sleeps until the next
deadline while a response is out, and on an event while none is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

from router.realtime.limits import Migrate

if TYPE_CHECKING:
    from router.realtime.session import Session
    from router.realtime.target import Leg

#: a silence is looked for this many times per `idle_s` (it is seen within 1.25x)
SILENCE_LOOKS = 4


class Progress:
    """Where the session's current response is, as the watchdog needs it."""

    __slots__ = ("cancelled", "first_output", "frames", "opened_at", "retried", "wake")

    def __init__(self) -> None:
        #: upstream frames received (the watchdog compares counts, not times)
        self.frames = 0
        #: since when a response of the conversation is asked for or in flight
        self.opened_at: float | None = None
        #: it produced output: the first-output deadline is met
        self.first_output = False
        #: it was moved once for being late: no second move for that
        self.retried = False
        #: the client cancelled it (talked over it): not late, and not asked again
        self.cancelled = False
        self.wake = asyncio.Event()

    def asked(self, now: float, *, retried: bool = False) -> None:
        """A response was asked for (a second ask while one the client still wants is
        out changes nothing)."""
        if self.opened_at is None or self.cancelled:
            self.opened_at = now
            self.first_output = False
            self.retried = retried
            self.cancelled = False
            self.wake.set()

    def done(self) -> None:
        """The response ended (or will never come)."""
        self.opened_at = None
        self.first_output = False
        self.retried = False
        self.cancelled = False

    @property
    def unheard(self) -> bool:
        """A response is out that produced nothing yet and the client still wants."""
        return self.opened_at is not None and not self.first_output and not self.cancelled


async def watch(session: Session, leg: Leg) -> Migrate:
    """Returns a `stalled` migration when the leg's upstream is late or silent in a
    response; runs until cancelled otherwise."""
    target = leg.target
    first_s = target.first_output_s
    if first_s is not None and session.limits.first_output_s is not None:
        first_s = session.limits.first_output_s
    idle_s = target.silence_s
    if first_s is None and idle_s is None:
        await asyncio.Event().wait()  # nothing to watch on this target
    progress, clock, out_of_band = session.progress, session.clock, session.out_of_band
    seen, heard_at = progress.frames, clock()
    while True:
        progress.wake.clear()
        now = clock()
        if progress.opened_at is None and out_of_band.idle:
            await progress.wake.wait()
            seen, heard_at = progress.frames, clock()
            continue
        if progress.frames != seen:
            seen, heard_at = progress.frames, now
        nap = math.inf
        if idle_s is not None:
            if now - heard_at >= idle_s:
                return Migrate("stalled")
            nap = idle_s / SILENCE_LOOKS
        if first_s is not None:
            since = out_of_band.late_since()
            opened = progress.opened_at
            if opened is not None and progress.unheard and not progress.retried:
                since = opened if since is None else min(since, opened)
            if since is not None:
                if now - since >= first_s:
                    return Migrate("stalled")
                nap = min(nap, since + first_s - now)
        await _nap(progress.wake, nap)


async def _nap(wake: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds` (inf: no limit), or until a response is asked for."""
    if math.isinf(seconds):
        await wake.wait()
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.001)):
            await wake.wait()
