"""When a replica may admit on its own view of a global counter, and when Redis decides."""

from __future__ import annotations

from router.replicas.views import STALE_S, CounterView, Decision

MINUTE = 28_600_000


def view(
    requests: int = 0, tokens: int = 0, *, seq: int = 1, read_at: float = 100.0
) -> CounterView:
    seen = CounterView()
    seen.update(seq, MINUTE, [requests, tokens, 0, 0], read_at)
    return seen


def decide(
    seen: CounterView,
    *,
    rpm: int = 0,
    tpm: int = 0,
    tokens: int = 10,
    now: float = 100.01,
    minute: int = MINUTE,
    weight: float = 1.0,
    replicas: int = 2,
) -> Decision:
    return seen.decide(
        rpm=rpm,
        tpm=tpm,
        tokens=tokens,
        minute=minute,
        weight=weight,
        now=now,
        replicas=replicas,
    )


def test_an_unknown_or_stale_view_leaves_the_decision_to_redis() -> None:
    assert decide(CounterView(), rpm=1000) is Decision.UNSURE
    assert decide(view(), rpm=1000) is Decision.FITS
    assert decide(view(), rpm=1000, now=100.0 + STALE_S + 0.01) is Decision.UNSURE
    forgotten = view()
    forgotten.forget()  # Redis went away
    assert decide(forgotten, rpm=1000) is Decision.UNSURE


def test_near_the_limit_redis_decides_and_over_it_the_view_alone_refuses() -> None:
    # rpm 1000, 2 replicas: each holds at most 25 unflushed, and 5 % is the floor.
    assert decide(view(900), rpm=1000) is Decision.FITS
    assert decide(view(980), rpm=1000) is Decision.UNSURE
    assert decide(view(999), rpm=1000) is Decision.UNSURE  # one left: only Redis knows
    assert decide(view(1000), rpm=1000) is Decision.OVER  # a lower bound: no room for sure
    assert decide(view(0, 5000), tpm=5000) is Decision.OVER
    assert decide(view(0, 4999), tpm=5000, tokens=100) is Decision.UNSURE


def test_own_unflushed_charges_count_and_are_capped() -> None:
    seen = view(0)
    seen.unsynced = [24, 0]  # its cap: 5 % of 1000 over 2 replicas = 25
    assert decide(seen, rpm=1000) is Decision.FITS
    seen.unsynced = [25, 0]
    assert decide(seen, rpm=1000) is Decision.UNSURE
    # A small limit: one unflushed request each, and 1 + 5 % as the headroom.
    assert decide(view(7), rpm=10) is Decision.FITS
    assert decide(view(8), rpm=10) is Decision.UNSURE


def test_the_headroom_grows_with_the_load_seen_in_redis() -> None:
    seen = view(100, read_at=100.0)
    assert decide(seen, rpm=1000, now=100.05) is Decision.FITS
    # The others charged 400 in 0.1 s: at that pace they could pass the limit unseen.
    seen.update(2, MINUTE, [500, 0, 0, 0], 100.1)
    assert seen.count(MINUTE, 1.0) == (500, 0)
    assert decide(seen, rpm=1000, now=100.15) is Decision.UNSURE
    assert decide(view(500, read_at=100.1), rpm=1000, now=100.15) is Decision.FITS


def test_a_late_reply_never_replaces_a_newer_view() -> None:
    seen = view(50, seq=7)
    seen.update(6, MINUTE, [40, 0, 0, 0], 100.2)
    assert seen.count(MINUTE, 1.0) == (50, 0)


def test_the_sliding_minute_rolls_over_without_redis() -> None:
    seen = CounterView()
    seen.update(1, MINUTE, [80, 800, 40, 400], 100.0)
    assert seen.count(MINUTE, 0.5) == (100, 1000)  # 80 + 40 / 2
    assert seen.count(MINUTE + 1, 0.25) == (20, 200)  # this minute's 80 is now the previous
    assert seen.count(MINUTE + 2, 0.5) == (0, 0)
