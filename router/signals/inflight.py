"""In-flight requests per target: tower's `PendingRequests` load measure.

Each attempt takes a `Lease` when it starts and releases it when its stream ends,
fails or is cancelled (tower::load::PendingRequests counts "handles" the same way).
Releasing twice is harmless, so `release()` can sit in every `finally`.
"""

from __future__ import annotations


class InFlight:
    """The number of attempts at one target that have started and not yet ended."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def acquire(self) -> Lease:
        self._count += 1
        return Lease(self)

    def _release(self) -> None:
        self._count -= 1


class Lease:
    """One attempt's share of `InFlight`; `release()` is idempotent."""

    __slots__ = ("_owner",)

    def __init__(self, owner: InFlight) -> None:
        self._owner: InFlight | None = owner

    @property
    def released(self) -> bool:
        return self._owner is None

    def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            owner._release()
