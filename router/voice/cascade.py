"""A cascade served as a Realtime session by FirstToken itself.

`CascadeConnection` is what a realtime target's connection is to the session relay
(`send` a client frame, `receive` a server frame, `close`), so a realtime route can
list realtime and cascade targets side by side: the policy picks per session, and
the relay, limits and migration work unchanged. Inside, it speaks the protocol:

- `input_audio_buffer.append` feeds the input buffer and its server VAD; a stop
  commits the utterance (`speech_stopped`, `committed`, the user item), which goes
  to the `stt` route; its transcript completes the item
  (`conversation.item.input_audio_transcription.completed`) and, with
  `create_response`, starts a response (not for an empty transcript: no words heard;
  `router.voice.user_turns`);
- a response is one chat turn on the `llm` route and, for audio, TTS turns on the
  `tts` route clause by clause (`router.voice.respond`);
- barge-in: `speech_started` during a response (with `interrupt_response`), or
  `response.cancel`, cancels the LLM and TTS requests at once; the response ends
  `cancelled`;
- `conversation.item.truncate` cuts the assistant item's text to what was heard,
  so the next turn's context is what the caller heard;
- a stage failing on the upstreams' side (a 5xx: its route has no target left) is
  followed by an `error` of type `server_error`: the session migrates, as from a
  hosted target.

Frames out wait in a bounded queue: a slow client slows the answer, not memory.
Out-of-band responses (`response.create` with `conversation: "none"`) run beside
the conversation's, on their own context when `input` gives one (`item_reference`
names a conversation item); their items never join the conversation, and only a
`response.cancel` naming them stops them.
Under server VAD, `idle_timeout_ms` of streamed audio with no speech since the last
answer was heard (`response.done` plus its audio's length) commits an empty user
turn and answers it (`input_audio_buffer.timeout_triggered`), as OpenAI does.
A user item's `input_image` parts reach the LLM as `image_url` parts. A turn too long
for the LLM is asked again with its oldest turns dropped (`router.voice.fit`).
`semantic_vad` reads the words heard at each pause to decide how long the turn
waits (`router.voice.turn_end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from router.clock import Clock
from router.errors import FirstTokenError
from router.realtime.session_config import SessionConfig
from router.realtime.wire import dumps, error_event
from router.upstream.realtime import Closed
from router.voice.clauses import ClauseSplitter
from router.voice.clock import VoiceClock, VoiceObserver
from router.voice.codec import AUDIO_TYPES, AudioFormat
from router.voice.context import chat_body, response_input
from router.voice.fit import Fitted, retention_ratio
from router.voice.input_buffer import InputAudioBuffer
from router.voice.respond import Response
from router.voice.settings import (
    CascadeSettings,
    default_session,
    session_vad,
    transcription_session,
    turn_detection_error,
)
from router.voice.user_turns import CascadeStages, UserTurns

log = logging.getLogger("firsttoken.voice")
OUTBOX = 256


class CascadeConnection(UserTurns):
    def __init__(
        self,
        *,
        target: str,
        settings: CascadeSettings,
        stages: CascadeStages,
        clock: Clock,
        session_id: str,
        observer: VoiceObserver | None = None,
        transcription: bool = False,
    ) -> None:
        self.target = target
        #: a transcription session: VAD and speech to text, no answers
        self.transcription = transcription
        self.connect_s = 0.0
        self._settings = settings
        self._stages = stages
        self._clock = clock
        self._observer = observer
        self._ids = itertools.count(1)
        self._session_id = session_id
        self.config = SessionConfig()
        self.config.update(
            transcription_session(session_id, settings)
            if transcription
            else default_session(session_id, target, settings)
        )
        self.created = dumps(
            {"type": "session.created", "event_id": "event_0", "session": self.config.session}
        )
        self._out: asyncio.Queue[str | Closed] = asyncio.Queue(OUTBOX)
        self.buffer = InputAudioBuffer(clock=clock)
        self._guess = None
        self._guess_spent = 0.0
        self._apply_audio()
        self.items: list[dict[str, Any]] = []
        self._responses: dict[str, Response] = {}
        self._response: asyncio.Task[None] | None = None
        self._current: Response | None = None
        #: out-of-band responses in progress (`conversation: none`): id -> response, task
        self._out_of_band: dict[str, tuple[Response, asyncio.Task[None]]] = {}
        self._conversation_id = "conv_" + session_id.removeprefix("sess_")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turns = asyncio.Lock()
        #: committed turns whose words are being heard (a response waits for them)
        self._hearing: set[asyncio.Task[None]] = set()
        self._changing = asyncio.Lock()
        self._buffer_item: str | None = None
        self.closed = False

    # -- the connection's side ------------------------------------------------------------

    async def send(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            await self._error("the event is not JSON", "invalid_json")
            return
        if not isinstance(event, dict):
            await self._error("the event must be a JSON object", "invalid_event")
            return
        kind = event.get("type")
        handler = _HANDLERS.get(str(kind))
        if handler is None:
            await self._error(f"unknown event type {kind!r}", "invalid_event", event)
            return
        try:
            await handler(self, event)
        except FirstTokenError as exc:
            await self._error(exc.message, exc.code or "invalid_value", event)
        except Exception:  # a bug of ours: logged; the session goes on
            log.exception("a cascade could not handle %s", kind)

    async def receive(self) -> str | bytes | Closed:
        return await self._out.get()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(asyncio.QueueFull):
            self._out.put_nowait(Closed(code, reason))

    # -- output ----------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_ft{next(self._ids)}"

    async def emit(self, kind: str, **fields: Any) -> None:
        if not self.closed:
            await self._out.put(dumps({"type": kind, "event_id": self._new_id("event"), **fields}))

    async def _error(self, message: str, code: str, event: Mapping[str, Any] | None = None) -> None:
        event_id = event.get("event_id") if event else None
        await self._out.put(
            error_event(
                message, code=code, event_id=event_id if isinstance(event_id, str) else None
            )
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        # a stage's failure is the awaiting side's to tell (a guess at a pause's words)
        if exc is not None and not isinstance(exc, FirstTokenError):
            log.error("a cascade task failed", exc_info=exc)

    # -- session ---------------------------------------------------------------------------

    def _audio(self, side: str) -> Mapping[str, Any]:
        audio = self.config.session.get("audio")
        part = audio.get(side) if isinstance(audio, Mapping) else None
        return part if isinstance(part, Mapping) else {}

    def _apply_audio(self) -> None:
        inp = self._audio("input")
        fmt = inp.get("format")
        vad = session_vad(inp.get("turn_detection"), self._settings.vad, self.transcription)
        if self.buffer.configure(_format(fmt), vad):
            self._drop_guess()  # a restarted buffer has no pause: its words are no turn's

    async def _session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            await self._error("session.update needs a session object", "invalid_value", event)
            return
        session = {k: v for k, v in session.items() if k not in ("id", "object", "model")}
        kind = self.config.session.get("type")
        if session.get("type", kind) != kind:  # a session keeps the type it opened with
            await self._error(f"this session is a {kind} session", "invalid_value", event)
            return
        wrong = turn_detection_error(session)
        if wrong is not None:  # refused whole, as OpenAI: the session stays as it was
            await self._error(wrong, "invalid_value", event)
            return
        self.config.update(session)
        self._apply_audio()
        await self.emit("session.updated", session=self.config.session)

    # -- responses -------------------------------------------------------------------------

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self.transcription:
            await self._error("a transcription session has no responses", "invalid_value", event)
            return
        overrides = event.get("response")
        out_of_band = isinstance(overrides, dict) and overrides.get("conversation") == "none"
        if not out_of_band and self._response is not None and not self._response.done():
            await self._error(
                "Conversation already has an active response",
                "conversation_already_has_active_response",
                event,
            )
            return
        overrides = overrides if isinstance(overrides, dict) else {}
        if self._hearing:  # a turn just committed (push to talk): answer its words
            await asyncio.wait(set(self._hearing))
            if self.closed:
                return
        # its own context, or the conversation's (InvalidValue: an error event)
        items = response_input(overrides["input"], self.items) if "input" in overrides else None
        await self._start_response(overrides, VoiceClock(self._clock), None, items)

    async def _start_response(
        self,
        overrides: Mapping[str, Any],
        clock: VoiceClock,
        stt: tuple[str, float] | None,
        items: list[Any] | None = None,
    ) -> None:
        out_of_band = overrides.get("conversation") == "none"
        if not out_of_band and self._response is not None and not self._response.done():
            await self._response  # under server VAD the previous one finishes first
        session = self.config.session
        modalities = overrides.get("output_modalities") or session.get("output_modalities")
        audio = "audio" in (modalities or ["audio"])
        # the response's own `audio.output` (voice, format) over the session's
        output = {**self._audio("output"), **_output(overrides)}
        voice = str(output.get("voice") or self._settings.voice)
        response = Response(
            response_id=self._new_id("resp"),
            new_id=self._new_id,
            emit=self.emit,
            # `truncation: auto` (the default): a turn too long is asked again shorter
            stages=self._stages
            if session.get("truncation") == "disabled"
            else Fitted(self._stages, retention_ratio(session.get("truncation"))),
            body=chat_body(
                self._settings.llm, session, self.items if items is None else items, overrides
            ),
            audio=audio,
            voice=voice,
            out_format=_format(output.get("format")),
            speed=_speed(output.get("speed")),
            prefetch=self._settings.prefetch,
            splitter=ClauseSplitter(**self._settings.clauses.model_dump()),
            clock=clock,
            session_echo=output and {"output": output},
            add_item=self._add_item,
            conversation_id=None if out_of_band else self._conversation_id,
            metadata=metadata if isinstance(metadata := overrides.get("metadata"), dict) else None,
        )
        if stt is not None:
            response.cost.targets["stt"], response.cost.stt_usd = stt
        self._responses = {response.id: response, **dict(list(self._responses.items())[-7:])}
        task = self._spawn(self._respond(response))
        if out_of_band:  # beside the conversation's, cancelled only by its id
            self._out_of_band[response.id] = (response, task)
        else:
            self._current, self._response = response, task
            self.buffer.idle(None)  # the caller listens: no idle timeout meanwhile

    async def _respond(self, response: Response) -> None:
        try:
            await response.run()
        finally:
            aside = self._out_of_band.pop(response.id, None) is not None
            if not aside and response is self._current:
                # the idle timeout counts from its end plus its audio's length
                self.buffer.idle(self.buffer.position_ms + _playing_ms(response))
        if response.failure is not None:
            await self._unavailable("llm or tts", response.failure)
        # An aside's first audio answers no turn of the caller's: the relay times it as
        # an out-of-band response (`firsttoken_realtime_out_of_band_first_delta_seconds`).
        if self._observer is not None and response.status == "completed" and not aside:
            self._observer.observe(self.target, response.clock)

    async def _unavailable(self, stage: str, exc: FirstTokenError) -> None:
        """A stage failed upstream (5xx; a bad request stays): the session moves on."""
        if exc.status >= 500 and not self.closed:
            why = f"The voice cascade's {stage} stage failed ({exc.message})."
            await self._out.put(error_event(why, type="server_error", code="cascade_unavailable"))

    async def _cancel_event(self, event: dict[str, Any]) -> None:
        """`response_id` names the response (an out-of-band one too); without it, the
        conversation's response in progress."""
        wanted = event.get("response_id")
        if wanted in self._out_of_band:
            response, task = self._out_of_band[str(wanted)]
            stopped = await self._stop(task, response, "client_cancelled")
        elif wanted is None or (self._current is not None and wanted == self._current.id):
            stopped = await self._cancel("client_cancelled")
        else:
            stopped = False
        if not stopped:
            await self._error("no response to cancel", "response_cancel_not_active", event)

    async def _cancel(self, reason: str) -> bool:
        """Cancel the conversation's response in progress (barge-in, `response.cancel`)."""
        return await self._stop(self._response, self._current, reason)

    async def _stop(
        self, task: asyncio.Task[None] | None, response: Response | None, reason: str
    ) -> bool:
        if task is None or task.done() or response is None:
            return False
        response.cancel_reason = reason
        decided = self._clock()
        task.cancel()
        await asyncio.wait([task])  # its task group has closed the LLM and every TTS request
        closed = response.upstreams_closed_at
        if self._observer is not None and closed is not None:
            self._observer.barge_in(self.target, closed - decided)
        return True


Handler = Callable[[CascadeConnection, dict[str, Any]], Coroutine[Any, Any, None]]
_HANDLERS: dict[str, Handler] = {
    "session.update": CascadeConnection._session_update,
    "input_audio_buffer.append": CascadeConnection._append,
    "input_audio_buffer.commit": CascadeConnection._commit_event,
    "input_audio_buffer.clear": CascadeConnection._clear,
    "conversation.item.create": CascadeConnection._item_create,
    "conversation.item.retrieve": CascadeConnection._item_retrieve,
    "conversation.item.delete": CascadeConnection._item_delete,
    "conversation.item.truncate": CascadeConnection._item_truncate,
    "response.create": CascadeConnection._response_create,
    "response.cancel": CascadeConnection._cancel_event,
}


def _output(overrides: Mapping[str, Any]) -> Mapping[str, Any]:
    """A `response.create`'s `audio.output`, if it gives one."""
    audio = overrides.get("audio")
    output = audio.get("output") if isinstance(audio, Mapping) else None
    return output if isinstance(output, Mapping) else {}


def _speed(value: object) -> float | None:
    """`audio.output.speed` for the TTS request: OpenAI's range (0.25-1.5), and none
    at 1.0, so a TTS server without the field is not sent it."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    speed = min(1.5, max(0.25, float(value)))
    return None if speed == 1.0 else speed


def _format(fmt: object) -> AudioFormat:
    """A session's `{type: audio/pcm | audio/pcmu | audio/pcma}` (PCM when unknown)."""
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    return AudioFormat(kind) if kind in AUDIO_TYPES else AudioFormat()


def _playing_ms(response: Response) -> float:
    """The playback OpenAI adds to `response.done` before an idle timeout counts: the
    whole of its audio (none for a response cut short: the caller spoke)."""
    return response.audio_ms if response.status == "completed" else 0.0
