"""A cascade session driven event by event, with stages that answer from recorded streams."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from router.turn.sink import Sink
from router.upstream.realtime import Closed
from router.voice.cascade import CascadeConnection
from router.voice.settings import CascadeSettings
from router.voice.speak import PcmSource

pytestmark = pytest.mark.anyio


def _sse(*chunks: dict[str, Any]) -> bytes:
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    return b"".join(frames) + b"data: [DONE]\n\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


#: OpenAI's stream of a tool call, as the chat completions API sends it
TOOL_CALL = _sse(
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _chunk({}, "tool_calls"),
    {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9}},
)
ANSWER = _sse(_chunk({"role": "assistant", "content": ""}), _chunk({"content": "It is sunny."}))


class FakeStages:
    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, body: dict[str, Any], sink: Sink) -> tuple[str | None, float]:
        self.bodies.append(body)
        await sink.start(200, [])
        await sink.write(self.answers.pop(0))
        await sink.finish()
        return "llm-a", 0.001

    async def speak(self, text: str, voice: str, speed: float | None = None) -> PcmSource:
        raise AssertionError("a text session never speaks")

    def speech_cost(self, source: PcmSource, text: str) -> tuple[str, float, float]:
        raise AssertionError("a text session never speaks")

    async def transcribe(
        self, audio: bytes, fields: Mapping[str, str] | None = None
    ) -> tuple[str, str, float, float | None]:
        return "hello", "stt-a", 0.0, 1.0


async def _until(conn: CascadeConnection, kind: str) -> list[dict[str, Any]]:
    seen = []
    with anyio.fail_after(5):
        while True:
            frame = await conn.receive()
            assert not isinstance(frame, Closed | bytes)
            seen.append(json.loads(frame))
            if seen[-1]["type"] == kind:
                return seen


async def _send(conn: CascadeConnection, **event: Any) -> None:
    await conn.send(json.dumps(event))


async def test_a_tool_call_and_its_output_continue_the_turn() -> None:
    stages = FakeStages(TOOL_CALL, ANSWER)
    conn = CascadeConnection(
        target="voice",
        settings=CascadeSettings(stt="s", llm="chat", tts="t"),
        stages=stages,
        clock=time.monotonic,
        session_id="sess_1",
    )
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    await _send(
        conn,
        type="session.update",
        session={"type": "realtime", "output_modalities": ["text"], "tools": tools},
    )
    await _until(conn, "session.updated")
    user = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Paris?"}],
    }
    await _send(conn, type="conversation.item.create", item=user)
    await _send(conn, type="response.create")
    events = await _until(conn, "response.done")
    kinds = [e["type"] for e in events]
    assert kinds[kinds.index("response.created") :] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (done["call_id"], done["name"], done["arguments"]) == (
        "call_abc",
        "get_weather",
        '{"city":"Paris"}',
    )
    response = events[-1]["response"]
    assert response["status"] == "completed"
    assert response["usage"]["input_tokens"] == 30 and response["usage"]["output_tokens"] == 9
    assert stages.bodies[0]["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    output = {"type": "function_call_output", "call_id": "call_abc", "output": '{"sky":"clear"}'}
    await _send(conn, type="conversation.item.create", item=output)
    await _send(conn, type="response.create")
    events = await _until(conn, "response.done")
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == (
        "It is sunny."
    )
    messages = stages.bodies[1]["messages"]
    assert messages[-2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_abc",
        "content": '{"sky":"clear"}',
    }
    await conn.close()


async def test_bad_input_gets_an_error_event_and_the_session_goes_on() -> None:
    conn = CascadeConnection(
        target="voice",
        settings=CascadeSettings(stt="s", llm="chat", tts="t"),
        stages=FakeStages(),
        clock=time.monotonic,
        session_id="sess_2",
    )
    await conn.send("{not json")
    await _send(conn, type="no.such.event")
    await _send(conn, type="input_audio_buffer.append", audio="***")
    await _send(conn, type="input_audio_buffer.commit")
    await _send(conn, type="response.cancel")
    await _send(conn, type="conversation.item.truncate", item_id="nope", audio_end_ms=10)
    codes = []
    for _ in range(6):
        frame = await conn.receive()
        assert isinstance(frame, str)
        event = json.loads(frame)
        assert event["type"] == "error"
        codes.append(event["error"]["code"])
    assert codes == [
        "invalid_json",
        "invalid_event",
        "invalid_value",
        "input_audio_buffer_commit_empty",
        "response_cancel_not_active",
        "invalid_value",
    ]
    await _send(conn, type="input_audio_buffer.clear")
    assert json.loads(str(await conn.receive()))["type"] == "input_audio_buffer.cleared"
    # a turn detection OpenAI would refuse is refused whole; the session stays as it was
    for td in ({"type": "magic_vad"}, {"type": "semantic_vad", "eagerness": "extreme"}, "on"):
        update = {"type": "realtime", "audio": {"input": {"turn_detection": td}}}
        await _send(conn, type="session.update", session=update)
        refused = json.loads(str(await conn.receive()))
        assert refused["type"] == "error" and refused["error"]["code"] == "invalid_value"
    assert conn.buffer.vad is not None and conn.buffer.vad.eagerness is None  # server VAD
    semantic = {"type": "semantic_vad", "eagerness": "auto"}
    await _send(
        conn, type="session.update", session={"audio": {"input": {"turn_detection": semantic}}}
    )
    assert json.loads(str(await conn.receive()))["type"] == "session.updated"
    assert conn.buffer.vad is not None and conn.buffer.vad.eagerness == "medium"
    await conn.close(1000)
    assert await conn.receive() == Closed(1000, "")
