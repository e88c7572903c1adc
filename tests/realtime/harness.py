"""A session core against real simulators, with a scripted client in front of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from router.config import SignalsConfig, TargetConfig, TranscriptionPrice
from router.errors import UpstreamError
from router.realtime.client import ClientGone
from router.realtime.events import MigrationReason, SessionEnd, TranscriptionFailure
from router.realtime.limits import SessionLimits
from router.realtime.migrate import reorder
from router.realtime.session import Session
from router.realtime.target import Leg, RealtimeTarget, open_leg
from router.realtime.usage import RealtimeUsage
from router.signals.target import TargetSignals
from router.sim.realtime import RealtimeSim
from router.upstream.realtime import RealtimeUpstream


@dataclass(frozen=True)
class Price:
    audio_input: float = 32.0
    audio_output: float = 64.0
    text_input: float = 4.0
    text_output: float = 24.0
    cached_input: float = 0.4
    transcription: TranscriptionPrice | None = None


@dataclass
class Recorder:
    """A `SessionEvents` that keeps what it was told."""

    opened: list[str] = field(default_factory=list)
    connected: list[tuple[str, float]] = field(default_factory=list)
    failed: list[UpstreamError] = field(default_factory=list)
    closed: list[tuple[str, SessionEnd, float]] = field(default_factory=list)
    ttfa: list[tuple[str, float]] = field(default_factory=list)
    out_of_band: list[tuple[str, float]] = field(default_factory=list)
    transcripts: list[tuple[str, float]] = field(default_factory=list)
    transcription_failures: list[tuple[str, str]] = field(default_factory=list)
    #: (target, cost) of each transcript billed
    billed: list[tuple[str, float]] = field(default_factory=list)
    responses: list[tuple[str, str, RealtimeUsage | None, float]] = field(default_factory=list)
    migrations: list[tuple[str, str, MigrationReason, float]] = field(default_factory=list)

    def session_opened(self, route: str, target: str) -> None:
        self.opened.append(target)

    def upstream_connected(self, route: str, target: str, connect_s: float) -> None:
        self.connected.append((target, connect_s))

    def session_attempt_failed(self, route: str, err: UpstreamError) -> None:
        self.failed.append(err)

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
        self.closed.append((target, end, cost_usd))

    def ttfa_observed(self, route: str, target: str, seconds: float) -> None:
        self.ttfa.append((target, seconds))

    def out_of_band_delta_observed(self, route: str, target: str, seconds: float) -> None:
        self.out_of_band.append((target, seconds))

    def transcript_observed(self, route: str, target: str, seconds: float) -> None:
        self.transcripts.append((target, seconds))

    def transcription_billed(self, route: str, target: str, cost_usd: float) -> None:
        self.billed.append((target, cost_usd))

    def transcription_failed(self, route: str, target: str, cause: TranscriptionFailure) -> None:
        self.transcription_failures.append((target, cause))

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
        self.responses.append((target, status, usage, cost_usd))

    def migrated(
        self, route: str, from_target: str, to_target: str, reason: MigrationReason, seconds: float
    ) -> None:
        self.migrations.append((from_target, to_target, reason, seconds))


class ScriptedClient:
    """A `ClientSocket`: the test puts frames in and reads what the session sent."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._arrived = asyncio.Event()
        self.gone = False

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    async def send(self, text: str) -> None:
        if self.gone:
            raise ClientGone
        self.sent.append(json.loads(text))
        self._arrived.set()

    async def close(self, code: int, reason: str = "") -> None:
        self.close_code = code

    def put(self, event: dict[str, Any] | str | bytes | None) -> None:
        self.inbox.put_nowait(json.dumps(event) if isinstance(event, dict) else event)

    def types(self) -> list[str]:
        return [str(e["type"]) for e in self.sent]

    async def until(
        self, kind: str, count: int = 1, timeout_s: float = 3.0
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            while self.types().count(kind) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.sent


def make_target(
    name: str, sim: RealtimeSim, *, connect_s: float = 1.0, max_sessions: int | None = None
) -> RealtimeTarget:
    config = TargetConfig(name=name, kind="openai", base_url=sim.base_url, model="gpt-realtime")
    signals = TargetSignals(config, SignalsConfig(breaker_failures=1), time.monotonic)
    upstream = RealtimeUpstream(
        name=name, base_url=sim.base_url, model="gpt-realtime", connect_s=connect_s
    )
    return RealtimeTarget(
        name, upstream, signals, Price(), clock=time.monotonic, max_sessions=max_sessions
    )


@dataclass
class Running:
    session: Session
    client: ScriptedClient
    events: Recorder
    task: asyncio.Task[SessionEnd]


@asynccontextmanager
async def running_session(
    targets: Sequence[RealtimeTarget], limits: SessionLimits | None = None
) -> AsyncIterator[Running]:
    events = Recorder()
    client = ScriptedClient()

    async def reopen(reason: MigrationReason, old: Leg) -> Leg:
        return await open_leg(
            reorder(targets, old.target.name, reason),
            route="voice",
            events=events,
            now=time.monotonic(),
        )

    try:
        leg = await open_leg(targets, route="voice", events=events, now=time.monotonic())
    except BaseException:
        for t in targets:
            await t.connector.aclose()
        raise
    session = Session(
        route="voice",
        client=client,
        leg=leg,
        reopen=reopen,
        events=events,
        limits=limits or SessionLimits(),
        clock=time.monotonic,
    )
    task = asyncio.ensure_future(session.run())
    try:
        yield Running(session, client, events, task)
    finally:
        if not task.done():
            client.put(None)
            await asyncio.wait_for(task, 3.0)
        for t in targets:
            await t.connector.aclose()
