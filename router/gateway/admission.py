"""Admission: from a request body to a `ParsedRequest` without stalling the event loop.

A 4 MiB body of tiny messages costs about 0.3 s of `json.loads` and as much again to
walk: on the event loop that freezes every stream. A thread does not help (the
parse holds the GIL throughout; measured: the loop stalls for the whole parse), so
the work is split by what it costs:

- The route and the client's key come first. While a large body arrives,
  `BodyScreen` looks for the `model` in its first and last few KiB
  (`gateway/prescan.py`): found at the start, it is checked before the rest is read
  (a refusal then closes the connection instead of reading on); found at the end,
  before the chunks are joined. Otherwise the `model` is found in the raw bytes (a
  C-speed search, trusted only when the key occurs once). Either way it is checked
  against the routes and the key's routes and request rate before anything parses
  the body: an unknown model, a route the key may not use or a key over its rate is
  answered at once, whatever the body's size.
- A large chat body's `messages`, when they come first, are bounded on its first
  `EARLY_BYTES`, then at each doubling up to `COUNT_BYTES`, while it arrives
  (`prescan.too_many_messages`: commas and brackets counted at C speed, a parse of
  at most `max_messages` + 1 items only on the last look and only when those cannot
  tell): over the limit, the 400 is answered and the connection closed there,
  without reading the rest (so such a body to an unknown model is a 400, not a 404:
  its shape is refused before its model is known).
- A small body (at most `limits.inline_bytes`, and at most `limits.inline_values`
  JSON values, counted from its commas and brackets in C) is parsed on the loop:
  that costs at most about a millisecond.
- Anything larger is parsed and validated in a worker process (a child of the
  router, `gateway/parse_worker.py`, at a lower CPU priority); the loop sends the
  raw bytes down a pipe in the pieces they arrived in (no join) and receives only
  the verdict and the body's bytes to forward (`ClientBody`), never the object. At
  most `parse_queue` bodies wait for a worker; past that the answer is a 503 with
  Retry-After.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Callable

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

import router
from router.edge import LimitsConfig
from router.errors import FirstTokenError, Overloaded
from router.gateway.parse_worker import HEADER, frame
from router.gateway.prescan import (
    COUNT_BYTES,
    EARLY_BYTES,
    WINDOW_BYTES,
    leading_model,
    locate_model,
    too_many_messages,
    trailing_model,
)
from router.gateway.request import ParsedRequest, decode, validate
from router.upstream.base import Endpoint
from router.vocabulary import ParsePlace

log = logging.getLogger("firsttoken.admission")

#: how long a worker may take to exit once its stdin closes
_EXIT_S = 2.0

#: the folder `router` was imported from: the worker imports it from there too
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(router.__file__)))
#: what a worker that died mid-job looks like from its pipes
_WORKER_GONE = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError)

#: checks the route and the client's key for a model, before the body is walked
Precheck = Callable[[str], None]


def _joined(chunks: list[bytes]) -> bytes:
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def is_small(raw: bytes, limits: LimitsConfig) -> bool:
    """Cheap enough to parse on the event loop: bounded bytes and JSON values."""
    if len(raw) > limits.inline_bytes:
        return False
    values = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    return values <= limits.inline_values


class BodyScreen:
    """Looks at a turn's body while it arrives (`feed` each chunk), for a large one:
    its `model` from the first and the last `WINDOW_BYTES`, checked by `precheck` as
    soon as it is found, and for a chat body its `messages` bounded on the first
    `EARLY_BYTES` and at each doubling up to `COUNT_BYTES` (a body declared large;
    others on `COUNT_BYTES` or their end), by `prescan.too_many_messages`: C-speed
    counts, and a parse of at most `max_messages` + 1 items only on the last look
    and only when those cannot tell. A refusal is raised from `feed`; raised while
    more is to come, the body is not read on (`body.Unread`). Keeps a few KiB, and
    the first `COUNT_BYTES` until they are counted, never the body."""

    def __init__(
        self,
        precheck: Precheck,
        limits: LimitsConfig,
        declared: int | None,
        *,
        messages: bool = False,
    ) -> None:
        self._precheck = precheck
        self._limits = limits
        self._inline = limits.inline_bytes
        self._declared = declared
        self._head = b""
        self._tail = b""
        self._size = 0
        #: the first `COUNT_BYTES` of a chat body, until its `messages` are counted
        self._counted: list[bytes] | None = [] if messages else None
        self._count_at = min(max(self._inline, WINDOW_BYTES), COUNT_BYTES)
        #: how much must have arrived for the next early look at the count
        self._look_at = EARLY_BYTES if (declared or 0) > self._inline else COUNT_BYTES
        #: the model found and checked, if any
        self.model: str | None = None

    def feed(self, chunk: bytes, more: bool) -> None:
        self._size += len(chunk)
        if not more and self._size <= self._inline:
            return  # a small body: the parse on the loop is cheap
        if self._counted is not None:
            self._count(chunk, more)
        if self.model is not None:
            return  # found already
        if len(self._head) < WINDOW_BYTES:
            self._head += chunk[: WINDOW_BYTES - len(self._head)]
            large = (self._declared or 0) > self._inline
            if large and (len(self._head) >= WINDOW_BYTES or not more):
                self._found(leading_model(self._head))
                if self.model is not None:
                    return
        self._tail = (self._tail + chunk[-WINDOW_BYTES:])[-WINDOW_BYTES:]
        if not more and self._size > self._inline:
            self._found(trailing_model(self._tail))

    def _count(self, chunk: bytes, more: bool) -> None:
        assert self._counted is not None
        held = self._size - len(chunk)  # what came before this chunk
        if held < self._count_at:
            self._counted.append(chunk[: self._count_at - held])
        final = self._size >= self._count_at or not more
        if final:
            head, self._counted = b"".join(self._counted), None
            too_many_messages(head, self._limits)
        elif self._size >= self._look_at:
            self._look_at = 2 * self._size
            too_many_messages(b"".join(self._counted), self._limits, final=False)

    def _found(self, model: str | None) -> None:
        if model is not None:
            self._precheck(model)
            self.model = model


class _Worker:
    """One parse worker process and its pipes; one job at a time."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = BufferedByteReceiveStream(process.stdout)

    @classmethod
    async def start(cls) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        process = await anyio.open_process(
            [sys.executable, "-m", "router.gateway.parse_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its logs go where the router's go
            env=env,
        )
        return cls(process)

    async def call(self, job: bytes, chunks: list[bytes], size: int) -> tuple[bool, object]:
        """The job, then the body's `size` bytes as the pieces they arrived in (the
        worker reads one framed piece: a join here would copy megabytes)."""
        await self._stdin.send(frame(job) + job)
        await self._stdin.send(HEADER.pack(size))
        for chunk in chunks:
            await self._stdin.send(chunk)
        (size,) = HEADER.unpack(await self._stdout.receive_exactly(HEADER.size))
        answer: tuple[bool, object] = pickle.loads(await self._stdout.receive_exactly(size))
        return answer

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stdin.aclose()  # the worker exits at the end of its input
            with anyio.move_on_after(_EXIT_S):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
            await self.process.aclose()


class BodyParser:
    """Parses request bodies: small ones on the loop, large ones in worker processes.

    Workers are child processes (`python -m router.gateway.parse_worker`), started on
    the first large body (about 0.3 s, once) and kept; up to `limits.parse_workers`
    of them. One that dies (a kill, the OOM killer) is replaced on the next body."""

    def __init__(self, parsed: Callable[[ParsePlace], None] = lambda place: None) -> None:
        self._parsed = parsed
        self._idle: list[_Worker] = []
        self._alive = 0
        self._pending = 0
        self._freed = anyio.Event()

    @property
    def pending(self) -> int:
        """Large bodies being parsed or waiting for a worker."""
        return self._pending

    async def parse(
        self,
        endpoint: Endpoint,
        body: bytes | list[bytes],
        session_header: str | None,
        limits: LimitsConfig,
        precheck: Precheck,
        *,
        checked: str | None = None,
    ) -> ParsedRequest:
        """The parsed request, or the error to answer with (400, 403, 404, 429, 503).
        `body`: its bytes, or its pieces as they arrived (a large body then goes to
        the worker piece by piece, never joined here unless its `model` must be
        searched for). `checked`: a model `precheck` has passed already
        (`BodyScreen.model`)."""
        chunks = [body] if isinstance(body, bytes) else body
        size = sum(map(len, chunks))
        if size <= limits.inline_bytes:
            chunks = [_joined(chunks)]
            if is_small(chunks[0], limits):
                raw = chunks[0]
                return self._inline(
                    endpoint, raw, session_header, limits, precheck, checked=checked
                )
        model = checked
        if model is None:  # not at either end: search the whole (C speed, once)
            chunks = [_joined(chunks)]
            model = locate_model(chunks[0])
            if model is not None:
                precheck(model)
        if self._pending >= limits.parse_workers + limits.parse_queue:
            raise Overloaded("too many large request bodies are waiting to be parsed; retry")
        self._pending += 1
        self._parsed("worker")
        try:
            job = pickle.dumps((endpoint, session_header, limits), protocol=pickle.HIGHEST_PROTOCOL)
            ok, answer = await self._call(job, chunks, size, limits.parse_workers)
        finally:
            self._pending -= 1
        del chunks, body
        if not ok:
            assert isinstance(answer, FirstTokenError)
            try:
                raise answer
            finally:
                # Else the error's traceback holds this frame, which holds the error: a
                # cycle that keeps `raw` (megabytes) alive until the cyclic GC finds it.
                answer = None
        assert isinstance(answer, ParsedRequest)
        if answer.model != model:  # a duplicate `model` key: the parse keeps the last
            precheck(answer.model)
        return answer

    def _inline(
        self,
        endpoint: Endpoint,
        raw: bytes,
        session_header: str | None,
        limits: LimitsConfig,
        precheck: Precheck,
        *,
        checked: str | None,
    ) -> ParsedRequest:
        body = decode(raw)
        model = body.get("model")
        if isinstance(model, str) and model != checked:
            precheck(model)
        self._parsed("loop")
        return validate(endpoint, body, raw, session_header, limits)

    async def _call(
        self, job: bytes, chunks: list[bytes], size: int, workers: int
    ) -> tuple[bool, object]:
        while not self._idle and self._alive >= workers:
            await self._freed.wait()
        if self._idle:
            worker = self._idle.pop()
        else:
            self._alive += 1
            try:
                worker = await _Worker.start()
            except OSError as exc:
                self._release(None)
                raise Overloaded("no parse worker could be started; retry") from exc
        try:
            answer = await worker.call(job, chunks, size)
        except BaseException as exc:  # dead, or cancelled mid-answer: its pipe is unusable
            self._release(None)
            await worker.aclose()
            if isinstance(
                exc, anyio.EndOfStream | anyio.IncompleteRead | anyio.BrokenResourceError
            ):
                log.error("a parse worker died; the next large body starts another")
                raise Overloaded("the request could not be parsed; retry") from exc
            raise
        self._release(worker if self._alive <= workers else None)
        if self._alive > workers:  # `parse_workers` went down with a reload
            await worker.aclose()
        return answer

    def _release(self, worker: _Worker | None) -> None:
        if worker is None:
            self._alive -= 1
        else:
            self._idle.append(worker)
        self._freed.set()
        self._freed = anyio.Event()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            self._alive -= 1
            await worker.aclose()
