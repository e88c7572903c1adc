"""Speech-to-text with PocketSphinx (CMU Sphinx), off the event loop, in worker processes.

    Sphinx.transcribe(audio) -> Recognition(text, words, duration_s)

PocketSphinx holds the GIL for the whole of an utterance (measured here: a thread
decoding 4 s of speech let the event loop run twice in 5.8 s), so a thread pool would
stall every other request of the server. Utterances go to a `ProcessPoolExecutor`
instead: `workers` processes (spawned, so no thread state is forked), each with the
wheel's English model loaded once (`sphinx_worker`), which also resamples the audio to
the model's 16 kHz.

Bounds: at most `workers` utterances decode at once and at most `max_queued` wait; one
more is refused at once with `EngineBusy` (503 and Retry-After), which a router takes as
"try the next target". A client that goes away takes its utterance out of the queue (the
future is cancelled); one already decoding runs to its end, which `max_audio_s` bounds
(about 0.45 s of one core per second of audio, measured). Closing does not wait for it:
a worker still decoding a second after the close is terminated.

The pool's failures (a worker that died, a model that did not load) become
`EngineError` here, in `_run()`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.process
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from router.errors import BadRequest, EngineBusy, EngineError
from router.speech.pcm import Audio
from router.speech.sphinx_worker import SAMPLE_RATE, Recognition, decode, load

#: a second of a quiet warble, decoded once per worker at start: long enough that the
#: workers take one each (each loads its model), so no caller pays for loading
_WARM_UP = b"".join(
    int(300 * math.sin(i * 0.05) * math.sin(i * 0.0007)).to_bytes(2, "little", signed=True)
    for i in range(SAMPLE_RATE)
)


class Sphinx:
    def __init__(
        self,
        *,
        workers: int = 1,
        max_queued: int = 8,
        max_audio_s: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.workers = workers
        self.max_queued = max_queued
        self.max_audio_s = max_audio_s
        self._options = dict(options or {})
        self._pool: ProcessPoolExecutor | None = None
        self._admitted = 0
        #: utterances decoded, and refused because the queue was full
        self.decoded = 0
        self.refused = 0

    async def start(self) -> None:
        """Start the workers and wait until each has its model (raises `EngineError`)."""
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=load,
            initargs=(self._options,),
        )
        try:
            await asyncio.gather(*(self._run(_WARM_UP, SAMPLE_RATE) for _ in range(self.workers)))
        except EngineError:
            await self.aclose()
            raise

    async def transcribe(self, audio: Audio) -> Recognition:
        if audio.duration_s > self.max_audio_s:
            raise BadRequest(
                f"the audio is {audio.duration_s:.1f} s long; this engine transcribes at most "
                f"{self.max_audio_s:g} s at a time"
            )
        if self._admitted >= self.workers + self.max_queued:
            self.refused += 1
            raise EngineBusy(
                f"PocketSphinx is busy: {self.workers} utterance(s) decoding and "
                f"{self.max_queued} waiting"
            )
        self._admitted += 1
        try:
            result = await self._run(audio.pcm16(), audio.rate)
        finally:
            self._admitted -= 1
        self.decoded += 1
        return result

    async def _run(self, pcm16: bytes, rate: int) -> Recognition:
        if self._pool is None:
            raise EngineError("PocketSphinx is not started")
        loop = asyncio.get_running_loop()
        try:
            # Cancelling this await cancels the executor's future: a queued utterance
            # is dropped; one already in a worker finishes there and is thrown away.
            return await loop.run_in_executor(self._pool, decode, pcm16, rate)
        except BrokenProcessPool as exc:
            raise EngineError(f"a PocketSphinx worker died ({exc})") from exc
        except (RuntimeError, OSError, ValueError) as exc:
            raise EngineError(f"PocketSphinx failed: {exc}") from exc

    @property
    def in_flight(self) -> int:
        """Utterances decoding or waiting for a worker."""
        return self._admitted

    async def aclose(self) -> None:
        """Stop within about `CLOSE_GRACE_S`: queued utterances are dropped, idle workers
        exit, and a worker still decoding is terminated (its caller is gone with the
        server, and one utterance can take tens of seconds of CPU on a loaded machine)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        workers = list(pool._processes.values())  # no public handle before Python 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, _stop, workers)


#: how long a closing pool's workers get to finish before they are terminated
CLOSE_GRACE_S = 1.0


def _stop(workers: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Join the workers; terminate those still running after `CLOSE_GRACE_S`."""
    deadline = time.monotonic() + CLOSE_GRACE_S
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
            worker.join(5.0)
