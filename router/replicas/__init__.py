"""State shared by the replicas of one router, through Redis (optional).

What is shared, and what stays local:

- Breaker openings and Retry-After cooldowns: published to every replica (pub/sub)
  and stored as keys whose TTL is the cooldown, read by a replica at start and
  after an outage (`cooldowns`).
- Per-target and per-client-key rpm/tpm: counted in Redis, so a limit holds
  across replicas (`limits` admits, `counters` keeps the counts). Far below a
  limit a replica admits on its own view of the count and charges Redis in the
  background (one call per 50 ms tick); near it, or with a stale view, the turn
  waits for the atomic check in Redis, one call for all the turns of a loop tick
  (`views` has the headroom rule).
- Live TTFT estimates stay local: they describe what this replica sees.

Redis is never on a turn's critical path for more than `timeout_ms` (5 ms by
default); when it is down or slow every replica keeps routing on local state
(fail open), logs that once, exports it (`metrics`), and resyncs when it returns.
"""

from router.replicas.limits import ClientQuota
from router.replicas.metrics import SharedStateCollector
from router.replicas.state import SharedState

__all__ = ["ClientQuota", "SharedState", "SharedStateCollector"]
