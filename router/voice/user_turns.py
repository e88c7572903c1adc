"""A cascade session's user turns: the input audio buffer's events, and each
committed utterance heard by the `stt` route.

Mixed into `CascadeConnection` (router/voice/cascade.py), which provides the output
side and the responses. `input_audio_buffer.append` feeds the buffer and its server
VAD (`router.voice.input_buffer`): a start sends `speech_started` (and, with
`interrupt_response`, cancels the response in progress), a stop `speech_stopped`
and the commit (`committed`, the user item), whose transcript completes the item and,
with `create_response`, starts the answer (none for an empty transcript: no words
heard); utterances are heard one at a time, in order, and a client's
`response.create` waits for the words of the turns still being heard (push to talk
commits and asks at once: the answer is to what was just said). An idle timeout
commits an empty turn and answers it without speech-to-text. Under semantic VAD the words are
read at each pause, while the caller is silent (a guess at the transcript: a `Paused`
buffer), and how finished they sound sets how long the turn waits
(`router.voice.turn_end`); the turn that ends reuses that transcript, so a finished
sentence is answered without waiting for speech-to-text again. A stage failing on the
upstreams' side (a 5xx) fails the transcription with `server_error`, as the `error`
that follows it says, so the incident counts once against the cascade target.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

from router.clock import Clock
from router.errors import FirstTokenError
from router.realtime.session_config import SessionConfig
from router.voice.clock import Reading, VoiceClock, VoiceObserver
from router.voice.codec import wav
from router.voice.input_buffer import (
    BufferEvent,
    Committed,
    InputAudioBuffer,
    Paused,
    Resumed,
    TimedOut,
    Utterance,
)
from router.voice.items import ConversationItems
from router.voice.respond import Stages
from router.voice.turn_end import turn_end_wait_ms
from router.voice.vad import SpeechStarted, SpeechStopped

#: what the `stt` route heard: text, the target, its cost, seconds of audio billed
Heard = tuple[str, str, float, float | None]


class CascadeStages(Stages, Protocol):
    async def transcribe(self, audio: bytes, fields: Mapping[str, str] | None = None) -> Heard:
        """Text, the target that heard it, its cost, seconds of audio billed (`fields`:
        the form's `language` and `prompt`)."""
        ...


class UserTurns(ConversationItems):
    buffer: InputAudioBuffer
    transcription: bool
    closed: bool
    _buffer_item: str | None
    _turns: asyncio.Lock
    _hearing: set[asyncio.Task[None]]
    _changing: asyncio.Lock
    _stages: CascadeStages
    #: semantic VAD: the words being read at the latest pause, and what guesses the
    #: caller talked over cost (told with the turn's transcript)
    _guess: asyncio.Task[Heard] | None
    _guess_spent: float
    target: str
    _observer: VoiceObserver | None
    _clock: Clock
    config: SessionConfig

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def _cancel(self, reason: str) -> bool:
        raise NotImplementedError

    async def _start_response(
        self,
        overrides: Mapping[str, Any],
        clock: VoiceClock,
        stt: tuple[str, float] | None,
        items: list[Any] | None = None,
    ) -> None:
        raise NotImplementedError

    async def _unavailable(self, stage: str, exc: FirstTokenError) -> None:
        raise NotImplementedError

    async def _append(self, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(str(event.get("audio") or ""), validate=True)
        except (binascii.Error, ValueError):
            await self._error("audio must be base64", "invalid_value", event)
            return
        await self._changes(self.buffer.append(data))

    async def _changes(self, changes: list[BufferEvent]) -> None:
        # one list at a time: a turn ended by its words (`_end_turn_after`) is told whole
        # before what the next append caused, and the other way round
        async with self._changing:
            for change in changes:
                await self._change(change)

    async def _change(self, change: BufferEvent) -> None:
        if isinstance(change, SpeechStarted):
            self._buffer_item = self._new_id("item")
            await self.emit(
                "input_audio_buffer.speech_started",
                audio_start_ms=change.audio_start_ms,
                item_id=self._buffer_item,
            )
            vad = self.buffer.vad
            if vad is not None and vad.interrupt_response:
                await self._cancel("turn_detected")
        elif isinstance(change, SpeechStopped):
            await self.emit(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=change.audio_end_ms,
                item_id=self._buffer_item or self._new_id("item"),
            )
        elif isinstance(change, Committed):
            vad = self.buffer.vad
            respond = vad is not None and vad.create_response and not self.transcription
            guess, self._guess = self._guess, None
            if guess is not None:
                self._tell("ended")
            await self._commit(change.utterance, respond, guess)
        elif isinstance(change, TimedOut):
            await self._timed_out(change)
        elif isinstance(change, Paused):
            self._read_pause(change)
        elif isinstance(change, Resumed):
            self._drop_guess()

    def _read_pause(self, paused: Paused) -> None:
        """Semantic VAD: hear the words so far while the caller is silent; how finished
        they sound tells the buffer when the turn ends."""
        self._drop_guess()
        audio = wav(paused.utterance.pcm16, paused.utterance.rate)
        guess = self._spawn(self._stages.transcribe(audio, self._hints()))
        self._guess = guess
        self._spawn(self._end_turn_after(paused.pause, guess))

    async def _end_turn_after(self, pause: int, guess: asyncio.Task[Heard]) -> None:
        try:
            text = (await asyncio.shield(guess))[0]
        except FirstTokenError:
            self._tell("failed")
            return  # the turn ends at the timeout; its words are asked for again then
        vad = self.buffer.vad
        if vad is None or vad.eagerness is None or self.closed:
            return
        await self._changes(
            self.buffer.end_turn_after(pause, turn_end_wait_ms(text, vad.eagerness))
        )

    def _drop_guess(self) -> None:
        """The caller spoke on (or the buffer was taken another way): the words read at
        the pause are not the turn's; a reading still under way is cancelled."""
        guess, self._guess = self._guess, None
        if guess is None:
            return
        self._tell("talked_over")
        if not guess.done():
            guess.cancel()
        elif not guess.cancelled() and guess.exception() is None:
            self._guess_spent += guess.result()[2]

    def _tell(self, reading: Reading) -> None:
        if self._observer is not None:
            self._observer.reading(self.target, reading)

    async def _timed_out(self, change: TimedOut) -> None:
        """No speech for `idle_timeout_ms` since the last response was heard: as OpenAI,
        `timeout_triggered`, the silence committed as an empty user turn, and (with
        `create_response`) a response, on the conversation as it is (no speech to
        transcribe: the VAD heard none)."""
        item_id = self._new_id("item")
        await self.emit(
            "input_audio_buffer.timeout_triggered",
            audio_start_ms=change.audio_start_ms,
            audio_end_ms=change.audio_end_ms,
            item_id=item_id,
        )
        await self._committed(item_id, transcript="")
        vad = self.buffer.vad
        if vad is not None and vad.create_response:
            self._spawn(self._answer_silence(VoiceClock(self._clock)))

    async def _answer_silence(self, clock: VoiceClock) -> None:
        async with self._turns:  # after any utterance still being heard
            if not self.closed:
                await self._start_response({}, clock, None)

    async def _commit_event(self, event: dict[str, Any]) -> None:
        utterance = self.buffer.commit()
        if utterance is None or utterance.duration_s < 0.1:
            await self._error(
                "Error committing input audio buffer: buffer too small.",
                "input_audio_buffer_commit_empty",
                event,
            )
            return
        self._drop_guess()
        await self._commit(utterance, respond=False)

    async def _clear(self, event: dict[str, Any]) -> None:
        self.buffer.clear()
        self._drop_guess()
        self._buffer_item = None
        await self.emit("input_audio_buffer.cleared")

    async def _committed(self, item_id: str, transcript: str | None) -> dict[str, Any]:
        """The buffer committed as a user audio item (`transcript`: None until heard),
        in OpenAI's order: `committed`, then the item added and done."""
        item = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }
        previous = self._add_item(item)
        await self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item)
        await self.emit("conversation.item.done", previous_item_id=previous, item=item)
        return item

    async def _commit(
        self, utterance: Utterance, respond: bool, guess: asyncio.Task[Heard] | None = None
    ) -> None:
        item_id = self._buffer_item or self._new_id("item")
        self._buffer_item = None
        clock = VoiceClock(self._clock, utterance.speech_end_at)
        clock.mark("committed", utterance.committed_at)
        item = await self._committed(item_id, transcript=None)
        self._spawn_hearing(self._hear(item, utterance, clock, respond, guess))

    def _hear_item(self, item: dict[str, Any]) -> None:
        """A user item created with its audio and no transcript (a migration replays a
        turn the router had no words for so; a client may too): heard by the `stt`
        route like a committed turn, its transcript filled in, not answered (the client
        asks). The item keeps the words, not the audio; a `response.create` waits."""
        content = item.get("content")
        if item.get("role") != "user" or not isinstance(content, list) or len(content) != 1:
            return
        part = content[0]
        audio = part.get("audio") if isinstance(part, dict) else None
        if not isinstance(audio, str) or part.get("transcript") is not None:
            return
        try:
            pcm16 = self.buffer.format.decode(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            return  # kept as it came: nothing to hear
        if not pcm16:
            return
        item["content"] = [{"type": "input_audio", "transcript": None}]
        rate, now = self.buffer.format.rate, self._clock()
        end_ms = len(pcm16) * 1000 // (2 * rate)
        utterance = Utterance(pcm16, rate, 0, end_ms, now, now)
        self._spawn_hearing(self._hear(item, utterance, VoiceClock(self._clock, now), False))

    def _spawn_hearing(self, hearing: Coroutine[Any, Any, None]) -> None:
        """Hear a committed turn's words off the event path; a `response.create` waits
        for them meanwhile."""
        task = self._spawn(hearing)
        self._hearing.add(task)
        task.add_done_callback(self._hearing.discard)

    def _hints(self) -> dict[str, str]:
        return transcription_hints(self.config.session)

    async def _hear(
        self,
        item: dict[str, Any],
        utterance: Utterance,
        clock: VoiceClock,
        respond: bool,
        guess: asyncio.Task[Heard] | None = None,
    ) -> None:
        async with self._turns:  # one utterance at a time, in order
            clock.mark("stt_sent")
            heard: Heard | None = None
            if guess is not None:  # semantic VAD: the words read at the pause it ended in
                with contextlib.suppress(FirstTokenError):
                    heard = await guess
            try:
                if heard is None:
                    heard = await self._stages.transcribe(
                        wav(utterance.pcm16, utterance.rate), self._hints()
                    )
            except FirstTokenError as exc:
                await self.emit(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item["id"],
                    content_index=0,
                    error={"type": _wire_type(exc), "code": exc.code, "message": exc.message},
                )
                await self._unavailable("stt", exc)
                return
            clock.mark("stt_done")
            text, target, cost, audio_s = heard
            cost, self._guess_spent = cost + self._guess_spent, 0.0
            item["content"][0]["transcript"] = text
            seconds = audio_s if audio_s is not None else utterance.duration_s
            # no words heard (a cough, a door): nothing for the LLM to answer
            answer = respond and not self.closed and bool(text.strip())
            # the stage's cost is told once: in the answer it starts, or else here
            told = {} if answer else {"firsttoken": {"cost_usd": cost, "stt_target": target}}
            if text:  # one delta with the whole text, as OpenAI's whisper-1 sends it
                await self.emit(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=item["id"],
                    content_index=0,
                    delta=text,
                )
            await self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item["id"],
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": round(seconds, 3)},
                **told,
            )
            if answer and not self.closed:
                await self._start_response({}, clock, stt=(target, cost))


def transcription_hints(session: Mapping[str, Any]) -> dict[str, str]:
    """The session's `audio.input.transcription` `language` and `prompt`, as the
    speech-to-text form's fields (its `model` is the `stt` route's to choose)."""
    audio = session.get("audio")
    heard = audio.get("input") if isinstance(audio, Mapping) else None
    config = heard.get("transcription") if isinstance(heard, Mapping) else None
    if not isinstance(config, Mapping):
        return {}
    return {k: v for k in ("language", "prompt") if isinstance(v := config.get(k), str) and v}


def _wire_type(exc: FirstTokenError) -> str:
    """A stage's failure as the protocol's error type: the upstreams' side failing
    (a 5xx) is the session's server failing (`server_error`, as the `error` that
    follows it says), which the router counts against the cascade target."""
    return "server_error" if exc.status >= 500 else exc.type
