"""A realtime upstream late for a response's first output, or silent in one, is left
for another target (`router.realtime.stall`): the official SDK as the client, the
router under uvicorn, two Realtime simulators, one of them stalling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from tests.e2e.realtime_stack import USER, Stack, running_stack
from tests.sim.conftest import wait_for
from tests.sim.test_realtime import silence, tone, until

pytestmark = pytest.mark.anyio

FIRST_S = 0.4
SILENCE_S = 1.0
PING_S = 0.3
TEXT = {"type": "realtime", "output_modalities": ["text"]}


def config(a: RealtimeSim, b: RealtimeSim, route: str = "", silence_s: float = SILENCE_S) -> str:
    watched = (
        f"timeouts: {{connect_s: 1.0, first_token_s: {FIRST_S}, idle_s: {silence_s},"
        f" ping_s: {PING_S}}}"
    )
    return f"""
auth:
  admin_key_env: KEY_ADMIN
  keys: [{{name: voice, key_env: KEY_VOICE}}]
targets:
  - {{name: rt-a, kind: realtime, base_url: '{a.base_url}', model: gpt-realtime,
      api_key_env: UPSTREAM, {watched}}}
  - {{name: rt-b, kind: realtime, base_url: '{b.base_url}', model: gpt-realtime,
      api_key_env: UPSTREAM, {watched}}}
routes:
  - {{name: voice, targets: [rt-a, rt-b], policy: {{type: ordered}}, {route}}}
"""


async def _stack(route: str = "", silence_s: float = SILENCE_S) -> AsyncIterator[Stack]:
    async with running_stack(config_text=lambda a, b: config(a, b, route, silence_s)) as stack:
        yield stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async for running in _stack():
        yield running


@pytest.fixture
async def patient() -> AsyncIterator[Stack]:
    """Silences are not looked for within a test: only lateness moves a session."""
    async for running in _stack(silence_s=60.0):
        yield running


@pytest.fixture
async def regenerating() -> AsyncIterator[Stack]:
    async for running in _stack("migrate: {regenerate: true}"):
        yield running


def texts(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


async def ask(conn: Any, session: dict[str, Any]) -> None:
    """Configure the session, say hello, and ask for the answer."""
    await conn.session.update(session=session)
    await conn.conversation.item.create(item=USER)
    await conn.response.create()


def stalled(stack: Stack) -> float:
    return stack.metric("firsttoken_realtime_migrations_total", route="voice", reason="stalled")


async def test_a_response_late_for_its_first_output_is_answered_by_the_next_target(
    stack: Stack,
) -> None:
    stack.a.set_fault(RealtimeFault("stall_before_audio"))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        first = await until(conn, "response.done")  # the late one ends: nothing was heard
        events = await until(conn, "response.done")  # and is asked again on rt-b
    assert first[-1].response.status == "failed"
    assert first[-1].response.status_details.error.code == "upstream_migrated"
    created = [e for e in first + events if e.type == "response.created"]
    assert len(created) == 2 and created[0].response.id == first[-1].response.id
    assert events[-1].response.status == "completed" and texts(events) == "You said: hello"
    assert "error" not in [e.type for e in first + events]
    assert stalled(stack) == 1
    moved = stack.b.records[-1]
    assert moved.item_texts()[:1] == [("user", "hello")]  # the conversation went along
    await wait_for(lambda: not stack.a.open_sessions)  # the stalled upstream is closed
    rt_a = stack.router.router.runtime.realtime.targets["rt-a"]
    assert rt_a.signals.breaker.consecutive_failures == 1  # a stall is the target's failure


async def test_a_response_never_created_moves_before_the_client_sees_it(stack: Stack) -> None:
    stack.a.set_fault(RealtimeFault("hang_before_response"))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        events = await until(conn, "response.done")
    assert [e.type for e in events].count("response.created") == 1  # invisible: one response
    assert events[-1].response.status == "completed" and texts(events) == "You said: hello"
    assert stalled(stack) == 1 and stack.b.records[-1].responses[-1].status == "completed"


async def test_a_server_vad_turn_whose_answer_never_starts_is_answered_elsewhere(
    stack: Stack,
) -> None:
    stack.a.set_fault(RealtimeFault("hang_before_response"))
    vad = {
        "type": "realtime",
        "output_modalities": ["text"],
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 100},
            }
        },
    }
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=vad)  # type: ignore[arg-type]
        for chunk in [tone(20)] * 10 + [silence(20)] * 6:
            await conn.input_audio_buffer.append(audio=chunk)
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert texts(events) == f"You said: {stack.a.behaviour.transcript}"  # the user's words
    assert stalled(stack) == 1
    asked = stack.b.records[-1].responses
    assert len(asked) == 1 and asked[0].status == "completed"
    assert not stack.b.records[-1].audio_items  # its transcript had come: replayed as text


@pytest.mark.parametrize("vad", [True, False], ids=["server-vad", "manual-turns"])
async def test_a_turn_not_transcribed_yet_is_replayed_as_its_audio(stack: Stack, vad: bool) -> None:
    # No transcription asked for: the user's words exist only as the audio the router
    # relayed. The upstream hangs after the commit; the new one must hear that audio.
    stack.a.set_fault(RealtimeFault("hang_before_response"))
    detection = {"type": "server_vad", "silence_duration_ms": 100} if vad else None
    session = {
        "type": "realtime",
        "output_modalities": ["text"],
        "audio": {"input": {"turn_detection": detection}},
    }
    speech = [tone(20)] * 10 + [silence(20)] * 6
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=session)  # type: ignore[arg-type]
        for chunk in speech:
            await conn.input_audio_buffer.append(audio=chunk)
        if not vad:
            await conn.input_audio_buffer.commit()
            await conn.response.create()
        events = await until(conn, "response.done")
    committed = next(e for e in events if e.type == "input_audio_buffer.committed")
    assert events[-1].response.status == "completed"
    assert texts(events) == f"You said: {stack.b.behaviour.transcript}"  # heard on rt-b
    moved = stack.b.records[-1]
    assert list(moved.audio_items) == [committed.item_id]  # under the id the client knows
    assert moved.audio_items[committed.item_id] >= 10 * 960  # the speech, at least
    assert stalled(stack) == 1


async def test_an_upstream_silent_mid_response_is_left_and_the_response_ends_failed(
    stack: Stack,
) -> None:
    stack.a.set_fault(RealtimeFault("stall_mid_response", after_deltas=2))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        events = await until(conn, "response.done")
        # the user heard part of it: not asked again without `regenerate`
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        after = await until(conn, "response.done")
    assert texts(events) and events[-1].response.status == "failed"
    assert stalled(stack) == 1
    assert after[-1].response.status == "completed"
    assert len(stack.b.records[-1].responses) == 1  # only the second turn's


async def test_regenerate_asks_again_for_a_response_cut_by_a_silence(
    regenerating: Stack,
) -> None:
    stack = regenerating
    stack.a.set_fault(RealtimeFault("stall_mid_response", after_deltas=2))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        await until(conn, "response.done")
        again = await until(conn, "response.done")
    assert again[-1].response.status == "completed" and texts(again) == "You said: hello"


async def test_a_second_try_is_not_moved_for_being_late_again(stack: Stack) -> None:
    late = RealtimeBehaviour(ttfa_s=FIRST_S + 0.3, response_audio_ms=60)
    stack.a.set_fault(RealtimeFault("hang_before_response"))
    stack.b.behaviour = late  # past the bound, within SILENCE_S
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert stalled(stack) == 1  # moved once, then waited for rt-b


async def test_a_refused_response_create_is_not_taken_for_a_stall(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        await conn.response.create(response={"conversation": "bogus"})
        events = await until(conn, "error")
        await asyncio.sleep(FIRST_S + SILENCE_S)
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        after = await until(conn, "response.done")
    assert events[-1].error.code == "invalid_value"
    assert after[-1].response.status == "completed"
    assert stalled(stack) == 0 and len(stack.a.records) == 1


async def test_a_healthy_session_idle_between_responses_is_not_moved(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        await until(conn, "response.done")
        await asyncio.sleep(2 * SILENCE_S)  # no response out: silence is no stall
        await conn.response.create()
        after = await until(conn, "response.done")
    assert after[-1].response.status == "completed"
    assert stalled(stack) == 0 and len(stack.a.records) == 1


async def test_a_response_longer_than_the_silence_bound_is_not_cut(stack: Stack) -> None:
    # 2 s of audio paced in real time: the upstream talks all along, never silent
    stack.a.behaviour = RealtimeBehaviour(
        ttfa_s=0.01, response_audio_ms=2000, frame_interval_s=0.02
    )
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert stalled(stack) == 0 and len(stack.a.records) == 1


async def test_a_response_the_client_cancelled_is_neither_late_nor_asked_again(
    stack: Stack,
) -> None:
    # A hung upstream: nothing comes, not even the cancel's answer. The user talked
    # over the response: it is not late, and the migration when the upstream dies does
    # not ask for it again.
    stack.a.set_fault(RealtimeFault("hang_before_response", deaf=True))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        await conn.response.cancel()
        await asyncio.sleep(FIRST_S + 0.3)
        assert stalled(stack) == 0
        await stack.a.drop(1011)
        await wait_for(lambda: bool(stack.b.records))
        await asyncio.sleep(0.2)
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert len(stack.b.records[-1].responses) == 1  # the cancelled one not asked again
    reason = {"route": "voice", "reason": "upstream_closed"}
    assert stack.metric("firsttoken_realtime_migrations_total", **reason) == 1


async def test_an_upstream_that_stops_answering_pings_is_left_between_responses(
    stack: Stack,
) -> None:
    # No response is out, so nothing is late; the upstream's process hangs (or the
    # network goes): its WebSocket answers no ping, and the session moves.
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        await until(conn, "response.done")
        stack.a.freeze()
        closed = {"route": "voice", "reason": "upstream_closed"}
        await wait_for(
            lambda: stack.metric("firsttoken_realtime_migrations_total", **closed) == 1,
            timeout_s=5 * PING_S + 2,
        )
        await conn.response.create()
        after = await until(conn, "response.done")
    assert after[-1].response.status == "completed"
    assert stack.b.records[-1].item_texts()[:2] == [
        ("user", "hello"),
        ("assistant", "You said: hello"),
    ]
    assert stalled(stack) == 0


ASIDE = {"conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "intent"}}


async def test_an_out_of_band_response_late_for_its_output_is_asked_of_the_next_target(
    patient: Stack,
) -> None:
    # A classification beside the conversation: rt-a creates it and says nothing more.
    # It is late as the conversation's would be; the client, which had none of it, gets
    # it from rt-b (the same request: its metadata comes back).
    stack = patient
    stack.a.set_fault(RealtimeFault("stall_before_audio"))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        first = await until(conn, "response.done")
        events = await until(conn, "response.done")
    assert first[-1].response.status == "failed"
    assert first[-1].response.status_details.error.code == "upstream_migrated"
    created = [e.response for e in first + events if e.type == "response.created"]
    assert len(created) == 2 and created[0].id == first[-1].response.id
    assert [r.conversation_id for r in created] == [None, None]
    answer = events[-1].response
    assert answer.status == "completed" and answer.metadata == {"topic": "intent"}
    assert texts(events) == "You said: hello"
    assert stalled(stack) == 1
    assert [r.status for r in stack.b.records[-1].responses] == ["completed"]
    # the aside joined no conversation: rt-b was given the user's item only
    assert stack.b.records[-1].item_texts() == [("user", "hello")]


async def test_an_out_of_band_response_the_client_cancelled_is_not_late(stack: Stack) -> None:
    # A hung upstream answers not even the cancel; the client stopped waiting for the
    # aside (by its id): nothing is late, and a later move does not ask for it again.
    stack.a.set_fault(RealtimeFault("stall_before_audio", deaf=True))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        aside = (await until(conn, "response.created"))[-1].response
        await conn.response.cancel(response_id=aside.id)
        await asyncio.sleep(FIRST_S + 0.3)
        assert stalled(stack) == 0
        await stack.a.drop(1011)
        ended = (await until(conn, "response.done"))[-1].response
        await wait_for(lambda: bool(stack.b.records))
        await asyncio.sleep(0.2)
        assert ended.id == aside.id and ended.status == "failed"
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert len(stack.b.records[-1].responses) == 1  # the conversation's; not the aside


async def _aside_cut_after_its_output(stack: Stack, regenerate: bool) -> None:
    stack.a.set_fault(RealtimeFault("stall_mid_response", after_deltas=2))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        cut = await until(conn, "response.done")
        if regenerate:
            again = await until(conn, "response.done")
            assert again[-1].response.status == "completed"
            assert again[-1].response.metadata == {"topic": "intent"}
            assert texts(again) == "You said: hello"
        else:
            await conn.response.create()  # the client's next turn is the next response
            after = await until(conn, "response.done")
            assert after[-1].response.metadata is None  # the conversation's
    assert texts(cut) and cut[-1].response.status == "failed"
    assert stalled(stack) == 1
    assert len(stack.b.records[-1].responses) == 1


async def test_an_out_of_band_response_cut_after_its_output_ends_failed(stack: Stack) -> None:
    await _aside_cut_after_its_output(stack, regenerate=False)


async def test_regenerate_asks_again_for_an_out_of_band_response_cut_after_its_output(
    regenerating: Stack,
) -> None:
    await _aside_cut_after_its_output(regenerating, regenerate=True)


async def test_a_refused_out_of_band_request_is_not_taken_for_a_stall(stack: Stack) -> None:
    # rt-a refuses the request (an `error` naming its event): no response is coming for
    # it, so nothing is late, and the session stays.
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        bad = {**ASIDE, "output_modalities": ["smell"]}
        await conn.response.create(response=bad, event_id="evt_aside_1")  # type: ignore[arg-type]
        error = (await until(conn, "error"))[-1].error
        await asyncio.sleep(FIRST_S + 0.3)
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        answered = await until(conn, "response.done")
    assert error.code == "invalid_value" and error.event_id == "evt_aside_1"
    assert answered[-1].response.status == "completed" and texts(answered) == "You said: nothing"
    assert stalled(stack) == 0 and not stack.b.records


MANUAL = {
    "type": "realtime",
    "output_modalities": ["text"],
    "audio": {"input": {"turn_detection": None}},
}


async def _frozen_then_dropped(stack: Stack, conn: Any, *edits: Any) -> list[Any]:
    """rt-a stops reading; the client's `edits` and a `response.create` go unread;
    rt-a dies: the answer comes from rt-b."""
    stack.a.freeze()
    for send in edits:
        await send
    await conn.response.create()
    await asyncio.sleep(0.1)
    await stack.a.drop(1011)
    return await until(conn, "response.done")


@pytest.mark.parametrize("item_id", [None, "item_client_2"])
async def test_an_item_the_dead_upstream_never_confirmed_is_carried_to_the_next(
    patient: Stack, item_id: str | None
) -> None:
    # The client adds its next turn and asks for the answer; the upstream dies without
    # having read either. The new target must hear that turn, not answer the one before
    # (the item is known by the id the client gave, or by one the router gave it).
    stack = patient
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        await until(conn, "response.done")
        second = {**USER, "content": [{"type": "input_text", "text": "and again"}]}
        if item_id is not None:
            second["id"] = item_id
        create = conn.conversation.item.create(item=second)  # type: ignore[arg-type]
        events = await _frozen_then_dropped(stack, conn, create)
    added = [e.item for e in events if e.type == "conversation.item.added"]
    assert [a.role for a in added][:1] == ["user"]  # the client hears of its item once
    assert added[0].id == item_id if item_id else added[0].id.startswith("item_ft_")
    assert len(added[0].id) <= 32
    assert events[-1].response.status == "completed"
    assert texts(events) == "You said: and again"
    assert stack.b.records[-1].item_texts()[-3:] == [
        ("assistant", "You said: hello"),
        ("user", "and again"),
        ("assistant", "You said: and again"),
    ]


async def test_a_commit_the_dead_upstream_never_read_is_carried_to_the_next(
    patient: Stack,
) -> None:
    # Push to talk: the caller's audio, the commit and the ask for an answer; the
    # upstream dies having read the audio but neither the commit nor the ask. The new
    # target must commit that audio and answer it, not the turn before.
    stack = patient
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, MANUAL)
        await until(conn, "response.done")
        for chunk in [tone(20)] * 10 + [silence(20)] * 2:
            await conn.input_audio_buffer.append(audio=chunk)
        await wait_for(lambda: stack.a.records[-1].audio_bytes_in >= 12 * 960)
        events = await _frozen_then_dropped(stack, conn, conn.input_audio_buffer.commit())
    types = [e.type for e in events]
    assert types.count("input_audio_buffer.committed") == 1  # the client's commit, once
    assert events[-1].response.status == "completed"
    assert texts(events) == f"You said: {stack.b.behaviour.transcript}"  # the audio turn
    assert stack.b.records[-1].audio_bytes_in >= 10 * 960


async def test_a_refused_commit_is_not_sent_again_by_a_move(patient: Stack) -> None:
    # rt-a refuses the commit (too little audio: `input_audio_buffer_commit_empty`,
    # naming no event); a move later must not send it to rt-b for a second refusal.
    stack = patient
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=MANUAL)  # type: ignore[arg-type]
        await conn.input_audio_buffer.append(audio=tone(20))
        await conn.input_audio_buffer.commit()
        refused = await until(conn, "error")
        await stack.a.drop(1011)
        await wait_for(lambda: bool(stack.b.records))
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        events = await until(conn, "response.done")
    assert refused[-1].error.code == "input_audio_buffer_commit_empty"
    assert "error" not in [e.type for e in events]
    assert events[-1].response.status == "completed" and texts(events) == "You said: hello"


async def test_a_delete_the_dead_upstream_never_read_is_carried(patient: Stack) -> None:
    stack = patient
    second = {**USER, "id": "item_second", "content": [{"type": "input_text", "text": "again"}]}
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session=TEXT)  # type: ignore[arg-type]
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.conversation.item.create(item=second)  # type: ignore[arg-type]
        await until(conn, "conversation.item.done")
        await until(conn, "conversation.item.done")
        events = await _frozen_then_dropped(
            stack, conn, conn.conversation.item.delete(item_id="item_second")
        )
    deleted = [e.item_id for e in events if e.type == "conversation.item.deleted"]
    assert deleted == ["item_second"]  # the client's delete answered, by rt-b
    assert texts(events) == "You said: hello"  # not "again": it is gone
    assert ("user", "again") not in stack.b.records[-1].item_texts()


async def test_a_truncation_the_dead_upstream_never_read_is_made_in_the_replay(
    patient: Stack,
) -> None:
    # The user cut the spoken answer short (a barge-in's truncate); rt-a never read it.
    # rt-b is given the answer as far as it was heard, and the client its answer.
    stack = patient
    stack.a.behaviour = RealtimeBehaviour(response_audio_ms=600)
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        done = (await until(conn, "response.done"))[-1].response
        answer = done.output[0].id
        events = await _frozen_then_dropped(
            stack,
            conn,
            conn.conversation.item.truncate(item_id=answer, content_index=0, audio_end_ms=250),
        )
    truncated = [e for e in events if e.type == "conversation.item.truncated"]
    assert [(e.item_id, e.audio_end_ms) for e in truncated] == [(answer, 250)]
    assert events[-1].response.status == "completed"
    assert stack.b.records[-1].item_texts()[:2] == [("user", "hello"), ("assistant", "You")]


async def test_a_retrieve_the_dead_upstream_never_read_is_answered_by_the_next(
    patient: Stack,
) -> None:
    # The client asks for an item; rt-a dies without having read the ask. rt-b, given
    # the conversation under the same ids, answers it with its copy.
    stack = patient
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await ask(conn, TEXT)
        answer = (await until(conn, "response.done"))[-1].response.output[0].id
        events = await _frozen_then_dropped(
            stack, conn, conn.conversation.item.retrieve(item_id=answer)
        )
    retrieved = [e.item for e in events if e.type == "conversation.item.retrieved"]
    assert [(r.id, r.role) for r in retrieved] == [(answer, "assistant")]
    assert "error" not in [e.type for e in events]
    assert events[-1].response.status == "completed"


async def test_a_truncation_sent_while_the_session_moves_is_made_in_the_replay(
    patient: Stack,
) -> None:
    # The user cuts the answer short while the router is opening rt-b (slow to
    # upgrade): the client pump holds the truncate for the new leg. rt-b holds the
    # answer as text and would refuse it; the router cuts its copy instead and answers.
    stack = patient
    stack.a.behaviour = RealtimeBehaviour(response_audio_ms=600)
    stack.b.behaviour = RealtimeBehaviour(fault=RealtimeFault("slow_upgrade", delay_s=0.4))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        answer = (await until(conn, "response.done"))[-1].response.output[0].id
        await stack.a.drop(1011)
        await asyncio.sleep(0.15)  # the router saw the close and is connecting to rt-b
        await conn.conversation.item.truncate(item_id=answer, content_index=0, audio_end_ms=250)
        truncated = await until(conn, "conversation.item.truncated")
        stack.b.behaviour = RealtimeBehaviour()
        await conn.response.create()
        events = await until(conn, "response.done")
    assert [(e.item_id, e.audio_end_ms) for e in truncated[-1:]] == [(answer, 250)]
    assert "error" not in [e.type for e in truncated + events]
    assert stack.b.records[-1].truncates == []
    assert stack.b.records[-1].item_texts()[:2] == [("user", "hello"), ("assistant", "You")]
    assert events[-1].response.status == "completed"
