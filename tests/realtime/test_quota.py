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


def test_a_key_past_its_minutes_is_told_when_a_minute_frees() -> None:
    clock = FakeClock()
    quota = SessionQuota(None, 10, clock)
    first = quota.start()
    clock.now += 240
    quota.end(first)  # 4 minutes, ending at 1240
    clock.now += 600
    second = quota.start()
    clock.now += 360  # 6 more minutes: 10 of 10 used
    assert quota.refusal() is not None
    # the first session's first minute leaves the window at 1000 + 3600 + 60
    wait = quota.retry_after_s()
    assert abs(clock.now + wait - 4660) <= 1
    quota.end(second)
    clock.now += wait
    left = quota.remaining_s()
    assert left is not None and left >= 59


def test_a_key_at_its_sessions_at_once_retries_soon() -> None:
    quota = SessionQuota(1, 10, FakeClock())
    quota.start()
    assert quota.refusal() == "at most 1 realtime sessions at once"
    assert quota.retry_after_s() == 1.0
