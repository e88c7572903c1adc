"""The clock in front of a turn's sink: when the client's response started."""

from __future__ import annotations

import pytest

from router.turn.sink import FirstByteClock


@pytest.mark.anyio
async def test_first_byte_clock_notes_the_response_start_and_passes_everything_on() -> None:
    sent: list[object] = []

    class Inner:
        async def start(self, status: int, headers: object) -> None:
            sent.append(("start", status))

        async def write(self, data: bytes) -> None:
            sent.append(data)

        async def finish(self, last: bytes = b"") -> None:
            sent.append(("finish", last))

    now = iter([7.5])
    clock = FirstByteClock(Inner(), lambda: next(now))
    assert clock.started_at is None
    await clock.start(200, [])
    await clock.write(b"x")
    await clock.finish(b"end")
    assert clock.started_at == 7.5
    assert sent == [("start", 200), b"x", ("finish", b"end")]
