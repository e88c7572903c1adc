"""One simulated response: the events of a text, audio or function-call answer.

The answer's words come from `RealtimeBehaviour.reply`; audio is silence in
frames of `frame_ms`, each followed by one word of its transcript. The first
delta waits until `ttfa_s` after the response's start. A function call is made
when a function tool is configured and the last user text names it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from router.sim.realtime_records import ResponseRecord

if TYPE_CHECKING:
    from router.sim.realtime_session import SimRealtimeSession


class ResponseDied(Exception):
    """The fault closed the session mid-response."""


class SimResponse:
    def __init__(
        self,
        session: SimRealtimeSession,
        record: ResponseRecord,
        params: Mapping[str, Any],
        started: float,
    ) -> None:
        self.s = session
        self.rec = record
        self.params = params
        self.started = started
        self.behaviour = session.behaviour()
        modalities = params.get("output_modalities") or session.session.get("output_modalities")
        self.audio = list(modalities or ["audio"]) == ["audio"]
        self.in_conversation = params.get("conversation", "auto") != "none"
        self.deltas = 0
        self.item: dict[str, Any] | None = None
        self.words: list[str] = []
        self.sent_words = 0
        self.audio_ms = 0.0

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        session = self.s.session
        return {
            "object": "realtime.response",
            "id": self.rec.id,
            "status": status,
            "status_details": None,
            "output": [self.item] if self.item is not None and status != "in_progress" else [],
            "conversation_id": "conv_sim" if self.in_conversation else None,
            "output_modalities": ["audio"] if self.audio else ["text"],
            "max_output_tokens": session.get("max_output_tokens", "inf"),
            "audio": {"output": session.get("audio", {}).get("output")},
            "usage": None,
            "metadata": self.params.get("metadata"),
            **extra,
        }

    async def run(self) -> None:
        s, b = self.s, self.behaviour
        try:
            if b.fault.kind == "hang_before_response":
                await asyncio.get_running_loop().create_future()
            await s.emit("response.created", response=self._response("in_progress"))
            self.rec.created_at = s._clock()
            await s.emit(
                "rate_limits.updated",
                rate_limits=[
                    {
                        "name": "requests",
                        "limit": b.requests_limit,
                        "remaining": b.requests_limit - 1,
                        "reset_seconds": 0.06,
                    },
                    {
                        "name": "tokens",
                        "limit": b.tokens_limit,
                        "remaining": b.tokens_limit // 2,
                        "reset_seconds": 1.5,
                    },
                ],
            )
            if b.fault.kind == "stall_before_audio":
                await asyncio.get_running_loop().create_future()
            tool = self._tool()
            if tool is not None:
                await self._function_call(tool)
            else:
                await self._message()
            await self._finish("completed")
        except asyncio.CancelledError:
            reason = s.cancel_reason
            if reason is None:
                raise  # the session is closing
            await self._finish("cancelled", {"type": "cancelled", "reason": reason})
        except _Failed:
            failed = {"type": "failed", "error": {"type": "server_error", "code": "server_error"}}
            await self._finish("failed", failed)
        except ResponseDied:
            return
        except ConnectionResetError:  # the socket closed under it: the session is ending
            return

    # -- the output item ----------------------------------------------------------------

    async def _add_item(self, item: dict[str, Any]) -> None:
        s = self.s
        self.item = item
        previous = s.items[-1]["id"] if s.items and self.in_conversation else None
        await s.emit(
            "response.output_item.added", response_id=self.rec.id, output_index=0, item=item
        )
        if self.in_conversation:
            s.items.append(item)
            await s.emit("conversation.item.added", previous_item_id=previous, item=item)

    async def _wait_first(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.started + self.behaviour.ttfa_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _delta(self, type_: str, **fields: Any) -> None:
        """One delta, with the mid-response faults and the pacing between audio frames."""
        fault = self.behaviour.fault
        if self.deltas == fault.after_deltas and fault.kind in (
            "die_mid_response",
            "error_mid_response",
        ):
            if fault.kind == "die_mid_response":
                self.rec.status = "died"
                await self.s.close(fault.code, fault.message)
                raise ResponseDied
            await self.s.error(fault.message, code="server_error", type_="server_error")
            raise _Failed
        if self.deltas == fault.after_deltas and fault.kind == "stall_mid_response":
            await asyncio.get_running_loop().create_future()  # until cancelled
        if self.deltas == 0:
            self.rec.first_delta_at = self.s._clock()
        self.deltas += 1
        await self.s.emit(type_, response_id=self.rec.id, output_index=0, **fields)

    async def _message(self) -> None:
        s, b = self.s, self.behaviour
        item_id = s.new_id("item")
        part_type = "audio" if self.audio else "text"
        await self._add_item(
            {
                "id": item_id,
                "type": "message",
                "object": "realtime.item",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
        )
        await s.emit(
            "response.content_part.added",
            response_id=self.rec.id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            part={"type": part_type, "transcript": ""}
            if self.audio
            else {"type": "text", "text": ""},
        )
        self.words = b.reply.format(last=s.last_user_text() or "nothing").split()
        await self._wait_first()
        if self.audio:
            await self._audio(item_id)
        else:
            await self._text(item_id)

    def _word(self, i: int) -> str:
        return self.words[i] + (" " if i < len(self.words) - 1 else "")

    async def _text(self, item_id: str) -> None:
        for i in range(len(self.words)):
            await self._delta(
                "response.output_text.delta", item_id=item_id, content_index=0, delta=self._word(i)
            )
            self.sent_words = i + 1
            if self.behaviour.frame_interval_s:
                await asyncio.sleep(self.behaviour.frame_interval_s)
        text = "".join(self._word(i) for i in range(len(self.words)))
        await self.s.emit(
            "response.output_text.done",
            response_id=self.rec.id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            text=text,
        )

    async def _audio(self, item_id: str) -> None:
        b, s = self.behaviour, self.s
        frame = base64.b64encode(bytes(b.frame_ms * 48)).decode()  # silence
        frames = max(1, b.response_audio_ms // b.frame_ms)
        loop = asyncio.get_running_loop()
        due = loop.time()
        for i in range(max(frames, len(self.words))):
            if i < frames:
                await self._delta(
                    "response.output_audio.delta", item_id=item_id, content_index=0, delta=frame
                )
                self.audio_ms += b.frame_ms
                s.set_audio_ms(item_id, self.audio_ms)
            if i < len(self.words):
                await self._delta(
                    "response.output_audio_transcript.delta",
                    item_id=item_id,
                    content_index=0,
                    delta=self._word(i),
                )
                self.sent_words = i + 1
            if b.frame_interval_s and i < frames - 1:
                due += b.frame_interval_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
        await s.emit(
            "response.output_audio.done",
            response_id=self.rec.id,
            item_id=item_id,
            output_index=0,
            content_index=0,
        )
        transcript = "".join(self._word(i) for i in range(len(self.words)))
        await s.emit(
            "response.output_audio_transcript.done",
            response_id=self.rec.id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            transcript=transcript,
        )

    def _content(self) -> list[dict[str, Any]]:
        said = "".join(self._word(i) for i in range(self.sent_words))
        if self.audio:
            return [{"type": "output_audio", "transcript": said}]
        return [{"type": "output_text", "text": said}]

    # -- function calls -----------------------------------------------------------------

    def _tool(self) -> str | None:
        tools = self.params.get("tools") or self.s.session.get("tools") or []
        last = self.s.last_user_text().lower()
        for tool in tools:
            name = tool.get("name") if isinstance(tool, Mapping) else None
            if tool.get("type") == "function" and isinstance(name, str) and name.lower() in last:
                return name
        return None

    async def _function_call(self, name: str) -> None:
        s = self.s
        item_id, call_id = s.new_id("item"), s.new_id("call")
        arguments = json.dumps({"text": s.last_user_text()})
        await self._add_item(
            {
                "id": item_id,
                "type": "function_call",
                "object": "realtime.item",
                "status": "in_progress",
                "call_id": call_id,
                "name": name,
                "arguments": "",
            }
        )
        await self._wait_first()
        half = len(arguments) // 2
        for chunk in (arguments[:half], arguments[half:]):
            await self._delta(
                "response.function_call_arguments.delta",
                item_id=item_id,
                call_id=call_id,
                delta=chunk,
            )
        await s.emit(
            "response.function_call_arguments.done",
            response_id=self.rec.id,
            item_id=item_id,
            output_index=0,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )
        assert self.item is not None
        self.item["arguments"] = arguments
        self.words = arguments.split()

    # -- the end ------------------------------------------------------------------------

    async def _finish(self, status: str, details: dict[str, Any] | None = None) -> None:
        s = self.s
        if self.rec.status is not None:
            return
        item = self.item
        if item is not None:
            item["status"] = "completed" if status == "completed" else "incomplete"
            if item["type"] == "message":
                item["content"] = self._content()
            await s.emit(
                "response.output_item.done", response_id=self.rec.id, output_index=0, item=item
            )
            if self.in_conversation:
                await s.emit("conversation.item.done", previous_item_id=None, item=item)
        said = "".join(self._word(i) for i in range(self.sent_words))
        usage = s.usage(said, self.audio_ms, item["id"] if item is not None else None)
        self.rec.status, self.rec.usage, self.rec.done_at = status, usage, s._clock()
        await s.emit(
            "response.done",
            response=self._response(status, status_details=details, usage=usage),
        )


class _Failed(Exception):
    """`error_mid_response`: end the response `failed`."""
