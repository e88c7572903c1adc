"""One response of a cascade session, in the Realtime protocol's order.

    response.created
    [per output item]  response.output_item.added, conversation.item.added,
                       response.content_part.added (messages)
        audio answers: response.output_audio_transcript.delta (as the LLM streams)
                       and response.output_audio.delta (as the TTS speaks), then
                       response.output_audio.done, response.output_audio_transcript.done
        text answers:  response.output_text.delta ..., response.output_text.done
        tool calls:    response.function_call_arguments.delta ..., .done
                       response.content_part.done (messages), response.output_item.done,
                       conversation.item.done
    response.done      status completed | cancelled | failed, usage and cost

An out-of-band response (`conversation: "none"`) sends no `conversation.item.*`
events: its items are in its output only, and `conversation_id` is null.

The LLM turn and the spoken answer run in one task group: cancelling the task
that runs `Response.run` (barge-in, `response.cancel`) cancels the LLM request and
every TTS request at once, then the response ends `cancelled`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from router.errors import FirstTokenError
from router.turn.sink import Sink
from router.voice.account import Cost, account
from router.voice.clauses import ClauseSplitter
from router.voice.clock import VoiceClock
from router.voice.codec import AudioFormat
from router.voice.llm import ChatSink, ToolCall
from router.voice.speak import AudioDelta, PcmSource, SpeechEvent, SpokenAnswer
from router.voice.speak import TextDelta as SpokenText
from router.voice.truncate import SpokenPiece

log = logging.getLogger("firsttoken.voice")

Status = Literal["completed", "cancelled", "failed", "incomplete"]
Emit = Callable[..., Awaitable[None]]


class Stages(Protocol):
    """What a response needs from the router: an LLM turn and speech."""

    async def chat(self, body: dict[str, Any], sink: Sink) -> tuple[str | None, float]:
        """Run the turn into `sink`; returns the target that answered and its cost."""
        ...

    async def speak(self, text: str, voice: str, speed: float | None = None) -> PcmSource: ...

    def speech_cost(self, source: PcmSource, text: str) -> tuple[str, float, float]:
        """The target that spoke `text`, its cost and the seconds of audio."""
        ...


@dataclass(slots=True)
class Output:
    """One output item of the response, as the conversation keeps it."""

    item: dict[str, Any]
    text: str = ""
    spoken: list[SpokenPiece] = field(default_factory=list)
    audio_bytes: int = 0


class Response:
    def __init__(
        self,
        *,
        response_id: str,
        new_id: Callable[[str], str],
        emit: Emit,
        stages: Stages,
        body: dict[str, Any],
        audio: bool,
        voice: str,
        out_format: AudioFormat,
        speed: float | None = None,
        prefetch: int,
        splitter: ClauseSplitter,
        clock: VoiceClock,
        session_echo: Mapping[str, Any],
        add_item: Callable[[dict[str, Any]], str | None],
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = response_id
        #: the conversation its items join; None: out of band (`conversation: none`),
        #: its items are the response's only, never the session's
        self.conversation_id = conversation_id
        self._metadata = metadata
        self._new_id = new_id
        self._emit = emit
        self._stages = stages
        self._body = body
        self._audio = audio
        #: the client's output format: PCM at 24 kHz, or G.711 at 8 kHz
        self._format = out_format
        self._voice = voice
        self._speed = speed
        self._prefetch = prefetch
        self._splitter = splitter
        self.clock = clock
        self._echo = session_echo
        self._add_item = add_item
        self.outputs: list[Output] = []
        self._message: Output | None = None
        self._tools: dict[int, Output] = {}
        self.usage: dict[str, Any] = {}
        self.cost = Cost()
        self._sources: list[tuple[PcmSource, str]] = []
        self._answer_audio: SpokenAnswer | None = None
        self.status: Status | None = None
        #: why it failed (a stage's error), for the cascade to judge
        self.failure: FirstTokenError | None = None
        #: why it was cancelled: turn_detected or client_cancelled
        self.cancel_reason: str | None = None
        #: when a cancelled response had closed its LLM and TTS requests
        self.upstreams_closed_at: float | None = None

    @property
    def audio_ms(self) -> float:
        """Milliseconds of audio it sent the client."""
        return sum(self._format.duration_ms(o.audio_bytes) for o in self.outputs)

    # -- the whole response --------------------------------------------------------------

    async def run(self) -> None:
        await self._emit("response.created", response=self._object("in_progress"))
        details: dict[str, Any] | None = None
        try:
            await self._answer()
            status: Status = "completed"
        except anyio.get_cancelled_exc_class():
            self.upstreams_closed_at = self.clock.now()  # the stages' task group is done
            with anyio.CancelScope(shield=True):
                reason = self.cancel_reason or "client_cancelled"
                await self._finish("cancelled", {"type": "cancelled", "reason": reason})
            raise
        except FirstTokenError as exc:
            log.info("a cascade response failed: %s", exc.message)
            self.failure = exc
            status = "failed"
            details = {
                "type": "failed",
                "error": {"type": exc.type, "code": exc.code, "message": exc.message},
            }
        await self._finish(status, details)

    async def _answer(self) -> None:
        send, receive = anyio.create_memory_object_stream[str](64)
        sink = ChatSink(send, self._tool)
        self.clock.mark("llm_sent")
        with receive, send:
            try:
                await self._both(sink, receive)
            except BaseExceptionGroup as group:
                raise _first_failure(group) from group
        self.usage = sink.usage

    async def _both(self, sink: ChatSink, receive: MemoryObjectReceiveStream[str]) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._chat, sink)
            if self._audio:
                spoken = self._answer_audio = SpokenAnswer(
                    self._speak,
                    self._spoken,
                    out_rate=self._format.rate,
                    prefetch=self._prefetch,
                    splitter=self._splitter,
                    clock=self.clock,
                )
                await spoken.run(receive)
            else:
                async for delta in receive:
                    await self._text(delta)

    async def _chat(self, sink: ChatSink) -> None:
        with sink.text:
            target, cost = await self._stages.chat(self._body, sink)
        if target is not None:
            self.cost.targets["llm"] = target
        self.cost.llm_usd += cost

    async def _speak(self, text: str) -> PcmSource:
        source = await self._stages.speak(text, self._voice, self._speed)
        self._sources.append((source, text))
        return source

    def _account_speech(self) -> None:
        c = self.cost
        for source, text in self._sources:
            target, usd, audio_s = self._stages.speech_cost(source, text)
            c.targets["tts"] = target
            c.tts_usd += usd
            c.tts_audio_s += audio_s
            c.tts_chars += len(text)
        self._sources.clear()

    # -- messages --------------------------------------------------------------------------

    async def _open_message(self) -> Output:
        if self._message is not None:
            return self._message
        item = {
            "id": self._new_id("item"),
            "type": "message",
            "object": "realtime.item",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        out = self._message = await self._open(item)
        if self._answer_audio is not None:
            out.spoken = self._answer_audio.spoken  # what truncation needs, cut pieces too
        part = {"type": "output_audio", "transcript": ""} if self._audio else {"type": "text"}
        await self._emit(
            "response.content_part.added",
            response_id=self.id,
            item_id=item["id"],
            output_index=self.outputs.index(out),
            content_index=0,
            part=part,
        )
        return out

    async def _text(self, delta: str) -> None:
        self.clock.mark("llm_first_token")
        out = await self._open_message()
        out.text += delta
        await self._delta("response.output_text.delta", out, delta=delta)
        self.clock.mark("first_text_sent")

    async def _spoken(self, event: SpeechEvent) -> None:
        out = await self._open_message()
        if isinstance(event, SpokenText):
            out.text += event.text
            await self._delta("response.output_audio_transcript.delta", out, delta=event.text)
        elif isinstance(event, AudioDelta):
            audio = self._format.encode(event.pcm16)
            out.audio_bytes += len(audio)
            await self._delta(
                "response.output_audio.delta", out, delta=base64.b64encode(audio).decode()
            )
            self.clock.mark("first_audio_sent")

    async def _delta(self, kind: str, out: Output, **fields: Any) -> None:
        await self._emit(
            kind,
            response_id=self.id,
            item_id=out.item["id"],
            output_index=self.outputs.index(out),
            content_index=0,
            **fields,
        )

    # -- tool calls ------------------------------------------------------------------------

    async def _tool(self, call: ToolCall, delta: str, started: bool) -> None:
        self.clock.mark("llm_first_token")
        if started:
            item = {
                "id": self._new_id("item"),
                "type": "function_call",
                "object": "realtime.item",
                "status": "in_progress",
                "call_id": call.call_id or self._new_id("call"),
                "name": call.name,
                "arguments": "",
            }
            self._tools[call.index] = await self._open(item)
            return
        out = self._tools[call.index]
        out.text += delta
        await self._emit(
            "response.function_call_arguments.delta",
            response_id=self.id,
            item_id=out.item["id"],
            output_index=self.outputs.index(out),
            call_id=out.item["call_id"],
            delta=delta,
        )

    # -- items -----------------------------------------------------------------------------

    async def _open(self, item: dict[str, Any]) -> Output:
        out = Output(item)
        self.outputs.append(out)
        joins = self.conversation_id is not None
        previous = self._add_item(item) if joins else None
        await self._emit(
            "response.output_item.added",
            response_id=self.id,
            output_index=len(self.outputs) - 1,
            item=item,
        )
        if joins:
            await self._emit("conversation.item.added", previous_item_id=previous, item=item)
        return out

    async def _close(self, out: Output, status: Status) -> None:
        item = out.item
        index = self.outputs.index(out)
        item["status"] = "completed" if status == "completed" else "incomplete"
        if item["type"] == "function_call":
            item["arguments"] = out.text
            await self._emit(
                "response.function_call_arguments.done",
                response_id=self.id,
                item_id=item["id"],
                output_index=index,
                call_id=item["call_id"],
                name=item["name"],
                arguments=out.text,
            )
        else:
            ids = {"response_id": self.id, "item_id": item["id"], "output_index": index}
            if self._audio:
                part = {"type": "output_audio", "transcript": out.text}
                await self._emit("response.output_audio.done", **ids, content_index=0)
                await self._emit(
                    "response.output_audio_transcript.done",
                    **ids,
                    content_index=0,
                    transcript=out.text,
                )
            else:
                part = {"type": "output_text", "text": out.text}
                await self._emit("response.output_text.done", **ids, content_index=0, text=out.text)
            item["content"] = [part]
            await self._emit("response.content_part.done", **ids, content_index=0, part=part)
        await self._emit(
            "response.output_item.done", response_id=self.id, output_index=index, item=item
        )
        if self.conversation_id is not None:
            await self._emit("conversation.item.done", previous_item_id=None, item=item)

    async def _finish(self, status: Status, details: dict[str, Any] | None) -> None:
        self.status = status
        self._account_speech()
        for out in self.outputs:
            await self._close(out, status)
        await self._emit(
            "response.done",
            response=self._object(status, status_details=details, usage=self._usage()),
        )

    def _usage(self) -> dict[str, Any]:
        prompt = int(self.usage.get("prompt_tokens") or 0)
        completion = int(self.usage.get("completion_tokens") or 0)
        return {
            "total_tokens": prompt + completion,
            "input_tokens": prompt,
            "output_tokens": completion,
            "input_token_details": {
                "text_tokens": prompt,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
            },
            "output_token_details": {"text_tokens": completion, "audio_tokens": 0},
        }

    def _object(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": None,
            "output": [o.item for o in self.outputs],
            "conversation_id": self.conversation_id,
            "output_modalities": ["audio"] if self._audio else ["text"],
            "max_output_tokens": "inf",
            "audio": {"output": self._echo.get("output")},
            "usage": None,
            "metadata": self._metadata,
            # FirstToken's own account of the stages: cost, targets, latency
            "firsttoken": account(self.cost, self.clock),
            **extra,
        }


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group's failure means to a response: the first of ours (an
    upstream stage that failed), else the group as it is."""
    for exc in group.exceptions:
        found = _first_failure(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(found, FirstTokenError):
            return found
    return group
