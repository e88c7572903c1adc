"""Conversation affinity: which target served a conversation's last turn.

A bounded LRU map with a time-to-live per entry, in the spirit of the prefix-cache
aware routing of vLLM's production-stack router and the Gateway API Inference
Extension's prefix scorer: sending the next turn of a conversation to the engine
that served the last one lets it reuse the KV cache of the shared prefix. The map
only remembers; policies decide how much that is worth.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from router.clock import Clock


class AffinityMap:
    """conversation key -> (target, expiry), evicting the least recently used."""

    __slots__ = ("_clock", "_entries", "max_size", "ttl_s")

    def __init__(self, clock: Clock, *, ttl_s: float = 600.0, max_size: int = 100_000) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_size = max_size
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        """The target that served `key`'s last turn, if remembered and not expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        target, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return target

    def put(self, key: str, target: str, *, ttl_s: float | None = None) -> None:
        """Remember that `target` served `key` now (for `ttl_s`, or the default).

        Entries expired at the least recently used end go too: the map holds the
        conversations of the last TTL, not `max_size` of every one ever seen (a
        voice cascade puts a key per turn). Each entry is dropped once: O(1)
        amortized. An expired entry behind a live one waits for the live one's turn
        (routes with different TTLs), or for its own `get`."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        now = self._clock()
        entries = self._entries
        entries[key] = (target, now + ttl)
        entries.move_to_end(key)
        while len(entries) > self.max_size:
            entries.popitem(last=False)
        while len(entries) > 1:
            _, expires = entries[next(iter(entries))]
            if expires > now:
                break
            entries.popitem(last=False)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_targets(self, targets: Iterable[str]) -> None:
        """Drop every conversation served by one of `targets` (removed on reload)."""
        gone = set(targets)
        if gone:
            for key in [k for k, (t, _) in self._entries.items() if t in gone]:
                del self._entries[key]
