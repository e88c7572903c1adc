"""A spoken answer: the LLM's text in, the caller's audio out, clause by clause.

`SpokenAnswer.run(deltas)` reads the LLM's text deltas, cuts them into pieces
(`clauses`), and asks the TTS for each piece as soon as it is complete, while the
LLM still streams: the first clause goes to the TTS after a few words, not after
the whole answer. Up to `prefetch` pieces are synthesised ahead of the one being
played, so the next piece's audio is ready when the current one ends; audio is
emitted strictly in order, resampled to `out_rate` (24 kHz for the Realtime API)
with libsoxr's `LQ` filter (no chunk held back), one resampler per piece.

What it emits, through the `emit` callback (which may wait: a slow client slows
the answer, and memory stays bounded to `prefetch` pieces of audio):

    TextDelta(text)       the LLM's text as it arrives (the audio transcript deltas)
    AudioDelta(pcm16)     audio at `out_rate`, in order (chunks already waiting when
                          one is sent are joined to it: fewer, larger deltas under load)
    PieceSpoken(piece)    a piece's audio is complete: its text and milliseconds,
                          what `truncate.heard_text` needs after a barge-in

`spoken` lists the pieces sent, the last one marked incomplete if a barge-in cut
it short.

Barge-in: cancel the task running `run()`. Everything it started is inside one
task group, so the LLM read and every TTS request in flight are cancelled at
once, and each TTS stream's `aclose()` closes its connection (the target sees the
cancel). An upstream failure fails the whole answer the same way.

If a `VoiceClock` is given, it is marked: `llm_first_token`, `llm_first_clause`,
`tts_sent` (the first piece's request) and `tts_first_audio` (its first bytes).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from router.voice.clauses import ClauseSplitter
from router.voice.clock import Mark, VoiceClock
from router.voice.codec import PCM_RATE, pcm_ms
from router.voice.resample import SPEECH_QUALITY, Resampler
from router.voice.truncate import SpokenPiece


class PcmSource(Protocol):
    """A TTS answer: 16-bit mono PCM at `sample_rate` (a `SpeechStream`, or a routed one)."""

    sample_rate: int

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


#: speak this text (already stripped): open a TTS answer, return once it is accepted
Synthesize = Callable[[str], Awaitable[PcmSource]]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    pcm16: bytes


@dataclass(frozen=True, slots=True)
class PieceSpoken:
    piece: SpokenPiece


SpeechEvent = TextDelta | AudioDelta | PieceSpoken
Emit = Callable[[SpeechEvent], Awaitable[None]]


@dataclass(slots=True)
class _Piece:
    text: str
    send: MemoryObjectSendStream[bytes]
    receive: MemoryObjectReceiveStream[bytes]
    played: anyio.Event = field(default_factory=anyio.Event)


class SpokenAnswer:
    def __init__(
        self,
        synthesize: Synthesize,
        emit: Emit,
        *,
        out_rate: int = PCM_RATE,
        splitter: ClauseSplitter | None = None,
        prefetch: int = 2,
        clock: VoiceClock | None = None,
    ) -> None:
        self._synthesize = synthesize
        self._emit = emit
        self._out_rate = out_rate
        self._splitter = splitter or ClauseSplitter()
        self._prefetch = max(1, prefetch)
        self._queued: list[_Piece] = []
        self._clock = clock
        #: every piece whose audio was emitted in full, in order
        self.spoken: list[SpokenPiece] = []
        #: all the text the LLM produced so far
        self.text = ""

    async def run(self, deltas: AsyncIterator[str]) -> None:
        """Speak the answer to its end (or until cancelled)."""
        send, receive = anyio.create_memory_object_stream[_Piece](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, deltas, send, tg)
                await self._play(receive)
        finally:
            send.close()
            receive.close()
            for piece in self._queued:  # pieces never played, after a barge-in
                piece.send.close()
                piece.receive.close()

    # -- the LLM side ---------------------------------------------------------------------

    async def _read(
        self, deltas: AsyncIterator[str], pieces: MemoryObjectSendStream[_Piece], tg: TaskGroup
    ) -> None:
        with pieces:
            async for delta in deltas:
                if not delta:
                    continue
                self._mark("llm_first_token")
                self.text += delta
                await self._emit(TextDelta(delta))
                for text in self._splitter.push(delta):
                    await self._queue(text, pieces, tg)
            for text in self._splitter.flush():
                await self._queue(text, pieces, tg)

    async def _queue(
        self, text: str, pieces: MemoryObjectSendStream[_Piece], tg: TaskGroup
    ) -> None:
        self._mark("llm_first_clause")
        send, receive = anyio.create_memory_object_stream[bytes](math.inf)
        piece = _Piece(text, send, receive)
        queued = self._queued
        # piece k is synthesised once piece k - prefetch has been played
        gate = queued[-self._prefetch].played if len(queued) >= self._prefetch else None
        queued.append(piece)
        if text.strip():
            tg.start_soon(self._fetch, piece, gate)
        else:
            send.close()  # whitespace: nothing to say
        pieces.send_nowait(piece)

    async def _fetch(self, piece: _Piece, gate: anyio.Event | None) -> None:
        with piece.send:
            if gate is not None:
                await gate.wait()
            self._mark("tts_sent")
            source = await self._synthesize(piece.text.strip())
            try:
                resampler = Resampler(source.sample_rate, self._out_rate, SPEECH_QUALITY)
                async for chunk in source.aiter_bytes():
                    self._mark("tts_first_audio")
                    out = resampler.push(chunk)
                    if out:
                        piece.send.send_nowait(out)
                tail = resampler.flush()
                if tail:
                    piece.send.send_nowait(tail)
            except anyio.BrokenResourceError:
                pass  # nobody plays this piece any more: the answer was cut short
            finally:
                with anyio.CancelScope(shield=True):
                    await source.aclose()

    # -- the caller's side ----------------------------------------------------------------

    async def _play(self, pieces: MemoryObjectReceiveStream[_Piece]) -> None:
        with pieces:
            async for piece in pieces:
                audio_bytes = 0
                try:
                    with piece.receive:
                        async for first in piece.receive:
                            pcm = first + _waiting(piece.receive)
                            audio_bytes += len(pcm)
                            await self._emit(AudioDelta(pcm))
                except BaseException:
                    if audio_bytes:  # cut short: keep what was sent, for truncation
                        ms = pcm_ms(audio_bytes, self._out_rate)
                        self.spoken.append(SpokenPiece(piece.text, ms, complete=False))
                    raise
                spoken = SpokenPiece(piece.text, pcm_ms(audio_bytes, self._out_rate))
                self.spoken.append(spoken)
                piece.played.set()
                await self._emit(PieceSpoken(spoken))

    def _mark(self, name: Mark) -> None:
        if self._clock is not None:
            self._clock.mark(name)


def _waiting(chunks: MemoryObjectReceiveStream[bytes], limit: int = 1 << 16) -> bytes:
    """Audio already waiting behind a chunk, joined to it: one delta instead of many when
    the TTS runs ahead of the client (nothing waits for more; the first chunk goes alone)."""
    more = []
    size = 0
    while size < limit:
        try:
            chunk = chunks.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
        more.append(chunk)
        size += len(chunk)
    return b"".join(more)
