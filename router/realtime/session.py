"""One client's realtime session: the relay, its limits, and migration.

Four tasks run per session: the client pump (client -> upstream), the upstream
pump (upstream -> client), a supervisor (idle, duration and upstream-age limits,
the target's breaker) and a watchdog (a response late for its first output, or an
upstream silent in one: `router.realtime.stall`). Frames pass unchanged; each is
sniffed for its type (`router.realtime.wire`) and only the few the router needs are
decoded. Back-pressure is the sockets': a pump awaits each send, and uvicorn stops
reading the client while an event waits, so nothing is buffered without bound.

When the upstream session breaks (an abnormal close, a `server_error`, the
provider's `session_expired`, a stall), reaches `max_upstream_s`, or its target's
breaker opens, the session migrates (`router.realtime.migrate`): the client pump
holds the client's next frame, a new upstream session is opened on the best
eligible target, the configuration and conversation are replayed, and the relay
resumes, without the client reconnecting. What the client sent that the old
upstream never answered goes along: item creates, deletes, retrieves and
truncations (`router.realtime.pending_items`), buffer commits and clears among the uncommitted
audio (`router.realtime.input_audio`), response requests.

Close codes to the client: 1000 when the session ends normally or idles out (after
an `error` event saying so), 1008 past `max_duration_s`, 1003 after an `error` event
for a binary or non-JSON frame, 1011 when no target could take the session over;
an upstream's own close that is not a failure is passed on.

A transcription session (`transcription`) is relayed the same way; it has no
answers to time and no conversation to replay. The module is kept whole past
400 lines: the two pumps, the supervisor and the watchdog share one session's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from router.clock import Clock
from router.errors import UpstreamConnectError
from router.realtime.client import ClientGone, ClientSocket, quiet
from router.realtime.clocks import ResponseClock
from router.realtime.conversation import REPLAY_EVENT_PREFIX, Conversation
from router.realtime.events import (
    MigrationReason,
    SessionEnd,
    SessionEvents,
    TranscriptionFailure,
)
from router.realtime.input_audio import InputAudio
from router.realtime.limits import End, Migrate, SessionLimits, supervise
from router.realtime.migrate import migrate
from router.realtime.out_of_band import OutOfBand
from router.realtime.pending_items import EDITS, PendingItems
from router.realtime.session_config import SessionConfig
from router.realtime.stall import Progress, watch
from router.realtime.target import Leg
from router.realtime.usage import RealtimeUsage, transcription_cost
from router.realtime.wire import (
    ARGUMENTS_DELTA,
    AUDIO_DELTA,
    BUFFER_ENDS,
    CLIENT_PARSED,
    OUTPUT_DELTAS,
    SERVER_PARSED,
    TEXT_DELTAS,
    TRANSCRIPT_DELTA,
    b64_bytes,
    delta_b64_chars,
    dumps,
    error_event,
    names_event,
    parse,
    sniff,
)
from router.upstream.realtime import Closed

log = logging.getLogger("firsttoken.realtime")

#: upstream close codes that mean the upstream failed (the openai SDK's reconnect set)
MIGRATE_ON_CLOSE: frozenset[int] = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015})
#: a user's turn (speech, or uncommitted audio) holds a proactive move back this long
#: at most: a VAD that never hears the end of speech (noise) must not pin a session
#: to an old or failing upstream
USER_TURN_MAX_S = 30.0
APPEND = "input_audio_buffer.append"


Reopen = Callable[[MigrationReason, Leg], Awaitable[Leg]]


class Session:
    def __init__(
        self,
        *,
        route: str,
        client: ClientSocket,
        leg: Leg,
        reopen: Reopen,
        events: SessionEvents,
        limits: SessionLimits,
        clock: Clock,
        client_name: str | None = None,
        initial: Mapping[str, Any] | None = None,
        transcription: bool = False,
    ) -> None:
        self.route = route
        self.client = client
        self.leg = leg
        self.reopen = reopen
        self.events = events
        self.limits = limits
        self.clock = clock
        self.client_name = client_name
        #: a transcription session: no answers to time, no conversation to replay
        self.transcription = transcription
        self.started_at = clock()
        # an ephemeral key's configuration comes before the client's
        self.config = SessionConfig(initial, "transcription" if transcription else "realtime")
        self.conversation = Conversation()
        #: the client's item creates, deletes, retrieves and truncates no upstream answered
        self.pending_items = PendingItems()
        self.response_clock = ResponseClock(clock)
        #: the conversation's response as the stall watchdog sees it
        self.progress = Progress()
        self.usage = RealtimeUsage()
        self.cost_usd = 0.0
        self.migrations: list[tuple[MigrationReason, str, str, float]] = []
        #: the conversation's response in flight (response.created to response.done)
        self.response_id: str | None = None
        #: out-of-band responses (`conversation: none`) asked for and in flight
        self.out_of_band = OutOfBand()
        #: the last response.create sent that no response.created answered yet
        self.pending_create: str | None = None
        #: the response.create behind the response in flight (for regenerate)
        self.create_frame: str | None = None
        self.audio_item: str | None = None
        self.migrating = False
        #: the client frame being delivered (a migration must not send it twice)
        self.holding: str | None = None
        #: the client pump waits in `_forward`: it delivers `holding` to the new leg
        self.forwarding = False
        #: a held frame a migration took over (the pump's send went to a dying leg)
        self.taken: str | None = None
        #: set except while a migration holds the client's frames
        self.resumed = asyncio.Event()
        self.resumed.set()
        #: no proactive move (upstream age, breaker) before this time
        self.proactive_after = 0.0
        #: since when the user's turn is open: speech the server's VAD heard start
        #: (until the answer's `response.created`), or audio appended with VAD off and
        #: not committed yet. A proactive move waits for it to close: its audio would
        #: be carried over (`input_audio`), but the turn is answered where it was heard.
        self.user_turn_at: float | None = None
        #: the append frames the upstream holds uncommitted, appended again after a move
        self.input_audio = InputAudio(limits.input_audio_bytes)
        #: acknowledgements of a replay, not relayed
        self.swallow_items: set[str] = set()
        self.swallow_session_updated = 0
        self.last_client_frame = self.started_at
        #: when the last user turn was committed, until its transcript's first text
        self.committed_at: float | None = None
        #: closes of replaced upstream sessions, still waiting for the peer
        self.background: set[asyncio.Task[None]] = set()

    def _own_transcripts(self) -> bool:
        """Input transcripts the client did not ask for (`audio.input.transcription`
        unset) are not the client's: the router's (`migrate.transcribe`), or a
        cascade's, which transcribes every turn to answer it. OpenAI sends none then."""
        config = self.config
        return config.kind == "realtime" and not config.hears()

    def calm(self, now: float) -> bool:
        """A pause a proactive move may take: no response asked for or in flight, and
        no user turn open (for less than `USER_TURN_MAX_S`)."""
        if self.response_id is not None or self.pending_create is not None:
            return False
        if not self.out_of_band.idle:
            return False
        since = self.user_turn_at
        return since is None or now - since >= USER_TURN_MAX_S

    # -- the whole session --------------------------------------------------------------

    async def run(self) -> SessionEnd:
        """Relay until the session ends; always closes the upstream and releases holds."""
        end = End("client_closed")
        client_task: asyncio.Task[End] | None = None
        try:
            # before the first send: session_closed, in `finally`, pairs with it
            self.events.session_opened(self.route, self.leg.target.name)
            configured = self.config.replay_event(self.limits.transcribe)
            if configured is not None:  # upstream first; a dead leg migrates
                with contextlib.suppress(UpstreamConnectError):
                    await self.leg.conn.send(configured)
                    self.swallow_session_updated += 1
            await self.client.send(self.config.applied_to(self.leg.conn.created))
            client_task = asyncio.ensure_future(self._client_pump())
            while True:
                outcome = await self._relay_leg(client_task)
                if isinstance(outcome, End):
                    end = outcome
                    break
                if not await migrate(self, outcome.reason):
                    end = End(
                        "no_target",
                        1011,
                        error_event(
                            "The session's upstream failed and no target could take it over.",
                            type="server_error",
                            code="upstream_unavailable",
                        ),
                    )
                    break
        except ClientGone:
            end = End("client_closed")
        finally:
            if client_task is not None:
                client_task.cancel()
            await self._finish(end)
        return end.why

    async def _relay_leg(self, client_task: asyncio.Task[End]) -> End | Migrate:
        leg = self.leg
        upstream_task = asyncio.ensure_future(self._upstream_pump(leg))
        supervisor = asyncio.ensure_future(supervise(self, leg))
        watchdog = asyncio.ensure_future(watch(self, leg))
        try:
            done, _ = await asyncio.wait(
                (client_task, upstream_task, supervisor, watchdog),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            upstream_task.cancel()
            supervisor.cancel()
            watchdog.cancel()
        # The client's own end wins: a close seen together with an upstream failure
        # needs no migration.
        for task in (client_task, upstream_task, supervisor, watchdog):
            if task in done:
                return task.result()
        raise AssertionError("asyncio.wait returned nothing done")

    async def _finish(self, end: End) -> None:
        leg = self.leg
        with quiet():
            await leg.conn.close(1000)  # first: the upstream stops generating at once
        leg.hold.release()
        for task in self.background:
            task.cancel()
        if end.code is not None:
            with quiet():
                if end.error is not None:
                    await self.client.send(end.error)
                await self.client.close(end.code)
        self.events.session_closed(
            self.route,
            leg.target.name,
            end.why,
            duration_s=self.clock() - self.started_at,
            usage=self.usage,
            cost_usd=self.cost_usd,
            client=self.client_name,
        )

    # -- client -> upstream -------------------------------------------------------------

    async def _client_pump(self) -> End:
        receive, clock = self.client.receive, self.clock
        while True:
            frame = await receive()
            if frame is None:
                return End("client_closed")
            now = self.last_client_frame = clock()
            if type(frame) is not str:
                return _bad_input("Binary frames are not supported: send JSON text events.")
            kind = sniff(frame)
            if kind is None:
                return _bad_input("The frame is not a JSON object with a string 'type'.")
            if kind == APPEND:
                if self.user_turn_at is None and self.config.manual_turns:
                    self.user_turn_at = now
                self.input_audio.appended(frame, self.user_turn_at is not None)
            elif kind in CLIENT_PARSED:
                event = parse(frame)
                session = event.get("session") if event is not None else None
                if isinstance(session, dict):
                    self.config.update(session)
                    model = self.limits.transcribe
                    if model is not None and self.config.needs_transcription(model):
                        asked = self.config.transcribing(session, model)
                        frame = dumps({**event, "session": asked})  # type: ignore[dict-item]
            elif kind in BUFFER_ENDS:
                self.input_audio.marked(frame)
            elif kind in EDITS and not self.transcription:
                event = parse(frame)
                if event is not None:
                    frame = self.pending_items.sent(kind, frame, event)
            elif kind == "response.cancel":
                self._cancelling(frame)
            elif kind == "response.create":
                if self.out_of_band.ask(frame, now):
                    self.progress.wake.set()
                else:
                    self.response_clock.start()
                    self.progress.asked(now)
                    self.pending_create = frame  # before the send: the answer may come first
            self.holding = frame
            if self.migrating:
                await self._forward(frame)
            else:
                try:  # the common case inline: one coroutine less per frame
                    await self.leg.conn.send(frame)
                except UpstreamConnectError:
                    if self.taken is not frame:  # else a migration sent it already
                        await self._forward(frame)
            self.holding = self.taken = None

    def _cancelling(self, frame: str) -> None:
        """The client cancels a response. The conversation's (no id: the one in
        progress or about to be; or its id) is then neither late nor asked again by a
        migration; an out-of-band one's is not the conversation's business."""
        event = parse(frame)
        wanted = event.get("response_id") if event is not None else None
        if wanted is None or wanted == self.response_id:
            self.progress.cancelled = True
        elif isinstance(wanted, str):
            self.out_of_band.cancelled(wanted)

    async def _forward(self, frame: str) -> None:
        """Send to the current upstream; across a migration, to the new one."""
        self.forwarding = True
        try:
            while self.taken is not frame:  # else a migration made it (a truncation)
                leg = self.leg
                if self.migrating:
                    await self.resumed.wait()
                    continue
                try:
                    await leg.conn.send(frame)
                    break
                except UpstreamConnectError:
                    await leg.replaced.wait()  # the upstream pump sees the close, migrates
        finally:
            self.forwarding = False

    # -- upstream -> client -------------------------------------------------------------

    async def _upstream_pump(self, leg: Leg) -> End | Migrate:
        receive, send = leg.conn.receive, self.client.send
        conversation, clock = self.conversation, self.response_clock
        out_of_band, progress = self.out_of_band, self.progress
        while True:
            frame = await receive()
            progress.frames += 1
            if type(frame) is str:
                kind = sniff(frame)
                if (
                    out_of_band.live
                    and kind in OUTPUT_DELTAS
                    and (aside := out_of_band.owner(frame)) is not None
                ):
                    if out_of_band.waiting:  # not the conversation's to time
                        self._aside_delta(leg, aside)
                elif kind == AUDIO_DELTA:
                    progress.first_output = True
                    ttfa = clock.audio() if clock.pending else None
                    if ttfa is not None:
                        leg.hold.ttfa(ttfa)
                        self.events.ttfa_observed(self.route, leg.target.name, ttfa)
                    if self.audio_item is not None:
                        conversation.audio_sent(self.audio_item, b64_bytes(delta_b64_chars(frame)))
                elif kind in TEXT_DELTAS:
                    progress.first_output = True
                    clock.text()
                elif kind == TRANSCRIPT_DELTA:
                    self._transcribed(leg)
                    if self._own_transcripts():
                        continue  # asked for by the router, not the client
                elif kind == ARGUMENTS_DELTA:
                    progress.first_output = True
                elif kind == "input_audio_buffer.committed":
                    self._input_committed(frame)
                elif kind == "input_audio_buffer.speech_started":
                    if self.user_turn_at is None:
                        self.user_turn_at = self.clock()
                elif kind in SERVER_PARSED:
                    verdict = self._server_event(leg, str(kind), frame)
                    if verdict is not None:
                        if isinstance(verdict, Migrate):
                            return verdict
                        continue  # swallowed
                elif kind == "session.updated" and self.swallow_session_updated:
                    self.swallow_session_updated -= 1
                    continue
                elif kind == "session.updated" and self._own_transcripts():
                    frame = self.config.as_client_sees(frame)
                elif kind == "input_audio_buffer.cleared":
                    self.input_audio.consumed()
                    self.user_turn_at = None
                await send(frame)
            elif isinstance(frame, Closed):
                if frame.code in MIGRATE_ON_CLOSE:
                    return Migrate("upstream_closed")
                code = frame.code if frame.code not in (1005, 1006, 1015) else 1011
                return End("upstream_closed", code)
            # an upstream binary frame is not part of the protocol: dropped

    def _aside_delta(self, leg: Leg, aside: str) -> None:
        """An out-of-band response's delta: its time to first delta if it is the first."""
        waited = self.out_of_band.first_delta(aside, self.clock())
        if waited is not None:
            self.events.out_of_band_delta_observed(self.route, leg.target.name, waited)

    def _input_committed(self, frame: str) -> None:
        """The upstream committed its input buffer: a user turn to answer (and time)."""
        event = parse(frame)
        item_id = event.get("item_id") if event is not None else None
        self.input_audio.committed(item_id if isinstance(item_id, str) else None)
        self.committed_at = self.clock()
        if not self.transcription:  # a transcript is no answer to time
            self.response_clock.start()
            if self.config.auto_responses:
                self.progress.asked(self.committed_at)
        if self.config.manual_turns or self.transcription:
            self.user_turn_at = None

    def _server_event(self, leg: Leg, kind: str, frame: str) -> Migrate | bool | None:
        """Learn from one decoded server event. Returns a migration, True to swallow
        the event, or None to relay it."""
        event = parse(frame)
        if event is None:
            return None
        if kind in ("conversation.item.added", "conversation.item.done"):
            item = event.get("item")
            if not isinstance(item, dict):
                return None
            item_id = item.get("id")
            self.pending_items.answered(kind, item_id)
            if item_id in self.swallow_items:
                if kind == "conversation.item.done":
                    self.swallow_items.discard(str(item_id))
                return True
            self.conversation.observe(item, _str(event.get("previous_item_id")))
            if item.get("role") == "assistant" and isinstance(item_id, str):
                self.audio_item = item_id
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._transcribed(leg)  # a model that sends no deltas: its transcript is first
            self._bill_transcript(leg, event)
            item_id, transcript = str(event.get("item_id")), str(event.get("transcript"))
            self.conversation.transcript(item_id, transcript)
            if transcript:
                self.input_audio.transcribed(item_id)
            return True if self._own_transcripts() else None
        elif kind == "conversation.item.input_audio_transcription.failed":
            self._transcription_failed(leg, event)
            return True if self._own_transcripts() else None
        elif kind == "conversation.item.retrieved":
            item = event.get("item")
            if isinstance(item, dict):
                self.pending_items.answered(kind, item.get("id"))
        elif kind == "conversation.item.deleted":
            self.pending_items.answered(kind, event.get("item_id"))
            self.conversation.delete(str(event.get("item_id")))
        elif kind == "conversation.item.truncated":
            self.pending_items.answered(kind, event.get("item_id"))
            end_ms = event.get("audio_end_ms")
            if isinstance(end_ms, int):
                item_id = str(event.get("item_id"))
                self.conversation.truncate(item_id, end_ms, self.config.output_bytes_per_ms())
        elif kind == "response.created":
            response = event.get("response")
            if isinstance(response, dict):
                if self.out_of_band.created(response):
                    return None
                self.response_id = _str(response.get("id"))
            self.create_frame, self.pending_create = self.pending_create, None
            self.user_turn_at = None  # the user's turn is being answered
        elif kind == "response.done":
            self._response_done(leg, event)
        elif kind == "rate_limits.updated":
            leg.hold.rate_limits(event.get("rate_limits"))
        elif kind == "error":
            return self._error(event)
        return None

    def _transcribed(self, leg: Leg) -> None:
        """The first text of a committed turn's transcript: its time to transcript."""
        if self.committed_at is not None:
            waited = self.clock() - self.committed_at
            self.committed_at = None
            leg.hold.transcript(waited)
            self.events.transcript_observed(self.route, leg.target.name, waited)

    def _transcription_failed(self, leg: Leg, event: dict[str, object]) -> None:
        """A committed turn that will have no transcript (the event is relayed as is)."""
        error = event.get("error")
        by_target = isinstance(error, dict) and error.get("type") == "server_error"
        waited = None
        if self.committed_at is not None:
            waited = self.clock() - self.committed_at
            self.committed_at = None
        leg.hold.transcript_failed(waited, by_target=by_target)
        cause: TranscriptionFailure = "server_error" if by_target else "other"
        self.events.transcription_failed(self.route, leg.target.name, cause)

    def _bill_transcript(self, leg: Leg, event: dict[str, object]) -> None:
        """A transcript's cost: its usage at the target's transcription prices, or a
        cascade's own account of its speech-to-text stage."""
        cost = _own_cost(event)
        if cost is None:
            cost = transcription_cost(event.get("usage"), leg.target.price.transcription)
        if cost > 0.0:
            self.cost_usd += cost
            self.events.transcription_billed(self.route, leg.target.name, cost)

    def _response_done(self, leg: Leg, event: dict[str, object]) -> None:
        response = event.get("response")
        if not isinstance(response, dict):
            return
        if self.out_of_band.done(response.get("id")):
            pass  # not the conversation's: its clock and create frame are not this one's
        else:
            if _str(response.get("id")) == self.response_id:
                self.response_id = self.create_frame = None
            self.progress.done()
            waited = self.response_clock.done()
            if waited is not None and response.get("status") == "completed":
                leg.hold.no_audio(waited)
        usage = RealtimeUsage.from_response(response)
        cost = usage.cost(leg.target.price) if usage is not None else 0.0
        own = _own_cost(response)
        if own is not None:
            cost = own
        if usage is not None:
            self.usage = self.usage + usage
            self.cost_usd += cost
        self.events.realtime_response_done(
            self.route,
            leg.target.name,
            str(response.get("status")),
            usage=usage,
            cost_usd=cost,
            client=self.client_name,
        )

    def _error(self, event: dict[str, object]) -> Migrate | bool | None:
        error = event.get("error")
        if not isinstance(error, dict):
            return None
        if error.get("code") == "session_expired":
            return Migrate("session_expired")
        if error.get("type") == "server_error":
            return Migrate("server_error")
        about = error.get("event_id")
        if isinstance(about, str) and about.startswith(REPLAY_EVENT_PREFIX):
            log.info("a replayed event was refused on %s: %s", self.leg.target.name, error)
            return True
        if isinstance(about, str) and (
            self.out_of_band.refused(about)
            or self.pending_items.refused(about)
            or self.input_audio.refused(about)
        ):
            return None  # nothing is coming for that request: it is not sent again
        if error.get("code") == "input_audio_buffer_commit_empty":
            self.input_audio.refused(None)
        if self.pending_create is not None and (
            not isinstance(about, str) or names_event(self.pending_create, about)
        ):
            self._create_refused()
        return None

    def _create_refused(self) -> None:
        """A `response.create` no response answered was refused (an `error` came first,
        naming it or no event): no response is coming for it, nothing is late."""
        self.pending_create = None
        if self.response_id is None:  # else the response in flight is still out
            self.response_clock.done()
            self.progress.done()


def _bad_input(message: str) -> End:
    return End("bad_input", 1003, error_event(message, code="invalid_event"))


def _own_cost(event: dict[str, object]) -> float | None:
    """A cascade's account of what its stages cost (`firsttoken.cost_usd`), if given."""
    own = event.get("firsttoken")
    if isinstance(own, dict) and isinstance(own.get("cost_usd"), int | float):
        return float(own["cost_usd"])
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
