"""A continuous-batching engine model, loosely after vLLM's scheduler.

The queueing model, one engine loop task per server:

- A request becomes a `Sequence` in the FIFO waiting queue.
- Each step the scheduler admits waiting sequences, in order, while fewer than
  `max_num_seqs` run and the KV cache can hold the newcomer's whole budget
  (prompt + output tokens, reserved on admission; there is no preemption).
- A step lasts `step_s + step_s_per_seq * (running - 1)` (decode gets slower as
  the batch grows) plus `prefill_s_per_token` for every prompt token of the
  sequences admitted in this step that the prefix cache did not hold. Prefill
  stalls the whole batch, as in vLLM without chunked prefill.
- At the end of a step every running sequence has one more token (a newly
  admitted one gets its first). A sequence with all its tokens leaves the batch
  and frees its KV budget.
- Prefix cache: a request carries hashes of its leading messages (1, 2, ... n);
  after prefill they enter an LRU of `prefix_cache_entries` keys. A later request
  whose leading messages match skips prefill for those tokens (so the next turn
  of a conversation on the same server starts sooner).
- Abort: when the client goes away, the sequence leaves the waiting queue or the
  batch at once and its KV budget is freed.

TTFT is therefore queue wait + the prefill step, and grows with queue depth, the
way vLLM's does under load (llm-d measured a p90 of 0.54 s at a mean waiting
queue of 0.1, and 31 s at a queue of 8). Defaults describe a small
GPU-like engine: prefill 0.1 ms per token, a 12 ms decode step at batch 1 growing
by 1 ms per extra sequence, 16 sequences, 64k KV tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from router.clock import Clock

FinishedReason = Literal["stop", "length", "abort"]


class EngineParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_num_seqs: int = Field(default=16, ge=1)
    kv_cache_tokens: int = Field(default=65536, ge=1)
    max_model_len: int = Field(default=8192, ge=1)
    prefill_s_per_token: float = Field(default=0.0001, ge=0.0)
    step_s: float = Field(default=0.012, gt=0.0)
    step_s_per_seq: float = Field(default=0.001, ge=0.0)
    prefix_cache_entries: int = Field(default=4096, ge=0)


class EngineObserver(Protocol):
    """What the engine reports (vLLM's Prometheus metrics implement it)."""

    def admitted(self, seq: Sequence, now: float) -> None: ...

    def prefilled(self, prompt_tokens: int, cached_tokens: int) -> None: ...

    def token(self, seq: Sequence, now: float) -> None: ...

    def finished(self, seq: Sequence, reason: FinishedReason, now: float) -> None: ...


class Sequence:
    """One request inside the engine; it is also the server's `Generation`."""

    __slots__ = (
        "_engine",
        "_ready",
        "arrived_at",
        "cached_tokens",
        "consumed",
        "finish_reason",
        "first_token_at",
        "headers",
        "last_token_at",
        "n_tokens",
        "prefix_keys",
        "produced",
        "prompt_tokens",
        "state",
        "wanted",
    )

    def __init__(
        self,
        engine: Engine,
        *,
        prompt_tokens: int,
        n_tokens: int,
        prefix_keys: tuple[tuple[str, int], ...],
        finish_reason: FinishedReason,
        now: float,
    ) -> None:
        self._engine = engine
        self._ready = asyncio.Event()
        self.headers: Mapping[str, str] = {}
        self.prompt_tokens = prompt_tokens
        self.n_tokens = n_tokens
        self.prefix_keys = prefix_keys
        self.finish_reason = finish_reason
        self.arrived_at = now
        self.cached_tokens = 0
        self.produced = 0
        self.consumed = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.state: Literal["waiting", "running", "done"] = "waiting"
        #: the reader is woken once this many tokens are out (or the sequence ends)
        self.wanted = 1

    @property
    def kv_tokens(self) -> int:
        return self.prompt_tokens + self.n_tokens

    async def next_token(self) -> None:
        await self.next_tokens(1)

    async def next_tokens(self, k: int) -> int:
        """Wait until the next `k` tokens are out (fewer if the answer ends first);
        returns how many were consumed. Only then is this reader woken."""
        want = min(self.consumed + k, self.n_tokens)
        while self.produced < want:
            if self.state == "done":
                if self.produced > self.consumed:
                    break
                raise RuntimeError("the engine dropped this sequence")
            self.wanted = want
            self._ready.clear()
            await self._ready.wait()
        got = max(min(self.produced, want) - self.consumed, 0)
        self.consumed += got
        return got

    def close(self) -> None:
        self._engine.abort(self)

    def _wake(self) -> None:
        self._ready.set()


class Engine:
    def __init__(
        self,
        params: EngineParams,
        observer: EngineObserver,
        clock: Clock = time.monotonic,
    ) -> None:
        self.params = params
        self._observer = observer
        self._clock = clock
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.kv_used = 0
        self._prefixes: OrderedDict[str, None] = OrderedDict()
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: when the step in progress ends (None while idle): see `router.sim.foresight`
        self.step_ends_at: float | None = None

    @property
    def kv_usage(self) -> float:
        return self.kv_used / self.params.kv_cache_tokens

    def fits(self, prompt_tokens: int, n_tokens: int) -> bool:
        total = prompt_tokens + n_tokens
        return total <= self.params.max_model_len and total <= self.params.kv_cache_tokens

    def submit(
        self,
        prompt_tokens: int,
        n_tokens: int,
        prefix_keys: tuple[tuple[str, int], ...],
        finish_reason: FinishedReason,
    ) -> Sequence:
        """Queue a request; the caller has checked `fits`."""
        seq = Sequence(
            self,
            prompt_tokens=prompt_tokens,
            n_tokens=n_tokens,
            prefix_keys=prefix_keys,
            finish_reason=finish_reason,
            now=self._clock(),
        )
        self.waiting.append(seq)
        self._work.set()
        return seq

    def abort(self, seq: Sequence) -> None:
        if seq.state == "done":
            return
        if seq.state == "waiting":
            self.waiting.remove(seq)
        else:
            self.running.remove(seq)
            self.kv_used -= seq.kv_tokens
        seq.state = "done"
        self._observer.finished(seq, "abort", self._clock())
        seq._wake()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _cached_tokens(self, seq: Sequence) -> int:
        hit = 0
        for key, tokens in seq.prefix_keys:
            if key not in self._prefixes:
                break
            self._prefixes.move_to_end(key)
            hit = tokens
        return min(hit, seq.prompt_tokens - 1)

    def _remember(self, seq: Sequence) -> None:
        limit = self.params.prefix_cache_entries
        if limit == 0:
            return
        for key, _ in seq.prefix_keys:
            self._prefixes[key] = None
            self._prefixes.move_to_end(key)
        while len(self._prefixes) > limit:
            self._prefixes.popitem(last=False)

    def _admit(self, now: float) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.params.kv_cache_tokens
        while self.waiting and len(self.running) < self.params.max_num_seqs:
            seq = self.waiting[0]
            if self.kv_used + seq.kv_tokens > budget:
                break
            self.waiting.popleft()
            seq.state = "running"
            seq.cached_tokens = self._cached_tokens(seq)
            self.kv_used += seq.kv_tokens
            self.running.append(seq)
            admitted.append(seq)
            self._observer.admitted(seq, now)
        return admitted

    def _step_s(self, admitted: list[Sequence]) -> float:
        p = self.params
        prefill = sum(s.prompt_tokens - s.cached_tokens for s in admitted)
        batch = max(1, len(self.running))
        return prefill * p.prefill_s_per_token + p.step_s + p.step_s_per_seq * (batch - 1)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.running and not self.waiting:
                self.step_ends_at = None
                self._work.clear()
                await self._work.wait()
            started = loop.time()
            admitted = self._admit(self._clock())
            step = self._step_s(admitted)
            self.step_ends_at = self._clock() + step
            await asyncio.sleep(max(0.0, started + step - loop.time()))
            now = self._clock()
            for seq in admitted:
                if seq.state == "running":
                    self._observer.prefilled(seq.prompt_tokens, seq.cached_tokens)
                    self._remember(seq)
            for seq in list(self.running):
                seq.produced += 1
                self._observer.token(seq, now)
                seq.first_token_at = seq.first_token_at or now
                seq.last_token_at = now
                if seq.produced >= seq.n_tokens:
                    self.running.remove(seq)
                    self.kv_used -= seq.kv_tokens
                    seq.state = "done"
                    self._observer.finished(seq, seq.finish_reason, now)
                if seq.produced >= seq.wanted or seq.state == "done":
                    seq._wake()
