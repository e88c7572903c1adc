"""The LLM stage of a cascade: one chat turn through the router's own routing.

The turn runs as any client's would (`Router.handle`: policy, commit point,
fallback, hedging, affinity, metrics) and writes its SSE answer into a
`ChatSink`, which reads the deltas back out: text goes to a memory stream (the
spoken answer reads it while the LLM streams), tool-call deltas to a callback,
usage to `usage`. An error event after the commit point raises `LlmFailed`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from anyio.streams.memory import MemoryObjectSendStream

from router.errors import UpstreamProtocolError
from router.turn.sink import Header


class LlmFailed(UpstreamProtocolError):
    """The chat turn failed after its commit point (an error event in its stream)."""


@dataclass(slots=True)
class ToolCall:
    index: int
    call_id: str = ""
    name: str = ""
    arguments: str = ""


#: a tool call's first delta (`started=True`, with its id and name) or an arguments delta
OnTool = Callable[[ToolCall, str, bool], Awaitable[None]]


@dataclass(slots=True)
class ChatSink:
    text: MemoryObjectSendStream[str]
    on_tool: OnTool
    usage: dict[str, Any] = field(default_factory=dict)
    tools: dict[int, ToolCall] = field(default_factory=dict)
    status: int = 0
    _buffer: bytes = b""

    async def start(self, status: int, headers: Sequence[Header]) -> None:
        self.status = status

    async def write(self, data: bytes) -> None:
        self._buffer += data
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    await self._data(line[5:].strip())

    async def finish(self, last: bytes = b"") -> None:
        if last:
            await self.write(last)
        self.text.close()

    async def _data(self, data: bytes) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise LlmFailed("the chat turn sent a frame that is not JSON") from exc
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise LlmFailed(f"the chat turn failed: {message or 'error event'}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                await self.text.send(content)
            for call in delta.get("tool_calls") or ():
                await self._tool(call)

    async def _tool(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        index = call.get("index", 0)
        fn_raw = call.get("function")
        fn: dict[str, Any] = fn_raw if isinstance(fn_raw, dict) else {}
        known = self.tools.get(index)
        if known is None:
            known = self.tools[index] = ToolCall(index, str(call.get("id") or ""))
            known.name = str(fn.get("name") or "")
            await self.on_tool(known, "", True)
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            known.arguments += arguments
            await self.on_tool(known, arguments, False)
