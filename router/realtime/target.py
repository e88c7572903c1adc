"""Realtime targets at run time, and opening a session with failover.

A `RealtimeTarget` joins how to reach a target (`Connector`), what it costs and its
live `TargetSignals`, whose estimators serve realtime sessions as they serve turns:
time to first audio goes where TTFT goes (so every policy ranks realtime targets
on it; a transcription session's targets on their time to transcript), sessions
open count as in-flight, `rate_limits.updated` feeds the provider's headroom, and
failures feed the breaker.

`open_leg` walks a plan's targets in order until one gives a `session.created`:
a target without room (`max_sessions`), with its breaker open, refusing the
upgrade, closing first, or slower than `connect_s` is skipped, invisibly to the
client. A `Leg` is one upstream session of a client's session; a migration
replaces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from router.clock import Clock
from router.errors import AllTargetsFailed, NoTargetAvailable, UpstreamError
from router.realtime.events import SessionEvents
from router.realtime.transcript_time import TranscriptTime
from router.realtime.usage import RealtimePrice
from router.realtime.wire import rate_limit_headers
from router.signals.breaker import Breaker
from router.signals.target import Attempt, TargetSignals
from router.signals.ttft import Ewma
from router.upstream.realtime import Closed


class SessionConnection(Protocol):
    """One upstream session: a realtime target's socket (`RealtimeConnection`), or a
    cascade served in process (`router.voice.cascade.CascadeConnection`)."""

    #: the target's `session.created` frame
    created: str
    #: seconds to open it
    connect_s: float

    async def send(self, text: str) -> None: ...

    async def receive(self) -> str | bytes | Closed: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


#: how often a target's breaker is looked at while sessions wait for it to open
BREAKER_CHECK_S = 0.5


class BreakerWatch:
    """Tells a target's sessions when its breaker opens: one timer per target.

    A session's supervisor otherwise sleeps until its next deadline (idle, duration,
    upstream age), often tens of seconds away. Looking at the breaker from every
    session woke each supervisor twice a second, all of them together (sessions
    opened together keep their phase): 64 task wake-ups at once, twice a second, on
    the loop that relays the frames. The breaker may open from several places
    (failures, a provider's Retry-After, another replica), so it is looked at every
    `BREAKER_CHECK_S` rather than hooked, once for the target, and only while a
    session waits."""

    __slots__ = ("_breaker", "_handle", "_opened", "_waiting")

    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._opened: asyncio.Event | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiting = 0

    async def opened(self) -> None:
        """Returns once the breaker is open (at once if it is)."""
        if self._breaker.state == "open":
            return
        if self._opened is None:
            self._opened = asyncio.Event()
        opened = self._opened
        self._waiting += 1
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(BREAKER_CHECK_S, self._check)
        try:
            await opened.wait()
        finally:
            self._waiting -= 1
            if not self._waiting:  # nobody waits: no timer, nor an event bound to this loop
                self._opened = None
                if self._handle is not None:
                    self._handle.cancel()
                    self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._breaker.state == "open" and self._opened is not None:
            self._opened.set()  # every waiter wakes; later ones wait for the next opening
            self._opened = None
        elif self._waiting:
            self._handle = asyncio.get_running_loop().call_later(BREAKER_CHECK_S, self._check)


class Connector(Protocol):
    name: str

    async def connect(self, transcription: bool = False) -> SessionConnection:
        """A new session at the target (a transcription session: `?intent=transcription`
        upstream; a cascade's VAD and speech to text)."""
        ...

    async def aclose(self) -> None: ...


class RealtimeTarget:
    def __init__(
        self,
        name: str,
        connector: Connector,
        signals: TargetSignals,
        price: RealtimePrice,
        *,
        clock: Clock,
        max_sessions: int | None = None,
        first_output_s: float | None = None,
        silence_s: float | None = None,
    ) -> None:
        self.name = name
        self.connector = connector
        self.signals = signals
        self.price = price
        self.max_sessions = max_sessions
        #: a response's start to its first output, at most (None: not watched;
        #: `router.realtime.stall`)
        self.first_output_s = first_output_s
        #: the longest silence of the upstream in a response (None: not watched)
        self.silence_s = silence_s
        #: upgrade to `session.created`, seconds (an EWMA)
        self.connect_time = Ewma(signals.completion_window_s, clock)
        #: commit to the transcript's first text, in transcription sessions
        self.transcript = TranscriptTime(signals.completion_window_s, signals.prior_ttft_s, clock)
        self.breaker_watch = BreakerWatch(signals.breaker)

    @property
    def sessions(self) -> int:
        return self.signals.in_flight.count

    @property
    def has_room(self) -> bool:
        return self.max_sessions is None or self.sessions < self.max_sessions


class Hold:
    """One upstream session's hold on its target: a share of its sessions, and what
    it measures there. `release()` in `finally`."""

    __slots__ = ("_attempt", "_failure_told", "target")

    def __init__(self, target: RealtimeTarget) -> None:
        self.target = target
        self._attempt: Attempt = target.signals.begin(0)
        #: a failure of the target already counted by its breaker since the last
        #: thing the upstream did right: the migration it causes is the same incident
        self._failure_told = False

    @property
    def admitted(self) -> bool:
        return self._attempt.admitted

    def connected(self, seconds: float) -> None:
        """The session exists: the target is healthy (closes a half-open breaker)."""
        self.target.connect_time.observe(seconds)
        self._attempt.finished()

    def connect_failed(self, err: UpstreamError) -> None:
        self._attempt.failed(err)

    def failed(self) -> None:
        """The upstream session broke after it opened. A failure it already told (a
        transcription failed with its own `server_error`, then the `server_error` that
        ends the session, as a cascade's failing speech-to-text stage sends) is one
        incident: counted once."""
        if self._failure_told:
            self._failure_told = False
            return
        self.target.signals.breaker.record_failure()

    def ttfa(self, seconds: float) -> None:
        self._failure_told = False
        signals = self.target.signals
        signals.ttft.observe(seconds)
        signals.ttft_sketch.observe(seconds)

    def transcript(self, seconds: float) -> None:
        """A committed turn's first transcript text, `seconds` after the commit."""
        self._failure_told = False
        self.target.transcript.observe(seconds)

    def transcript_failed(self, waited_s: float | None, *, by_target: bool) -> None:
        """A committed turn's transcription failed, `waited_s` after the commit (None:
        not timed). The target's own error (`by_target`) counts against its breaker,
        so a target failing every transcript is left (live sessions move when it
        opens); a refusal of the audio does not: one client's audio must not open a
        target's breaker for every other session."""
        if waited_s is not None:
            self.target.transcript.failed(waited_s)
        if by_target:
            self.target.signals.breaker.record_failure()
            self._failure_told = True

    def no_audio(self, waited_s: float) -> None:
        """A response ended without audio after `waited_s`: TTFA is at least that."""
        self._failure_told = False
        signals = self.target.signals
        if waited_s > signals.ttft.value:
            signals.ttft_sketch.observe(waited_s)
            signals.ttft.observe_lower_bound(waited_s)

    def rate_limits(self, rate_limits: object) -> None:
        self.target.signals.provider_limits.update(rate_limit_headers(rate_limits))

    def release(self) -> None:
        self._attempt.release()


@dataclass(slots=True, eq=False)
class Leg:
    """One upstream session of a client's session."""

    target: RealtimeTarget
    conn: SessionConnection
    hold: Hold
    opened_at: float
    #: set once a migration has replaced this leg
    replaced: asyncio.Event = field(default_factory=asyncio.Event)


async def open_leg(
    candidates: Sequence[RealtimeTarget],
    *,
    route: str,
    events: SessionEvents,
    now: float,
    force: bool = False,
    transcription: bool = False,
) -> Leg:
    """A session at the first candidate that opens one. Raises `NoTargetAvailable`
    when none could be tried, `AllTargetsFailed` when all that were tried failed.

    `force` tries targets whose breaker would refuse: the last resort of a migration,
    when keeping a live conversation is worth a probe more than the breaker allows."""
    failures: list[UpstreamError] = []
    for target in candidates:
        if not target.has_room:
            continue
        hold = Hold(target)
        if not hold.admitted and not force:
            hold.release()
            continue
        try:
            conn = await target.connector.connect(transcription)
        except UpstreamError as err:
            hold.connect_failed(err)
            hold.release()
            failures.append(err)
            events.session_attempt_failed(route, err)
            continue
        except BaseException:
            hold.release()
            raise
        hold.connected(conn.connect_s)
        events.upstream_connected(route, target.name, conn.connect_s)
        return Leg(target, conn, hold, now)
    if failures:
        raise AllTargetsFailed("no realtime target of the route opened a session", failures)
    raise NoTargetAvailable("no realtime target of the route has room or is available")
