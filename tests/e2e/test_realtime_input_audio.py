"""The caller's uncommitted audio across a migration: the official SDK -> the router
-> Realtime simulators. The old upstream dies while it holds audio the client appended
and has not committed; the new upstream hears that audio before the client's commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.e2e.realtime_stack import Stack, running_stack
from tests.sim.conftest import wait_for
from tests.sim.test_realtime import silence, tone, until

pytestmark = pytest.mark.anyio

#: the client commits its turns itself (no server VAD)
MANUAL = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}
#: 200 ms of 24 kHz PCM16, in 20 ms appends
SPOKEN = [tone(20)] * 10
SPOKEN_BYTES = 200 * 48


async def speak(conn: Any, chunks: list[str]) -> None:
    for chunk in chunks:
        await conn.input_audio_buffer.append(audio=chunk)


async def manual_turns(conn: Any) -> None:
    await conn.session.update(session=MANUAL)
    await until(conn, "session.updated")


async def dies_after(stack: Stack, conn: Any, chunks: list[str], heard: int) -> None:
    """`chunks` appended; once rt-a has had `heard` bytes of audio in all, it dies."""
    await speak(conn, chunks)
    first = stack.a.records[-1]
    await wait_for(lambda: first.audio_bytes_in == heard)
    await stack.a.drop(1011)
    await asyncio.sleep(0.05)


async def test_audio_the_user_was_speaking_when_the_upstream_died_reaches_the_next(
    stack: Stack,
) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await manual_turns(conn)
        await dies_after(stack, conn, SPOKEN, SPOKEN_BYTES)
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    errors = [e.error.code for e in events if e.type == "error"]
    assert errors == []  # not input_audio_buffer_commit_empty
    assert "input_audio_buffer.committed" in [e.type for e in events]
    assert events[-1].response.status == "completed"
    moved = stack.b.records[-1]
    assert moved.audio_bytes_in == SPOKEN_BYTES  # each append once


async def test_committed_audio_is_not_appended_again(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await manual_turns(conn)
        await speak(conn, SPOKEN)
        await conn.input_audio_buffer.commit()
        await until(conn, "input_audio_buffer.committed")
        # the next turn has begun
        await dies_after(stack, conn, [silence(20)] * 3, SPOKEN_BYTES + 3 * 960)
        await conn.response.create()
        await until(conn, "response.done")
    assert stack.b.records[-1].audio_bytes_in == 3 * 960


async def test_a_route_with_input_audio_kib_0_carries_none() -> None:
    bare = (
        "  - {name: voice-bare, targets: [rt-a, rt-b], policy: {type: ordered},"
        " migrate: {input_audio_kib: 0}}"
    )
    async with running_stack(bare) as stack:
        async with stack.sdk().realtime.connect(model="voice-bare") as conn:
            await manual_turns(conn)
            await dies_after(stack, conn, SPOKEN, SPOKEN_BYTES)
            await conn.input_audio_buffer.commit()
            refused = (await until(conn, "error"))[-1].error
        assert refused.code == "input_audio_buffer_commit_empty"
        assert stack.b.records[-1].audio_bytes_in == 0
