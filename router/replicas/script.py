"""The one Redis script of the global limits, and the encoding of one call to it.

A call carries three things, in this order, and Redis runs them atomically:
this replica's pending charges (so its own are never unseen by the checks), the
exact checks queued in one loop tick (each checks and charges the client key and
the first candidate with room, as `admit` describes), and a read of every counter
the replica is using, with a Redis-wide sequence number so that a late reply never
replaces a newer view. `SyncCall` builds the arguments and reads the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: KEYS[1]: the sequence key; then (current, previous) window of each counter.
#: ARGV: previous-window weight, ttl ms, counters n, (rpm, tpm) per counter (0 = no
#: limit); increments m, (key index, requests, tokens) each; turns k, each: tokens,
#: client counter (0 = none), candidates c, their counters (0 = unlimited).
#: Returns the sequence number, per turn the 0-based index of the candidate charged
#: (-1: the client key is over its limit, -2: every candidate is), then per counter
#: (current requests, current tokens, previous requests, previous tokens).
SYNC_LUA = """
local seq = redis.call('INCR', KEYS[1])
local w = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local p = 4
local rpm, tpm = {}, {}
for j = 1, n do
  rpm[j] = tonumber(ARGV[p])
  tpm[j] = tonumber(ARGV[p + 1])
  p = p + 2
end
local m = tonumber(ARGV[p])
p = p + 1
for _ = 1, m do
  local key = KEYS[tonumber(ARGV[p])]
  local r, t = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  p = p + 3
  if r ~= 0 then redis.call('HINCRBY', key, 'r', r) end
  if t ~= 0 then redis.call('HINCRBY', key, 't', t) end
  redis.call('PEXPIRE', key, ttl)
end
local function fits(j)
  if j == 0 or (rpm[j] <= 0 and tpm[j] <= 0) then return true end
  local cur = redis.call('HMGET', KEYS[2 * j], 'r', 't')
  local prev = redis.call('HMGET', KEYS[2 * j + 1], 'r', 't')
  local r = (tonumber(cur[1]) or 0) + w * (tonumber(prev[1]) or 0)
  local t = (tonumber(cur[2]) or 0) + w * (tonumber(prev[2]) or 0)
  return (rpm[j] <= 0 or r + 1 <= rpm[j]) and (tpm[j] <= 0 or t < tpm[j])
end
local function charge(j, tokens)
  if j == 0 then return end
  redis.call('HINCRBY', KEYS[2 * j], 'r', 1)
  redis.call('HINCRBY', KEYS[2 * j], 't', tokens)
  redis.call('PEXPIRE', KEYS[2 * j], ttl)
end
local out = {seq}
local k = tonumber(ARGV[p])
p = p + 1
for _ = 1, k do
  local tokens, client, c = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  p = p + 3
  local result = -2
  if client > 0 and not fits(client) then
    result = -1
  else
    for x = 1, c do
      local j = tonumber(ARGV[p + x - 1])
      if fits(j) then
        if client > 0 then charge(client, tokens) end
        charge(j, tokens)
        result = x - 1
        break
      end
    end
  end
  p = p + c
  out[#out + 1] = result
end
for j = 1, n do
  local cur = redis.call('HMGET', KEYS[2 * j], 'r', 't')
  local prev = redis.call('HMGET', KEYS[2 * j + 1], 'r', 't')
  out[#out + 1] = tonumber(cur[1]) or 0
  out[#out + 1] = tonumber(cur[2]) or 0
  out[#out + 1] = tonumber(prev[1]) or 0
  out[#out + 1] = tonumber(prev[2]) or 0
end
return out
"""

#: a global counter: ("t", target) or ("c", client key)
CounterKey = tuple[str, str]
#: (name, rpm, tpm) of a candidate or client key; 0 = no limit
Limited = tuple[str, int, int]


@dataclass(slots=True)
class SyncCall:
    """One run of `SYNC_LUA`, for `minute` (its windows: this one and the one before)."""

    minute: int
    #: counter -> its 1-based index (its keys are KEYS[2j] and KEYS[2j + 1])
    index: dict[CounterKey, int] = field(default_factory=dict)
    _limits: list[int] = field(default_factory=list)
    _increments: list[int] = field(default_factory=list)
    _turns: list[int] = field(default_factory=list)
    checks: int = 0

    def counter(self, key: CounterKey, rpm: int = 0, tpm: int = 0) -> int:
        j = self.index.get(key)
        if j is None:
            j = self.index[key] = len(self.index) + 1
            self._limits += [rpm, tpm]
        elif rpm or tpm:
            self._limits[2 * j - 2 : 2 * j] = [rpm, tpm]
        return j

    def increment(self, key: CounterKey, at: int, requests: int, tokens: int) -> None:
        """Add to the counter's window of minute `at` (this one or the one before)."""
        j = self.counter(key)
        self._increments += [2 * j + (1 if at < self.minute else 0), requests, tokens]

    def check(self, tokens: int, client: Limited | None, entries: list[Limited]) -> None:
        j_client = 0 if client is None else self.counter(("c", client[0]), client[1], client[2])
        candidates = [
            self.counter(("t", name), rpm, tpm) if rpm or tpm else 0 for name, rpm, tpm in entries
        ]
        self._turns += [tokens, j_client, len(candidates), *candidates]
        self.checks += 1

    def keys(self, window: Callable[[str, str, int], str], sequence: str) -> list[str]:
        keys = [sequence]
        for kind, name in self.index:
            keys += [window(kind, name, self.minute), window(kind, name, self.minute - 1)]
        return keys

    def args(self, weight: float, ttl_ms: int) -> list[int | float]:
        return [
            weight,
            ttl_ms,
            len(self.index),
            *self._limits,
            len(self._increments) // 3,
            *self._increments,
            self.checks,
            *self._turns,
        ]

    def read(self, reply: Any) -> tuple[int, list[int], dict[CounterKey, list[int]]]:
        """(sequence number, result per check, counts per counter) from the reply."""
        values = [int(v) for v in reply]
        results = values[1 : 1 + self.checks]
        counts = values[1 + self.checks :]
        return values[0], results, {k: counts[4 * j - 4 : 4 * j] for k, j in self.index.items()}
