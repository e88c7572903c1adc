"""`router.realtime.input_audio.InputAudio`: the uncommitted append frames a migration
appends again, within the route's budget."""

from __future__ import annotations

from router.realtime.input_audio import InputAudio


def test_frames_are_kept_in_order_until_the_upstream_consumes_them() -> None:
    kept = InputAudio(1000)
    kept.appended("a" * 100)
    kept.appended("b" * 100)
    assert kept.frames() == ["a" * 100, "b" * 100]
    kept.consumed()
    assert kept.frames() == []
    kept.appended("c" * 10)
    assert kept.frames() == ["c" * 10]


def test_the_oldest_go_first_past_the_budget() -> None:
    kept = InputAudio(250)
    for name in "abcd":
        kept.appended(name * 100)
    assert kept.frames() == ["c" * 100, "d" * 100]
    kept.appended("e" * 300)  # one frame past the whole budget: nothing is kept
    assert kept.frames() == []


def test_a_budget_of_zero_keeps_nothing() -> None:
    kept = InputAudio(0)
    kept.appended("a")
    assert kept.frames() == []
