"""Response owners in one replica's memory: bounded, each for its TTL, and asked of the
shared store (Redis) only when memory does not know; a failed lookup is a 503 that
names the state, never a guess (router/responses/pinning.py)."""

from __future__ import annotations

import pytest

from router.config import ResponsesConfig
from router.errors import StateConflict, StateUnavailable
from router.responses.owners import Owner, OwnerLookupFailed, ResponseOwners
from router.responses.pinning import find_pin, pinned_targets

pytestmark = pytest.mark.anyio

A = Owner("a", "chat")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Shared:
    """A shared store that answers from a dict, or fails when told to."""

    def __init__(self) -> None:
        self.stored: dict[str, Owner] = {}
        self.asked: list[str] = []
        self.down = False

    def remember(self, key: str, owner: Owner, ttl_s: float) -> None:
        self.stored[key] = owner

    async def lookup(self, key: str) -> Owner | None:
        self.asked.append(key)
        if self.down:
            raise OwnerLookupFailed("shared state (Redis) is unavailable")
        return self.stored.get(key)

    def forget(self, key: str) -> None:
        self.stored.pop(key, None)


async def test_memory_keeps_the_newest_ids_each_for_its_ttl() -> None:
    clock = Clock()
    owners = ResponseOwners(ResponsesConfig(owner_ttl_s=10, max_owners=2), clock)
    for i in range(3):
        owners.remember("response", f"resp_{i}", A)
    assert len(owners.local) == 2
    assert await owners.lookup("response", "resp_0") is None  # the oldest went first
    assert await owners.lookup("response", "resp_2") == A
    clock.now = 10.0
    assert await owners.lookup("response", "resp_2") is None
    assert len(owners.local) == 1  # an expired id is dropped when found


async def test_a_reload_changes_the_bounds_and_keeps_the_ids() -> None:
    owners = ResponseOwners(ResponsesConfig(max_owners=5), Clock())
    owners.remember("conversation", "conv_1", A)
    owners.configure(ResponsesConfig(max_owners=1))
    assert await owners.lookup("conversation", "conv_1") == A
    assert await owners.lookup("response", "conv_1") is None  # kinds are kept apart
    owners.remember("conversation", "conv_2", A)
    assert len(owners.local) == 1


async def test_the_shared_store_is_asked_only_on_a_miss_and_its_answer_kept() -> None:
    shared = Shared()
    owners = ResponseOwners(ResponsesConfig(), Clock(), shared)
    owners.remember("response", "resp_mine", A)
    assert await owners.lookup("response", "resp_mine") == A
    assert shared.asked == []
    shared.stored["r:resp_theirs"] = Owner("b", "chat")
    assert await owners.lookup("response", "resp_theirs") == Owner("b", "chat")
    assert await owners.lookup("response", "resp_theirs") == Owner("b", "chat")
    assert shared.asked == ["r:resp_theirs"]
    owners.forget("response", "resp_theirs")
    assert await owners.lookup("response", "resp_theirs") is None


async def test_a_lookup_redis_cannot_answer_is_a_503_naming_the_state() -> None:
    shared = Shared()
    shared.down = True
    owners = ResponseOwners(ResponsesConfig(), Clock(), shared)
    with pytest.raises(StateUnavailable) as err:
        await find_pin(owners, "resp_x", None)
    assert err.value.status == 503
    assert "response 'resp_x' cannot be looked up" in err.value.message
    assert await find_pin(owners, None, None) is None  # builds on nothing: never asked
    assert shared.asked == ["r:resp_x"]


async def test_a_known_owner_is_the_only_target_and_another_routes_is_a_409() -> None:
    owners = ResponseOwners(ResponsesConfig(), Clock())
    owners.remember("response", "resp_1", A)
    pin = await find_pin(owners, "resp_1", None)
    assert pin is not None
    assert pinned_targets(pin, "chat", ("b", "a")) == ("a",)
    with pytest.raises(StateConflict) as err:
        pinned_targets(pin, "other", ("b", "c"))
    assert err.value.status == 409
    assert "route 'chat'" in err.value.message
    assert await find_pin(owners, None, "conv_unknown") is None  # routes freely
