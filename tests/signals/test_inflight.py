from __future__ import annotations

from router.signals.inflight import InFlight


def test_leases_count_and_release_is_idempotent() -> None:
    inflight = InFlight()
    a = inflight.acquire()
    b = inflight.acquire()
    assert inflight.count == 2
    a.release()
    a.release()
    assert a.released
    assert inflight.count == 1
    b.release()
    assert inflight.count == 0
