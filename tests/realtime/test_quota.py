from __future__ import annotations

from router.realtime.quota import SessionQuota


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_at_once() -> None:
    quota = SessionQuota(2, None, FakeClock())
    a = quota.start()
    quota.start()
    assert quota.refusal() == "at most 2 realtime sessions at once"
    quota.end(a)
    assert quota.refusal() is None and quota.remaining_s() is None


def test_session_minutes_in_a_sliding_hour() -> None:
    clock = FakeClock()
    quota = SessionQuota(None, 10, clock)
    started = quota.start()
    clock.now += 240
    assert quota.remaining_s() == 360
    quota.end(started)
    other = quota.start()
    clock.now += 360
    assert quota.refusal() is not None  # 4 + 6 minutes used
    quota.end(other)
    clock.now += 3600 - 300  # the first session slides out of the window
    assert quota.refusal() is None and quota.remaining_s() == 300  # 5 of the 6 still inside
