"""`router.realtime.input_audio.InputAudio`: the uncommitted append frames a migration
appends again, within the route's budget."""

from __future__ import annotations

from router.realtime.input_audio import IDLE_BYTES, InputAudio


def test_frames_are_kept_in_order_until_the_upstream_consumes_them() -> None:
    kept = InputAudio(1000)
    kept.appended("a" * 100, True)
    kept.appended("b" * 100, True)
    assert kept.frames() == ["a" * 100, "b" * 100]
    kept.consumed()
    assert kept.frames() == []
    kept.appended("c" * 10, True)
    assert kept.frames() == ["c" * 10]


def test_the_oldest_go_first_past_the_budget() -> None:
    kept = InputAudio(250)
    for name in "abcd":
        kept.appended(name * 100, True)
    assert kept.frames() == ["c" * 100, "d" * 100]
    kept.appended("e" * 300, True)  # one frame past the whole budget: nothing is kept
    assert kept.frames() == []


def test_a_budget_of_zero_keeps_nothing() -> None:
    kept = InputAudio(0)
    kept.appended("a", True)
    assert kept.frames() == []


def test_between_turns_only_the_last_idle_bytes_are_kept() -> None:
    # the silence a server VAD holds between utterances is no turn to carry
    kept = InputAudio(10 * IDLE_BYTES)
    frame = "s" * (IDLE_BYTES // 4)
    for _ in range(8):
        kept.appended(frame, False)
    assert len(kept.frames()) == 4
    for _ in range(8):  # the user speaks: the route's whole budget
        kept.appended(frame, True)
    assert len(kept.frames()) == 12
