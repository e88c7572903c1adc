"""One simulated Realtime session: the GA protocol's state machine, transport-free.

`SimRealtimeSession` takes the client's events one at a time (`handle_text`) and
answers through the `send` and `close` callables it was given, so the server
module owns the WebSocket and this one owns the protocol: the session
configuration, the input audio buffer with server VAD, the conversation, and
responses (text, audio with transcript, or a function call) with usage.

A response runs in its own task, so `response.cancel` and a barge-in (speech
starting while it runs, with `interrupt_response`) end it as OpenAI does: the
item is left `incomplete` and `response.done` says `cancelled` with the reason.

A transcription session (`?intent=transcription`) keeps the type it opened with,
answers each committed turn with transcription deltas and a completed transcript,
and refuses `response.create`. The module is kept whole past 400 lines: one
protocol's state machine, whose handlers share the session's state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from router.clock import Clock
from router.sim.realtime_accounting import (
    default_session,
    item_text,
    merge,
    response_usage,
    transcription_session,
)
from router.sim.realtime_behaviour import RealtimeBehaviour
from router.sim.realtime_records import CancelRecord, RealtimeRecord, ResponseRecord
from router.sim.realtime_response import SimResponse
from router.sim.realtime_vad import EnergyVad, VadConfig, pcm16_rms

Event = dict[str, Any]
Send = Callable[[Event], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


class SimRealtimeSession:
    def __init__(
        self,
        record: RealtimeRecord,
        *,
        behaviour: Callable[[], RealtimeBehaviour],
        send: Send,
        close: Close,
        clock: Clock,
        model: str,
        transcription: bool = False,
    ) -> None:
        self.record = record
        self._behaviour = behaviour
        self._send = send
        self._close = close
        self._clock = clock
        self._ids = itertools.count(1)
        # ids unique across sessions and servers, as OpenAI's are: a migrated session's
        # items keep the ids the old upstream gave them, and a counter of this session's
        # own would give a new item one of those (`item_id_conflict`, found by the soak)
        self._id_stem = secrets.token_hex(4)
        record.session = (
            transcription_session(record.id) if transcription else default_session(record.id, model)
        )
        self.session = record.session
        self.items = record.items
        #: opened with `?intent=transcription`: transcripts, no responses
        self.transcription = transcription
        self._audio_ms: dict[str, float] = {}
        self._vad = EnergyVad(VadConfig())
        self._buffer_ms = 0.0
        self._buffer_item: str | None = None
        self._task: asyncio.Task[None] | None = None
        #: out-of-band responses (`conversation: none`), running beside the conversation's
        self._beside: set[asyncio.Task[None]] = set()
        #: every response running, by id (a `response.cancel` may name any of them)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._cancel_reason: str | None = None
        self._previous_input = (0, 0)
        self._handlers: dict[str, Callable[[Event], Awaitable[None]]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_event,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.retrieve": self._item_retrieve,
            "conversation.item.delete": self._item_delete,
            "conversation.item.truncate": self._item_truncate,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
        }

    def _id(self, prefix: str) -> str:
        return f"{prefix}_sim{self._id_stem}{next(self._ids)}"

    async def emit(self, type_: str, **fields: Any) -> None:
        await self._send({"type": type_, "event_id": self._id("event"), **fields})

    async def error(
        self, message: str, *, code: str, event: Event | None = None, type_: str = ""
    ) -> None:
        error = {
            "type": type_ or "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": event.get("event_id") if event else None,
        }
        await self.emit("error", error=error)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.emit("session.created", session=self.session)
        self.record.created_at = self._clock()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        running = [t for t in (task, *self._beside) if t is not None and not t.done()]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def handle_binary(self) -> None:
        self.record.bad_frames += 1
        await self.error("Binary frames are not supported.", code="invalid_event")

    async def handle_event(self, event: Event) -> None:
        kind = str(event.get("type"))
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            size = len(audio) * 3 // 4 if isinstance(audio, str) else 0
            self.record.events.append(
                {"type": kind, "event_id": event.get("event_id"), "bytes": size}
            )
        else:
            self.record.events.append(event)
        handler = self._handlers.get(kind)
        if handler is None:
            await self.error(f"Invalid value: '{kind}'.", code="invalid_value", event=event)
            return
        await handler(event)

    # -- session ------------------------------------------------------------------------

    async def _session_update(self, event: Event) -> None:
        session = event.get("session")
        if not isinstance(session, dict) or "type" not in session:
            await self.error(
                "Missing required parameter: 'session.type'.",
                code="missing_required_parameter",
                event=event,
            )
            return
        if session["type"] != self.session["type"]:  # a session keeps the type it opened with
            await self.error(
                f"Invalid value: '{session['type']}'. This session is a "
                f"'{self.session['type']}' session.",
                code="invalid_value",
                event=event,
            )
            return
        merge(self.session, {k: v for k, v in session.items() if k != "model"})
        td = self._turn_detection()
        if td is not None:
            self._vad.config = VadConfig(
                float(td.get("threshold") or 0.5),
                int(td.get("prefix_padding_ms") or 300),
                int(td.get("silence_duration_ms") or 500),
            )
        await self.emit("session.updated", session=self.session)

    def _audio_input(self) -> Mapping[str, Any]:
        audio = self.session.get("audio") or {}
        return audio.get("input") or {}

    def _turn_detection(self) -> Mapping[str, Any] | None:
        td = self._audio_input().get("turn_detection")
        return td if isinstance(td, Mapping) else None

    def _input_is_pcm(self) -> bool:
        fmt = self._audio_input().get("format") or {}
        return bool(fmt.get("type", "audio/pcm") == "audio/pcm")

    # -- input audio --------------------------------------------------------------------

    async def _append(self, event: Event) -> None:
        try:
            data = base64.b64decode(str(event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            await self.error("Invalid base64 audio.", code="invalid_value", event=event)
            return
        self.record.audio_bytes_in += len(data)
        pcm = self._input_is_pcm()
        duration = len(data) / (48.0 if pcm else 8.0)
        self._buffer_ms += duration
        if self._buffer_item is None:
            self._buffer_item = self._id("item")
        td = self._turn_detection()
        if td is None or td.get("type") not in ("server_vad", "semantic_vad"):
            self._vad.position_ms += duration
            return
        change = self._vad.feed(pcm16_rms(data) if pcm else 0.0, duration)
        if change == "speech_started":
            await self.emit(
                "input_audio_buffer.speech_started",
                audio_start_ms=int(self._vad.start_ms),
                item_id=self._buffer_item,
            )
            if td.get("interrupt_response", True):
                await self._cancel("turn_detected")
        elif change == "speech_stopped":
            item_id = self._buffer_item
            await self.emit(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=int(self._vad.position_ms),
                item_id=item_id,
            )
            started = asyncio.get_running_loop().time()
            await self._commit()
            if self.transcription:
                return
            if td.get("create_response", True) and not self._active:
                self._start_response({}, started)

    async def _commit_event(self, event: Event) -> None:
        if self._buffer_ms < 100:
            await self.error(
                "Error committing input audio buffer: buffer too small.",
                code="input_audio_buffer_commit_empty",
                event=event,
            )
            return
        await self._commit()

    async def _commit(self) -> None:
        item_id = self._buffer_item or self._id("item")
        previous = self.items[-1]["id"] if self.items else None
        part: Event = {"type": "input_audio", "transcript": None}
        item: Event = {
            "id": item_id,
            "type": "message",
            "object": "realtime.item",
            "status": "completed",
            "role": "user",
            "content": [part],
        }
        self._audio_ms[item_id] = self._buffer_ms
        self.items.append(item)
        self._buffer_ms, self._buffer_item = 0.0, None
        self._vad.reset()
        await self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item)
        await self.emit("conversation.item.done", previous_item_id=previous, item=item)
        if self._audio_input().get("transcription"):
            behaviour = self._behaviour()
            if behaviour.transcript_s > 0:
                await asyncio.sleep(behaviour.transcript_s)
            if behaviour.transcript_error is not None:
                await self.emit(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item_id,
                    content_index=0,
                    error={
                        "type": behaviour.transcript_error,
                        "code": None,
                        "message": "The simulator was told to fail this transcription.",
                        "param": None,
                    },
                )
                return
            transcript = behaviour.transcript
            part["transcript"] = transcript
            for word in transcript.split(" "):
                await self.emit(
                    "conversation.item.input_audio_transcription.delta",
                    item_id=item_id,
                    content_index=0,
                    delta=word + " ",
                )
            await self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(self._audio_ms[item_id] / 1000, 3)},
            )

    async def _clear(self, event: Event) -> None:
        self._buffer_ms, self._buffer_item = 0.0, None
        self._vad.reset()
        await self.emit("input_audio_buffer.cleared")

    # -- conversation -------------------------------------------------------------------

    def _find(self, item_id: object) -> int | None:
        for i, item in enumerate(self.items):
            if item.get("id") == item_id:
                return i
        return None

    async def _item_create(self, event: Event) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            await self.error("Invalid item.", code="invalid_value", event=event)
            return
        item = {**item, "object": "realtime.item", "status": "completed"}
        item.setdefault("id", self._id("item"))
        if self._find(item["id"]) is not None:
            await self.error("Duplicate item id.", code="item_id_conflict", event=event)
            return
        heard = self._heard_audio(item)
        if heard is None:
            await self.error("Invalid 'audio': not base64.", code="invalid_value", event=event)
            return
        if heard:  # the model hears it; the item as echoed carries no audio, as OpenAI's
            self.record.audio_items[item["id"]] = heard
            self._audio_ms[item["id"]] = heard / (48.0 if self._input_is_pcm() else 8.0)
            item["content"] = [
                {k: v for k, v in part.items() if k != "audio"} for part in item["content"]
            ]
        after = event.get("previous_item_id")
        at = self._find(after) if after is not None else None
        if at is None:
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
        else:
            previous = after
            self.items.insert(at + 1, item)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item)
        await self.emit("conversation.item.done", previous_item_id=previous, item=item)

    async def _item_retrieve(self, event: Event) -> None:
        at = self._find(event.get("item_id"))
        if at is None:
            await self.error("Item not found.", code="item_not_found", event=event)
            return
        await self.emit("conversation.item.retrieved", item=self.items[at])

    async def _item_delete(self, event: Event) -> None:
        at = self._find(event.get("item_id"))
        if at is None:
            await self.error("Item not found.", code="item_not_found", event=event)
            return
        item = self.items.pop(at)
        await self.emit("conversation.item.deleted", item_id=item["id"])

    async def _item_truncate(self, event: Event) -> None:
        self.record.truncates.append(event)
        at = self._find(event.get("item_id"))
        item = self.items[at] if at is not None else None
        end_ms = event.get("audio_end_ms")
        if item is None or item.get("role") != "assistant" or not isinstance(end_ms, int):
            await self.error(
                "Only assistant audio can be truncated.", code="invalid_value", event=event
            )
            return
        if end_ms > self._audio_ms.get(item["id"], 0.0):
            await self.error(
                "audio_end_ms is longer than the item's audio.", code="invalid_value", event=event
            )
            return
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""
        self._audio_ms[item["id"]] = float(end_ms)
        await self.emit(
            "conversation.item.truncated",
            item_id=item["id"],
            content_index=int(event.get("content_index") or 0),
            audio_end_ms=end_ms,
        )

    # -- responses ----------------------------------------------------------------------

    @property
    def _active(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _response_create(self, event: Event) -> None:
        if self.transcription:
            await self.error(
                "Responses are not supported in transcription sessions.",
                code="invalid_value",
                event=event,
            )
            return
        params = event.get("response")
        params = params if isinstance(params, dict) else {}
        if params.get("conversation", "auto") not in ("auto", "none"):
            await self.error(
                "Invalid value for 'response.conversation': expected 'auto' or 'none'.",
                code="invalid_value",
                event=event,
            )
            return
        modalities = params.get("output_modalities", ["audio"])
        if not isinstance(modalities, list) or not set(modalities) <= {"text", "audio"}:
            await self.error(
                "Invalid value for 'response.output_modalities': expected 'text' or 'audio'.",
                code="invalid_value",
                event=event,
            )
            return
        if self._active and params.get("conversation") != "none":
            await self.error(
                "Conversation already has an active response in progress.",
                code="conversation_already_has_active_response",
                event=event,
            )
            return
        self._start_response(params, asyncio.get_running_loop().time())

    async def _response_cancel(self, event: Event) -> None:
        """Cancel the response named by `response_id` (any running one, out-of-band
        too), or without it the conversation's in-progress response, as OpenAI does."""
        wanted = event.get("response_id")
        if wanted is None:
            task = self._task if self._active else None
            wanted = next((rid for rid, t in self._running.items() if t is task), None)
        else:
            task = self._running.get(str(wanted))
        running = str(wanted) if task is not None and not task.done() else None
        self.record.cancels.append(CancelRecord(self._clock(), running))
        if self._behaviour().fault.deaf:
            return  # a hung server: the cancel is never answered
        if task is None or running is None:
            await self.error(
                "Cancellation failed: no active response found.",
                code="response_cancel_not_active",
                event=event,
            )
            return
        await self._cancel_task(task, "client_cancelled")

    async def _cancel(self, reason: str) -> None:
        """Cancel the conversation's response, if one runs."""
        if self._task is not None:
            await self._cancel_task(self._task, reason)

    async def _cancel_task(self, task: asyncio.Task[None], reason: str) -> None:
        if task.done():
            return
        self._cancel_reason = reason
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._cancel_reason = None

    def _start_response(self, params: Mapping[str, Any], started: float) -> None:
        rec = ResponseRecord(self._id("resp"), self._clock())
        self.record.responses.append(rec)
        response = SimResponse(self, rec, params, started)
        task = asyncio.get_running_loop().create_task(response.run())
        self._running[rec.id] = task
        task.add_done_callback(lambda _: self._running.pop(rec.id, None))
        if response.in_conversation:
            self._task = task
        else:  # out of band: beside the conversation's
            self._beside.add(task)
            task.add_done_callback(self._beside.discard)

    # -- what a response needs ---------------------------------------------------------

    def behaviour(self) -> RealtimeBehaviour:
        return self._behaviour()

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    def new_id(self, prefix: str) -> str:
        return self._id(prefix)

    def set_audio_ms(self, item_id: str, ms: float) -> None:
        self._audio_ms[item_id] = ms

    def last_user_text(self) -> str:
        """The last user words: text, a transcript, or audio, committed from the input
        buffer or created as an item (which the model "hears" as
        `behaviour.transcript`, transcribed or not)."""
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                text = item_text(item)
                if text:
                    return text
                if item.get("id") in self.record.audio_items or item.get("id") in self._audio_ms:
                    return self._behaviour().transcript
        return ""

    @staticmethod
    def _heard_audio(item: Mapping[str, Any]) -> int | None:
        """Bytes of audio in a user item's `input_audio` parts (None: not base64)."""
        content = item.get("content")
        if item.get("role") != "user" or not isinstance(content, list):
            return 0
        total = 0
        for part in content:
            audio = part.get("audio") if isinstance(part, dict) else None
            if isinstance(audio, str) and audio:
                try:
                    total += len(base64.b64decode(audio, validate=True))
                except (binascii.Error, ValueError):
                    return None
        return total

    def usage(self, reply: str, output_audio_ms: float, output_id: str | None) -> dict[str, Any]:
        """Token counts for a response; what the previous one read counts as cached."""
        usage, self._previous_input = response_usage(
            self.session,
            self.items,
            self._audio_ms,
            self._previous_input,
            reply=reply,
            output_audio_ms=output_audio_ms,
            output_id=output_id,
        )
        return usage

    async def close(self, code: int, reason: str) -> None:
        await self._close(code, reason)
