"""Which target stored each response id (and conversation id) the router relayed.

The Responses API keeps its state upstream: a follow-up (`previous_response_id`,
`conversation`), a `GET /v1/responses/{id}` and a `DELETE` can be served only by the
target that stored the response. The router remembers the owner of every id it
relays, in memory (bounded by `responses.max_owners`, oldest first, each for
`responses.owner_ttl_s`), and, when a `state:` block is configured, in Redis too
(router/replicas/owners.py), so that any replica finds it.

A lookup that misses in memory asks Redis (bounded by `state.timeout_ms`). If Redis
is configured but cannot answer, the owner is not known to be absent: that is
`OwnerLookupFailed`, which the gateway answers with a 503 rather than sending the
request to a target that may lack the state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

from router.clock import Clock
from router.config import ResponsesConfig

#: what an id names: a response (`resp_...`), a conversation (`conv_...`), a stored
#: chat completion (`chatcmpl-...`, made with `store: true`), or a WebRTC call
#: (`rtc_...`, router/gateway/realtime_calls.py)
IdKind = Literal["response", "conversation", "chat_completion", "realtime_call"]
#: each kind's prefix in the keys of the stores (memory, Redis)
_KEY_PREFIX: dict[IdKind, str] = {
    "response": "r:",
    "conversation": "c:",
    "chat_completion": "h:",
    "realtime_call": "w:",
}


@dataclass(frozen=True, slots=True)
class Owner:
    """The target that stored an id, and the route it was asked on (whose clients may
    read it)."""

    target: str
    route: str


class OwnerLookupFailed(Exception):
    """The shared store could not say who owns an id (Redis down or slow)."""


class SharedOwnerStore(Protocol):
    """The owners every replica sees (Redis)."""

    def remember(self, key: str, owner: Owner, ttl_s: float) -> None: ...

    async def lookup(self, key: str) -> Owner | None:
        """The owner, None if none is stored, or OwnerLookupFailed."""
        ...

    def forget(self, key: str) -> None: ...


def key_of(kind: IdKind, value: str) -> str:
    return _KEY_PREFIX[kind] + value


class LocalOwners:
    """An LRU map with a TTL: id -> (owner, expiry). Memory is bounded by `max_owners`."""

    def __init__(self, config: ResponsesConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Owner, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: str, owner: Owner) -> None:
        self._entries[key] = (owner, self._clock() + self.config.owner_ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.config.max_owners:
            self._entries.popitem(last=False)

    def get(self, key: str) -> Owner | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class ResponseOwners:
    """Owners in memory, and in the shared store when there is one."""

    def __init__(
        self, config: ResponsesConfig, clock: Clock, shared: SharedOwnerStore | None = None
    ) -> None:
        self.local = LocalOwners(config, clock)
        self.shared = shared

    def configure(self, config: ResponsesConfig) -> None:
        """A reload's bounds; the ids remembered stay."""
        self.local.config = config

    def remember(self, kind: IdKind, value: str, owner: Owner) -> None:
        key = key_of(kind, value)
        self.local.remember(key, owner)
        if self.shared is not None:
            self.shared.remember(key, owner, self.local.config.owner_ttl_s)

    async def lookup(self, kind: IdKind, value: str) -> Owner | None:
        """The owner of an id, None if no replica remembers it; OwnerLookupFailed if
        the shared store could not be asked."""
        key = key_of(kind, value)
        owner = self.local.get(key)
        if owner is not None or self.shared is None:
            return owner
        owner = await self.shared.lookup(key)
        if owner is not None:
            self.local.remember(key, owner)
        return owner

    def forget(self, kind: IdKind, value: str) -> None:
        key = key_of(kind, value)
        self.local.forget(key)
        if self.shared is not None:
            self.shared.forget(key)
