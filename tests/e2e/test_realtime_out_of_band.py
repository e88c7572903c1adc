"""Out-of-band responses (`response.create` with `conversation: "none"`) relayed to a
hosted target: the official SDK -> the router -> Realtime simulators."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from router.sim.realtime_behaviour import RealtimeFault
from tests.e2e.realtime_stack import USER, Stack
from tests.sim.test_realtime import until

pytestmark = pytest.mark.anyio

ASIDE = {"conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "intent"}}


async def created(conn: Any) -> Any:
    return (await until(conn, "response.created"))[-1].response


async def test_a_migration_ends_every_response_in_flight_and_replays_only_the_conversation(
    stack: Stack,
) -> None:
    # The conversation's response and an out-of-band one run side by side on rt-a (both
    # stall before their output); rt-a dies. Each ends `failed` for the client (the
    # out-of-band one too: its response.created did not replace the conversation's in
    # the router's books), and the conversation carries on on rt-b, where both, of
    # which the user heard nothing, are asked again; the aside's own request, not as
    # part of the conversation.
    stack.a.set_fault(RealtimeFault("stall_before_audio"))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        in_band = await created(conn)
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        aside = await created(conn)
        await stack.a.drop(1011)
        ended = [(await until(conn, "response.done"))[-1].response for _ in range(2)]
        answered = [(await until(conn, "response.done"))[-1].response for _ in range(2)]
    assert in_band.conversation_id is not None and aside.conversation_id is None
    assert {r.id for r in ended} == {in_band.id, aside.id}
    assert {r.status for r in ended} == {"failed"}
    assert {r.status for r in answered} == {"completed"}
    assert sorted(str(r.metadata) for r in answered) == ["None", "{'topic': 'intent'}"]
    moved = stack.b.records[-1]
    assert moved.item_texts()[0] == ("user", "hello")
    assert len(moved.responses) == 2  # the conversation's and the aside, asked again
    # the aside's item joined no conversation
    assert [role for role, _ in moved.item_texts()] == ["user", "assistant"]
    reason = {"route": "voice", "reason": "upstream_closed"}
    assert stack.metric("firsttoken_realtime_migrations_total", **reason) == 1
    # booked as the client saw them: two responses failed on rt-a, two completed on rt-b
    booked = "firsttoken_realtime_responses_total"
    assert stack.metric(booked, route="voice", target="rt-a", status="failed") == 2
    assert stack.metric(booked, route="voice", target="rt-b", status="completed") == 2


async def test_an_aside_answered_while_the_conversations_response_runs(stack: Stack) -> None:
    # An out-of-band response ends while the conversation's runs: the conversation's is
    # still the router's to end when the upstream dies.
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        stack.a.set_fault(RealtimeFault("stall_before_audio"))
        await conn.response.create()
        in_band = await created(conn)  # stalls
        stack.a.set_fault(RealtimeFault("none"))
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        aside = (await until(conn, "response.done"))[-1].response
        await stack.a.drop(1011)
        ended = (await until(conn, "response.done"))[-1].response
        # unheard (the aside's output is not the conversation's): asked again on rt-b
        answered = (await until(conn, "response.done"))[-1].response
    assert aside.status == "completed" and aside.conversation_id is None
    assert aside.metadata == {"topic": "intent"}
    assert ended.id == in_band.id and ended.status == "failed"
    assert answered.status == "completed"
    # the aside's item never joined the conversation the router replays
    assert [role for role, _ in stack.b.records[-1].item_texts()] == ["user", "assistant"]
    # its first text delta was timed as an aside's (the stalled response's never came)
    labels = {"route": "voice", "target": "rt-a"}
    assert stack.metric("firsttoken_realtime_out_of_band_first_delta_seconds_count", **labels) == 1


async def test_an_aside_s_audio_is_not_the_conversation_s_first_audio(stack: Stack) -> None:
    # An aside with audio asked 0.25 s before the conversation's response: its first audio
    # comes while the conversation's waits, and is not that response's TTFA (0.4 s), nor
    # part of the conversation's assistant audio.
    stack.a.behaviour = replace(stack.a.behaviour, ttfa_s=0.4)
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        aside = {**ASIDE, "output_modalities": ["audio"]}
        await conn.response.create(response=aside)  # type: ignore[arg-type]
        await asyncio.sleep(0.25)
        await conn.response.create()
        done = [(await until(conn, "response.done"))[-1].response for _ in range(2)]
    assert [r.status for r in done] == ["completed", "completed"]
    labels = {"route": "voice", "target": "rt-a"}
    assert stack.metric("firsttoken_realtime_ttfa_seconds_count", **labels) == 1
    assert stack.metric("firsttoken_realtime_ttfa_seconds_sum", **labels) >= 0.35
    # the aside's own first delta, from its own response.create (its audio takes 0.4 s too)
    aside_timed = "firsttoken_realtime_out_of_band_first_delta_seconds"
    assert stack.metric(f"{aside_timed}_count", **labels) == 1
    assert 0.35 <= stack.metric(f"{aside_timed}_sum", **labels) < 0.6
