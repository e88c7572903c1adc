"""The session core: relay, failover, migration and limits, against real simulators."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from router.errors import AllTargetsFailed
from router.realtime.limits import End, Migrate, SessionLimits, supervise
from router.realtime.quota import SessionQuota
from router.realtime.session import Session
from router.realtime.target import Leg
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from router.upstream.realtime import RealtimeConnection
from tests.realtime.harness import make_target, running_session
from tests.voice.audio import silence, tone

pytestmark = pytest.mark.anyio

USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}


@pytest.fixture
async def sims() -> AsyncIterator[tuple[RealtimeSim, RealtimeSim]]:
    behaviour = RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=60)
    async with RealtimeSim(behaviour) as a, RealtimeSim(behaviour) as b:
        yield a, b


async def test_relay_passes_events_and_records_usage(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, b = sims
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        run.client.put({"type": "conversation.item.create", "item": USER})
        run.client.put({"type": "response.create"})
        sent = await run.client.until("response.done")
    assert sent[0]["type"] == "session.created"
    kinds = [e["type"] for e in sent]
    assert kinds.index("response.created") < kinds.index("response.output_audio.delta")
    assert run.events.ttfa and run.events.ttfa[0][0] == "a"
    assert run.session.leg.target.signals.ttft_sketch.count == 1  # TTFA is what policies see
    (_, status, usage, cost) = run.events.responses[0]
    assert status == "completed" and usage is not None and usage.audio_output == 1 and cost > 0
    assert run.events.closed == [("a", "client_closed", cost)]
    assert a.records[-1].closed_by == "client"


async def test_failover_before_session_created(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, b = sims
    a.set_fault(RealtimeFault("close_before_created"))
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        await run.client.until("session.created")
    assert run.events.opened == ["b"]
    assert [e.target for e in run.events.failed] == ["a"]
    both = [make_target("a", a), make_target("b", b)]
    b.set_fault(RealtimeFault("refuse"))
    with pytest.raises(AllTargetsFailed):
        async with running_session(both):
            pass


async def test_migration_after_an_upstream_close_replays_the_conversation(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        run.client.put(
            {"type": "session.update", "session": {"type": "realtime", "instructions": "be brief"}}
        )
        run.client.put({"type": "conversation.item.create", "item": USER})
        run.client.put({"type": "response.create"})
        await run.client.until("response.done")
        await a.drop(1011)
        await asyncio.sleep(0.1)
        run.client.put({"type": "response.create"})
        await run.client.until("response.done", 2)
    assert [m[:3] for m in run.events.migrations] == [("a", "b", "upstream_closed")]
    # connect time is measured on every upstream session, the migration's too
    assert [t for t, _ in run.events.connected] == ["a", "b"]
    replayed = b.records[-1]
    assert replayed.item_texts()[:2] == [("user", "hello"), ("assistant", "You said: hello")]
    assert replayed.session["instructions"] == "be brief"
    assert run.events.responses[-1][0] == "b" and run.events.responses[-1][1] == "completed"
    # the replay's acknowledgements were not relayed: one session.created, one updated
    assert run.client.types().count("session.created") == 1
    assert run.client.types().count("session.updated") == 1
    assert run.client.types().count("conversation.item.added") == 3


async def test_a_response_in_flight_ends_failed(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, b = sims
    a.set_fault(RealtimeFault("die_mid_response", after_deltas=2))
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        run.client.put({"type": "response.create"})
        sent = await run.client.until("response.done")
    done = sent[-1]
    assert done["response"]["status"] == "failed"
    assert done["response"]["status_details"]["error"]["code"] == "upstream_migrated"
    assert run.events.migrations[0][2] == "upstream_closed"


async def test_regenerate_asks_the_new_target_again(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, b = sims
    a.set_fault(RealtimeFault("die_mid_response", after_deltas=2))
    async with running_session(
        [make_target("a", a), make_target("b", b)], SessionLimits(regenerate=True)
    ) as run:
        run.client.put({"type": "response.create"})
        sent = await run.client.until("response.done", 2)
    statuses = [e["response"]["status"] for e in sent if e["type"] == "response.done"]
    assert statuses == ["failed", "completed"]
    assert len(b.records[-1].responses) == 1


async def test_session_expired_migrates_to_a_healthy_target(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        await run.client.until("session.created")
        await a.expire()
        await asyncio.sleep(0.1)
        run.client.put({"type": "response.create"})
        await run.client.until("response.done")
    assert [m[2] for m in run.events.migrations] == ["session_expired"]
    assert "error" not in run.client.types()


async def test_client_disconnect_closes_the_upstream(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, _ = sims
    async with running_session([make_target("a", a)]) as run:
        await run.client.until("session.created")
        run.client.put(None)
        await asyncio.wait_for(run.task, 2.0)
    assert a.records[-1].closed_by == "client" and a.records[-1].close_code == 1000


async def test_idle_and_bad_input(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, _ = sims
    async with running_session([make_target("a", a)], SessionLimits(idle_s=0.1)) as run:
        assert await asyncio.wait_for(run.task, 2.0) == "idle"
    assert run.client.sent[-1]["error"]["code"] == "session_idle_timeout"
    assert run.client.close_code == 1000
    async with running_session([make_target("a", a)]) as run:
        run.client.put(b"\x00\x01")
        assert await asyncio.wait_for(run.task, 2.0) == "bad_input"
    assert run.client.sent[-1]["type"] == "error" and run.client.close_code == 1003


async def test_breaker_opening_migrates(sims: tuple[RealtimeSim, RealtimeSim]) -> None:
    a, b = sims
    ta, tb = make_target("a", a), make_target("b", b)
    async with running_session([ta, tb]) as run:
        await run.client.until("session.created")
        await asyncio.sleep(0.1)  # the supervisor is waiting by now: the opening wakes it
        ta.signals.breaker.record_failure()  # breaker_failures is 1: it opens
        await asyncio.sleep(0.7)
        run.client.put({"type": "response.create"})
        await run.client.until("response.done")
    assert [m[:3] for m in run.events.migrations] == [("a", "b", "breaker_open")]
    assert run.events.responses[0][0] == "b"


async def test_a_response_asked_for_after_a_proactive_move_was_decided_is_not_left_behind(
    sims: tuple[RealtimeSim, RealtimeSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of realtime.py's migration rounds: the supervisor saw a pause between
    responses and decided to move (a breaker opened), and before the move began the
    client's `response.create` went to the current upstream. Moving then would retire
    that upstream with the response it is making and never ask the new one."""
    a, b = sims
    real = supervise
    decided: list[bool] = []

    async def late_decision(session: Session, leg: Leg) -> End | Migrate:
        if decided:
            return await real(session, leg)
        for _ in range(3000):  # until the create is on its way to `a`
            if session.pending_create is not None:
                break
            await asyncio.sleep(0.001)
        decided.append(True)
        return Migrate("breaker_open")

    monkeypatch.setattr("router.realtime.session.supervise", late_decision)
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        await run.client.until("session.created")
        run.client.put({"type": "response.create"})
        done = await run.client.until("response.done")
    assert decided and done[-1]["response"]["status"] == "completed"
    assert run.events.responses[0][0] == "a" and run.events.migrations == []


async def test_a_response_create_sent_into_a_dying_upstream_is_replayed_on_the_new_one(
    sims: tuple[RealtimeSim, RealtimeSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's `response.create` is on its way to the upstream (the send has not
    returned: its writer waits) when that upstream fails; the send then returns as if
    delivered, into a socket that is gone. The migration must ask the new upstream."""
    a, b = sims
    real_send = RealtimeConnection.send
    held: list[str] = []

    async def send_into_failure(self: RealtimeConnection, text: str) -> None:
        if self.target != "a" or '"response.create"' not in text or held:
            return await real_send(self, text)
        held.append(text)
        await a.drop(1011)  # the upstream fails while this send is still waiting
        for _ in range(3000):  # until the session has moved, then "delivered"
            if run.events.migrations:
                break
            await asyncio.sleep(0.001)
        return None

    monkeypatch.setattr(RealtimeConnection, "send", send_into_failure)
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        await run.client.until("session.created")
        run.client.put({"type": "response.create"})
        done = await run.client.until("response.done")
    assert held and done[-1]["response"]["status"] == "completed"
    assert [m[:3] for m in run.events.migrations] == [("a", "b", "upstream_closed")]
    assert run.events.responses[0][0] == "b" and len(run.events.responses) == 1


async def test_an_old_upstream_is_replaced_between_responses(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    a.behaviour = RealtimeBehaviour(ttfa_s=0.3, response_audio_ms=20)
    async with running_session(
        [make_target("a", a), make_target("b", b)], SessionLimits(max_upstream_s=0.1)
    ) as run:
        run.client.put({"type": "response.create"})
        sent = await run.client.until("response.done")
        await asyncio.sleep(0.15)
    assert sent[-1]["response"]["status"] == "completed"  # not cut at 0.1 s
    assert run.events.migrations[0][:3] == ("a", "a", "max_upstream")


def _append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


VAD_ON = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 100}}},
    },
}
VAD_OFF = {
    "type": "session.update",
    "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
}


async def test_a_proactive_move_waits_while_the_user_speaks(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    """An aged upstream is replaced between responses, but not while the server's VAD
    hears the user: the move would drop the utterance (input audio is not carried
    over). The utterance is answered on the old upstream; the move comes after."""
    a, b = sims
    async with running_session(
        [make_target("a", a), make_target("b", b)], SessionLimits(max_upstream_s=0.1)
    ) as run:
        run.client.put(VAD_ON)
        run.client.put(_append(tone(20)))
        await run.client.until("input_audio_buffer.speech_started")
        for _ in range(20):  # 0.4 s of speech, well past the upstream's age limit
            run.client.put(_append(tone(20)))
            await asyncio.sleep(0.02)
        assert run.events.migrations == []
        for _ in range(8):
            run.client.put(_append(silence(20)))
        done = await run.client.until("response.done")
        await asyncio.sleep(0.2)
    assert done[-1]["response"]["status"] == "completed"
    assert run.events.responses[0][0] == "a"  # the utterance was answered where it was heard
    assert [m[:2] for m in run.events.migrations][:1] == [("a", "a")]


async def test_a_proactive_move_waits_for_uncommitted_audio_with_vad_off(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    async with running_session(
        [make_target("a", a), make_target("b", b)], SessionLimits(max_upstream_s=0.1)
    ) as run:
        run.client.put(VAD_OFF)
        await run.client.until("session.updated")
        run.client.put(_append(tone(200)))
        await asyncio.sleep(0.3)
        assert run.events.migrations == []  # the user's audio is still in a's buffer
        run.client.put({"type": "input_audio_buffer.commit"})
        await run.client.until("input_audio_buffer.committed")
        await asyncio.sleep(0.2)
    assert [m[:3] for m in run.events.migrations][:1] == [("a", "a", "max_upstream")]
    assert a.records[0].events[-1]["type"] == "input_audio_buffer.commit"


async def test_a_user_turn_that_never_ends_holds_a_move_back_only_so_long(
    sims: tuple[RealtimeSim, RealtimeSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noise a VAD takes for endless speech must not pin a session to its upstream."""
    monkeypatch.setattr("router.realtime.session.USER_TURN_MAX_S", 0.3)
    a, b = sims
    async with running_session(
        [make_target("a", a), make_target("b", b)], SessionLimits(max_upstream_s=0.05)
    ) as run:
        run.client.put(VAD_OFF)
        run.client.put(_append(tone(200)))  # never committed
        await run.client.until("session.updated")
        await asyncio.sleep(0.15)
        assert run.events.migrations == []
        await asyncio.sleep(0.4)
    assert [m[:3] for m in run.events.migrations][:1] == [("a", "a", "max_upstream")]


async def test_a_proactive_move_with_nowhere_to_go_stays(
    sims: tuple[RealtimeSim, RealtimeSim], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = sims
    ta = make_target("a", a)
    caplog.set_level(logging.INFO, logger="firsttoken.realtime")
    async with running_session([ta]) as run:
        await run.client.until("session.created")
        ta.signals.breaker.record_failure()  # open: but there is no other target
        await asyncio.sleep(0.7)
        run.client.put({"type": "response.create"})
        sent = await run.client.until("response.done")
    assert sent[-1]["response"]["status"] == "completed"
    assert run.events.migrations == [] and len(a.records) == 1
    # Nothing was lost, so not a warning: every session on an opened breaker asks.
    stays = [r for r in caplog.records if "stays on a (breaker_open)" in r.getMessage()]
    assert stays and all(r.levelno == logging.INFO for r in stays)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_server_error_migrates_and_is_not_relayed(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    a.set_fault(RealtimeFault("error_mid_response", after_deltas=1))
    async with running_session([make_target("a", a), make_target("b", b)]) as run:
        run.client.put({"type": "response.create"})
        first = (await run.client.until("response.done"))[-1]
        run.client.put({"type": "response.create"})
        await run.client.until("response.done", 2)
    assert first["response"]["status_details"]["error"]["code"] == "upstream_migrated"
    assert "error" not in run.client.types()
    assert [m[:3] for m in run.events.migrations] == [("a", "b", "server_error")]


async def test_a_target_at_max_sessions_is_passed_over(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, b = sims
    targets = [make_target("a", a, max_sessions=1), make_target("b", b)]
    async with running_session(targets) as first, running_session(targets) as second:
        await first.client.until("session.created")
        await second.client.until("session.created")
        assert first.session.leg.target.name == "a" and second.session.leg.target.name == "b"


async def test_a_keys_minutes_are_shared_by_its_open_sessions(
    sims: tuple[RealtimeSim, RealtimeSim],
) -> None:
    a, _ = sims
    quota = SessionQuota(None, 0.05, time.monotonic)  # 3 s of session time an hour
    started = time.monotonic()
    quota.start()  # another session of the key, open throughout
    limits = SessionLimits(quota=quota)
    async with running_session([make_target("a", a)], limits) as run:
        mine = quota.start()
        assert await asyncio.wait_for(run.task, 5.0) == "session_minutes"
        quota.end(mine)
    # two sessions spend 3 s in 1.5 s, not in the 3 s that were left when this one began
    assert time.monotonic() - started < 2.5
    error = run.client.sent[-1]["error"]
    assert error["code"] == "session_minutes_exceeded" and error["type"] == "rate_limit_error"
    assert run.client.close_code == 1008
