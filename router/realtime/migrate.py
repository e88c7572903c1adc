"""Moving a live session to a new upstream session, without the client reconnecting.

While a migration runs the client pump holds the client's next frame (and uvicorn
stops reading behind it), so nothing is lost or reordered:

1. a response in flight ends for the client with `response.done`, status `failed`
   (code `upstream_migrated`): every `response.created` the client saw gets its end;
2. a new upstream session is opened on the best eligible target (`Reopen`: after a
   failure the failed target is tried last);
3. the configuration (one `session.update`) and the conversation (one
   `conversation.item.create` per item, under the ids the client knows) are sent;
   the new upstream's acknowledgements of them are not relayed; the last committed
   user turn whose words are not known as text goes as its audio (an `input_audio`
   item); then the items the client created, deleted or asked for that the old
   upstream never answered (`router.realtime.pending_items`: their answers are
   relayed, the client never had them; a truncation is made in the copy before the
   replay, the one the client pump holds too), and the
   caller's audio the old upstream held uncommitted, with
   the client's commits and clears among it that it never answered
   (`router.realtime.input_audio`);
4. a `response.create` that no response answered yet is sent again (out-of-band
   ones too), and so is a server VAD's ask (a commit no response answered yet); the
   interrupted response is asked for again when the user heard nothing of it (no
   output yet: a late or dead target's turn goes to the next one), or with
   `migrate: {regenerate: true}`;
5. the relay resumes on the new leg, and the old upstream socket is closed.

What does not carry over: the voice (a new session may speak with another), audio
itself (user audio that was never transcribed, but for the last committed turn; of
the uncommitted input buffer, what is past `migrate.input_audio_kib`), the partial
text of the interrupted response, and other server-side state. Out-of-band
responses (`conversation: none`) are not part of the replayed conversation: one in
flight ends failed, and is asked again as the conversation's is (when the client had
none of its output and did not cancel it, or under `regenerate`); one asked for and
not begun is asked again (`router.realtime.out_of_band`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from router.errors import AllTargetsFailed, NoTargetAvailable, UpstreamConnectError
from router.realtime.events import MigrationReason
from router.realtime.wire import failed_response_done, truncated_event

if TYPE_CHECKING:
    from router.realtime.session import Session
    from router.realtime.target import Leg, RealtimeTarget

log = logging.getLogger("firsttoken.realtime")

#: reasons that count against the old target (its breaker hears of them)
FAILURES: frozenset[MigrationReason] = frozenset({"upstream_closed", "server_error", "stalled"})
#: moves made while the old upstream session still works (between responses)
PROACTIVE: frozenset[MigrationReason] = frozenset({"max_upstream", "breaker_open"})
#: after a proactive move found no target, the next try waits this long
PROACTIVE_RETRY_S = 5.0
#: a brand-new upstream session that fails during its replay: try another this often
REPLAY_TRIES = 3
RESPONSE_CREATE = '{"type":"response.create"}'


def reorder(
    candidates: Sequence[RealtimeTarget], old: str, reason: MigrationReason
) -> list[RealtimeTarget]:
    """After a failure the old target goes last; an expired or aged session may stay."""
    if reason in ("session_expired", "max_upstream"):
        return list(candidates)
    return [t for t in candidates if t.name != old] + [t for t in candidates if t.name == old]


async def migrate(session: Session, reason: MigrationReason) -> bool:
    """Replace the session's leg. False when the leg is dead and no target could take
    the session; a proactive move that finds no target keeps the leg (True)."""
    if reason in PROACTIVE and not session.calm(session.clock()):
        # The supervisor saw a pause between responses, and the client asked for one
        # since (it went to this leg): moving now would retire the leg with the response
        # it is making and never ask the new one (or the user began to speak: the move
        # would drop that audio). Stay; the next pause is soon.
        return True
    old = session.leg
    started = session.clock()
    session.migrating = True  # from here the client's frames wait for the new leg
    session.resumed.clear()
    try:
        if reason in PROACTIVE:
            new = await _open_and_replay(session, reason, old, None)
            if new is None:
                session.proactive_after = session.clock() + PROACTIVE_RETRY_S
                return True
        else:
            new = await _replace_dead_leg(session, reason, old)
            if new is None:
                return False
    finally:
        session.migrating = False
        session.resumed.set()
    session.leg = new
    session.create_frame = None
    session.user_turn_at = None  # the new upstream's input buffer is empty
    seconds = session.clock() - started
    session.migrations.append((reason, old.target.name, new.target.name, seconds))
    session.events.migrated(session.route, old.target.name, new.target.name, reason, seconds)
    log.info(
        "session on route %s migrated %s -> %s (%s) in %.1f ms",
        session.route,
        old.target.name,
        new.target.name,
        reason,
        seconds * 1000,
    )
    old.replaced.set()
    closing = asyncio.ensure_future(_retire(old))
    session.background.add(closing)
    closing.add_done_callback(session.background.discard)
    return True


async def _replace_dead_leg(session: Session, reason: MigrationReason, old: Leg) -> Leg | None:
    """End what the dead upstream left open, then open and replay a new one."""
    if reason in FAILURES:
        old.hold.failed()
    interrupted = session.response_id
    why = f"The upstream session ended ({reason}); the conversation continues on a new one."
    asides = session.out_of_band.interrupted(
        regenerate=session.limits.regenerate, retried=reason == "stalled"
    )
    for response_id in (*asides, interrupted):
        if response_id is not None:
            await session.client.send(failed_response_done(response_id, "upstream_migrated", why))
            # booked as the client saw it (`firsttoken_realtime_responses_total`, failed):
            # the dead upstream never sends its own `response.done`
            session.events.realtime_response_done(
                session.route,
                old.target.name,
                "failed",
                usage=None,
                cost_usd=0.0,
                client=session.client_name,
            )
    progress = session.progress
    unheard = progress.unheard
    asked_by_vad = unheard and interrupted is None and session.pending_create is None
    session.response_id = None
    session.audio_item = None
    waited = session.response_clock.done()
    if waited is not None:
        old.hold.no_audio(waited)
    again = session.pending_create if not progress.cancelled else None
    if again is not None and again is session.holding:
        if session.forwarding:
            again = None  # the client pump delivers it to the new leg itself
        else:
            # The pump's send to the dead leg has not returned (its writer waits), and
            # may yet "succeed" into the closed socket: the migration sends it instead.
            session.taken = again
    wanted = not progress.cancelled  # the client did not talk over it
    if (
        again is None
        and interrupted is not None
        and wanted
        and (session.limits.regenerate or unheard)
    ):
        # the user heard nothing of it: asked again whatever `regenerate` says
        again = session.create_frame or RESPONSE_CREATE
    elif again is None and asked_by_vad:  # a commit asked for it; nothing answered yet
        again = RESPONSE_CREATE
    retried = progress.retried or reason == "stalled"
    progress.done()
    # out-of-band requests not answered yet (the one the client pump holds, it delivers)
    asked = [f for f in session.out_of_band.asked if f is not session.holding]
    return await _open_and_replay(session, reason, old, again, asked, retried=retried)


async def _open_and_replay(
    session: Session,
    reason: MigrationReason,
    old: Leg,
    again: str | None,
    asked: Sequence[str] = (),
    *,
    retried: bool = False,
) -> Leg | None:
    audio = _held_once(session, session.input_audio.frames())
    items = _held_once(session, session.pending_items.frames)
    turn = {} if session.transcription else session.input_audio.turn_audio()
    for _ in range(REPLAY_TRIES):
        try:
            new = await session.reopen(reason, old)
        except (AllTargetsFailed, NoTargetAvailable) as err:
            if reason in PROACTIVE:  # the session stays where it is: nothing is lost
                # (every session on a target whose breaker opened asks, so at INFO)
                log.info(
                    "session on route %s stays on %s (%s): %s",
                    session.route,
                    old.target.name,
                    reason,
                    err.message,
                )
            else:
                log.warning("session on route %s cannot migrate: %s", session.route, err.message)
            return None
        await _truncate_as_asked(session)
        frames = []
        config = session.config.replay_event(session.limits.transcribe)
        if config is not None:
            frames.append(config)
        if not session.transcription:  # a transcription session has no conversation
            frames.extend(session.conversation.replay_events(turn))
            frames.extend(items)
        frames.extend(audio)
        if again is not None:
            frames.append(again)
        frames.extend(asked)
        try:
            for frame in frames:
                await new.conn.send(frame)
        except UpstreamConnectError:
            new.hold.failed()
            new.hold.release()
            continue
        session.swallow_session_updated = 1 if config is not None else 0
        if not session.transcription:
            session.swallow_items = set(session.conversation.replayable_ids(turn))
        if again is not None:
            session.pending_create = again
            session.response_clock.start()
            # moved once for being late: its second try is not moved for that again
            session.progress.asked(session.clock(), retried=retried)
        return new
    return None


async def _truncate_as_asked(session: Session) -> None:
    """The client's truncations the old upstream never answered: made in the copy the
    new target is given, and answered to the client as the old upstream owed it. One
    the client pump holds is taken too, even while the pump waits to forward it: the new
    target holds the answer as text, and would refuse to truncate its audio."""
    held = session.holding
    for frame, item_id, end_ms, event in session.pending_items.take_truncations():
        if frame is held:
            session.taken = held
        session.conversation.truncate(item_id, end_ms, session.config.output_bytes_per_ms())
        index = event.get("content_index", 0)
        await session.client.send(truncated_event(item_id, index, end_ms))


def _held_once(session: Session, frames: list[str]) -> list[str]:
    """Client frames to send the new upstream (uncommitted appends, unconfirmed item
    creates). One the client pump holds goes once: by the pump if it waits to forward it
    to the new leg, else here (its send went to the dying leg, and may yet "succeed"
    into the closed socket), the pump told so."""
    held = session.holding
    if held is None or not any(frame is held for frame in frames):
        return frames
    if session.forwarding:
        return [frame for frame in frames if frame is not held]
    session.taken = held
    return frames


async def _retire(old: Leg) -> None:
    try:
        await old.conn.close(1000)
    except (OSError, RuntimeError, UpstreamConnectError):
        pass
    finally:
        old.hold.release()
