from __future__ import annotations

import pytest

from router.signals.affinity import AffinityMap
from tests.signals.conftest import FakeClock


def test_remembers_the_last_target_until_the_ttl(clock: FakeClock) -> None:
    m = AffinityMap(clock, ttl_s=10.0)
    m.put("conv-1", "gpu-a")
    m.put("conv-1", "gpu-b")
    clock.advance(9.9)
    assert m.get("conv-1") == "gpu-b"
    clock.advance(0.1)
    assert m.get("conv-1") is None
    assert len(m) == 0


def test_per_entry_ttl(clock: FakeClock) -> None:
    m = AffinityMap(clock, ttl_s=10.0)
    m.put("short", "gpu-a", ttl_s=1.0)
    clock.advance(1.0)
    assert m.get("short") is None


def test_expired_entries_go_as_new_ones_come(clock: FakeClock) -> None:
    # a key per turn (a voice cascade's) for longer than the TTL: the map holds the
    # last TTL's keys, not every key up to max_size
    m = AffinityMap(clock, ttl_s=10.0)
    for turn in range(1000):
        m.put(f"turn-{turn}", "gpu-a")
        clock.advance(1.0)
    assert len(m) == 10
    assert m.get("turn-999") == "gpu-a" and m.get("turn-989") is None


def test_an_expired_entry_behind_a_live_one_waits_for_it(clock: FakeClock) -> None:
    m = AffinityMap(clock, ttl_s=10.0)
    m.put("long", "gpu-a", ttl_s=100.0)
    m.put("short", "gpu-b", ttl_s=1.0)
    clock.advance(5.0)
    m.put("new", "gpu-a")
    assert len(m) == 3  # "short" waits behind "long"
    assert m.get("short") is None and len(m) == 2
    clock.advance(100.0)
    m.put("newest", "gpu-a")
    assert len(m) == 1 and m.get("newest") == "gpu-a"


def test_evicts_the_least_recently_used(clock: FakeClock) -> None:
    m = AffinityMap(clock, max_size=2)
    m.put("a", "t1")
    m.put("b", "t2")
    assert m.get("a") == "t1"  # a is now the most recently used
    m.put("c", "t3")
    assert m.get("b") is None
    assert m.get("a") == "t1"
    assert m.get("c") == "t3"
    assert len(m) == 2


def test_forgets_removed_targets(clock: FakeClock) -> None:
    m = AffinityMap(clock)
    m.put("a", "t1")
    m.put("b", "t2")
    m.put("c", "t1")
    m.forget_targets(["t1"])
    m.forget("nope")
    assert (m.get("a"), m.get("b"), m.get("c")) == (None, "t2", None)


def test_rejects_a_zero_size(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_size"):
        AffinityMap(clock, max_size=0)
