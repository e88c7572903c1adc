from __future__ import annotations

from router.realtime.clocks import ResponseClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_to_first_audio_and_text_from_the_first_start() -> None:
    t = FakeClock()
    clock = ResponseClock(t)
    assert clock.audio() is None  # nothing asked for
    clock.start()
    t.now += 0.1
    clock.start()  # a commit after response.create does not restart it
    t.now += 0.2
    assert abs((clock.text() or 0) - 0.3) < 1e-9
    assert clock.text() is None
    t.now += 0.1
    assert abs((clock.audio() or 0) - 0.4) < 1e-9
    assert clock.audio() is None and not clock.pending


def test_a_response_that_never_answered_is_a_censored_sample() -> None:
    t = FakeClock()
    clock = ResponseClock(t)
    clock.start()
    t.now += 2.0
    assert clock.done() == 2.0
    assert clock.done() is None


def test_a_text_only_response_is_not_censored() -> None:
    t = FakeClock()
    clock = ResponseClock(t)
    clock.start()
    t.now += 0.5
    assert clock.text() == 0.5
    assert clock.done() is None
