"""What the speech simulators share: one audio endpoint on a `SimServer`, and records.

A speech simulator is a `SimServer` (so it also answers chat completions, as
speaches and vLLM do beside their audio endpoints) with one more route. Its fault
modes are `router.sim.behaviour`'s, set server-wide or per request in the
`x-sim-fault` header; the ones that happen before an answer (`refuse`, `status`,
`rate_limited`, `hang_before_headers`) act as they do for chat, the others as each
simulator's docstring says. `Behaviour.ttft_s` (or the `x-sim-ttft-ms` header) is
the time to the answer: the transcript, or the first audio bytes.

Every audio request leaves a `SpeechRecord` in `calls`; `cancelled_at` is set when
the client went away before the answer was complete (a router cancelling a stage).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from aiohttp import web

from router.clock import Clock
from router.sim.backend import Rejection
from router.sim.behaviour import FAULT_HEADER, TTFT_HEADER, Behaviour, Fault, FaultSyntaxError
from router.sim.openai_server import FixedBackend, _ms_header
from router.sim.records import RequestRecord
from router.sim.server import SimServer
from router.sim.wire import error_body


@dataclass(slots=True)
class SpeechRecord(RequestRecord):
    #: STT: the transcript returned; TTS: the text to speak
    text: str = ""
    #: STT: milliseconds of audio received; TTS: of audio sent
    audio_ms: float = 0.0
    #: TTS: bytes of audio sent
    audio_bytes: int = 0


class _AudioRoutes(FixedBackend):
    """Chat answered with fixed timing, plus the simulator's own audio route."""

    def __init__(self, add: Callable[[web.Application], None]) -> None:
        self._add = add

    def add_routes(self, app: web.Application) -> None:
        self._add(app)


class BadSpeechRequest(ValueError):
    """The audio request is invalid (answered 400 in OpenAI's shape)."""


class SpeechSim(SimServer):
    #: the audio endpoint, e.g. /v1/audio/speech
    path: ClassVar[str]
    prefix: ClassVar[str] = "audio-sim"

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        model: str = "sim-speech",
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = time.monotonic,
        max_records: int = 10_000,
    ) -> None:
        super().__init__(
            _AudioRoutes(self._add_route),
            behaviour=behaviour,
            model=model,
            host=host,
            port=port,
            clock=clock,
            max_records=max_records,
        )
        self.calls: deque[SpeechRecord] = deque(maxlen=max_records)
        self._call_ids = itertools.count(1)

    def _add_route(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._audio)

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        record = SpeechRecord(
            id=f"{self.prefix}{next(self._call_ids)}",
            path=request.path,
            body=None,
            headers={k.lower(): v for k, v in request.headers.items()},
            received_at=self._clock(),
        )
        self.calls.append(record)
        try:
            return await self._checked(request, record)
        except asyncio.CancelledError:
            if record.finished_at is None:
                record.cancelled_at = self._clock()
            raise
        except ConnectionResetError:
            if record.finished_at is None:
                record.cancelled_at = self._clock()
            raise asyncio.CancelledError from None

    async def _checked(self, request: web.Request, record: SpeechRecord) -> web.StreamResponse:
        behaviour = self.behaviour
        try:
            fault_text = request.headers.get(FAULT_HEADER)
            fault = Fault.parse(fault_text) if fault_text else behaviour.fault
            await self._parse(request, record)
        except (BadSpeechRequest, FaultSyntaxError) as exc:
            body = error_body(str(exc), "invalid_request_error")
            return self._reject(record, Rejection(400, body))
        record.fault = fault.kind
        early = await self._early_fault(request, record, fault)
        if early is not None:
            return early
        delay = _ms_header(request.headers, TTFT_HEADER, behaviour.ttft_s)
        return await self._answer(request, record, fault, delay)

    async def _parse(self, request: web.Request, record: SpeechRecord) -> None:
        """Read and check the request into `record` (raise `BadSpeechRequest`)."""
        raise NotImplementedError

    async def _answer(
        self, request: web.Request, record: SpeechRecord, fault: Fault, delay_s: float
    ) -> web.StreamResponse:
        raise NotImplementedError

    async def _wait_until(self, record: SpeechRecord, delay_s: float) -> None:
        """Sleep until `delay_s` after the request arrived."""
        remaining = record.received_at + delay_s - self._clock()
        if remaining > 0:
            await asyncio.sleep(remaining)

    @staticmethod
    async def _hang() -> None:
        await asyncio.get_running_loop().create_future()
