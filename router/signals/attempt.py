"""The handle that measures one attempt at one target, from `TargetSignals.begin()` to
`release()` (see router/signals/target.py for what is recorded when)."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from router.errors import UpstreamError, UpstreamTimeout
from router.signals.inflight import Lease

if TYPE_CHECKING:
    from router.signals.target import TargetSignals

Outcome = Literal["finished", "failed", "cancelled"]


class Attempt:
    """One attempt at one target, from `begin()` to `release()`.

    Report at most one outcome (`finished`, `failed` or `cancelled`; later ones are
    ignored), then `release()`. As a context manager it releases on exit, books an
    escaping `UpstreamError` as `failed` and cancellation as `cancelled`.
    """

    __slots__ = (
        "_first_answer_at",
        "_first_token_at",
        "_free",
        "_lease",
        "_measures",
        "_outcome",
        "_owner",
        "_probe",
        "_tokens",
        "_unloaded",
        "_verdict",
        "_warmup",
        "admitted",
        "prompt_tokens",
        "started_at",
    )

    def __init__(
        self,
        owner: TargetSignals,
        prompt_tokens: int,
        lease: Lease,
        *,
        admitted: bool,
        probe: bool,
        unloaded: bool,
        measures_ttft: bool = True,
        free: bool = False,
        warmup: bool = False,
    ) -> None:
        self._owner = owner
        #: the first turn on a probed engine: it warms the prefix cache, and its TTFT
        #: (the cold prefill) says nothing of the turns after it (see `TargetSignals.begin`)
        self._warmup = warmup
        #: began with a free slot (vLLM): its TTFT is a sample of the engine's free TTFT
        self._free = free
        self._measures = measures_ttft
        self._first_answer_at: float | None = None
        self.prompt_tokens = prompt_tokens
        self._lease = lease
        self.admitted = admitted
        self._probe = probe
        self._unloaded = unloaded
        self.started_at = owner._clock()
        self._first_token_at: float | None = None
        self._tokens: int | None = None
        self._outcome: Outcome | None = None
        self._verdict = False

    @property
    def target(self) -> str:
        return self._owner.name

    @property
    def ttft_s(self) -> float | None:
        at = self._first_token_at
        return None if at is None else at - self.started_at

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    @property
    def is_probe(self) -> bool:
        return self._probe

    def headers(self, headers: Mapping[str, str]) -> None:
        """The response's headers (rate-limit headroom)."""
        self._owner.provider_limits.update(headers, sent_at=self.started_at)

    @property
    def first_answer_s(self) -> float | None:
        at = self._first_answer_at
        return None if at is None else at - self.started_at

    def first_token(self, *, answer: bool = True, at: float | None = None) -> None:
        """The first token the user sees arrived (reasoning, refusal, audio or, with
        `answer`, content or a tool call): records TTFT from `begin()` (once). `at`:
        when it arrived, if that was before this call (the relay books it after the
        token is on its way to the client)."""
        if self._first_token_at is not None or self._outcome is not None:
            return
        now = self._owner._clock() if at is None else at
        self._first_token_at = now
        if self._warmup:
            self._owner.measured_at = now
        elif self._measures:
            self._owner._record_ttft(now - self.started_at, self._unloaded, self._free)
        if answer:
            self.first_answer(at=now)

    def first_answer(self, at: float | None = None) -> None:
        """The first answer token (content or a tool call) arrived (once), at `at` or now."""
        if self._first_answer_at is not None or self._outcome is not None:
            return
        now = self._owner._clock() if at is None else at
        self._first_answer_at = now
        if self._measures and not self._warmup:
            self._owner._record_answer(now - self.started_at, self._unloaded)

    def token_count(self, n: int) -> None:
        """Output tokens seen so far (a running total, used if usage never comes)."""
        self._tokens = n

    def finished(
        self, prompt_tokens: int | None = None, completion_tokens: int | None = None
    ) -> None:
        """The response ended well; token counts from its usage chunk, if any."""
        if self._outcome is not None:
            return
        self._outcome = "finished"
        self._verdict = True
        owner = self._owner
        completion = completion_tokens if completion_tokens is not None else self._tokens
        tpot = None
        if self._first_token_at is not None and completion is not None and completion > 1:
            tpot = (owner._clock() - self._first_token_at) / (completion - 1)
        owner._record_completion(completion, tpot)
        extra = (completion or 0) + (
            prompt_tokens - self.prompt_tokens if prompt_tokens is not None else 0
        )
        if extra:
            owner.local_limits.record(extra, requests=0)

    def failed(self, error: UpstreamError) -> None:
        if self._outcome is not None:
            return
        self._outcome = "failed"
        owner = self._owner
        self._verdict = owner._record_failure(error)
        if isinstance(error, UpstreamTimeout) and self._first_answer_at is None and self._measures:
            owner._record_censored_ttft(
                owner._clock() - self.started_at,
                token=self._first_token_at is None,
                free=self._free,
            )

    def cancelled(self) -> None:
        """The client went away or this attempt lost a hedge: not the target's fault."""
        if self._outcome is not None:
            return
        self._outcome = "cancelled"
        if self._first_answer_at is None and self._measures:
            owner = self._owner
            owner._record_censored_ttft(
                owner._clock() - self.started_at,
                token=self._first_token_at is None,
                free=self._free,
            )

    def release(self) -> None:
        """End the attempt's share of in-flight (idempotent; call it in `finally`)."""
        if self._lease.released:
            return
        self._lease.release()
        if self._probe and not self._verdict:
            self._owner.breaker.release_probe()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, UpstreamError):
                self.failed(exc)
            elif exc is not None and not isinstance(exc, Exception):
                self.cancelled()  # CancelledError and trio's Cancelled are BaseExceptions
        finally:
            self.release()
