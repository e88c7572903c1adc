"""A cascade served as a Realtime session: the official openai SDK's realtime client ->
the router under uvicorn -> STT, LLM and TTS simulators, over loopback."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import openai
import pytest
from openai import AsyncOpenAI
from openai.resources.realtime.realtime import AsyncRealtimeConnection

from router.sim.behaviour import Behaviour, Fault
from router.sim.engine import EngineParams
from router.sim.openai_server import OpenAISim
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour, RealtimeFault
from router.sim.stt import SttSim
from router.sim.tts import TtsParams, TtsSim
from router.sim.vllm import VllmSim
from router.voice.codec import AudioFormat, wav
from router.voice.resample import Resampler
from tests.e2e.harness import RunningRouter, start_router, stop_router
from tests.sim.conftest import wait_for
from tests.voice.audio import decoded, frames, silence, speech_24k

pytestmark = pytest.mark.anyio

TRANSCRIPT = "book a table for two"
USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
#: what a client asking for its callers' words sets (`audio.input.transcription`); the
#: cascade transcribes every turn, and tells the client only when asked, as OpenAI does
HEAR: dict[str, Any] = {"transcription": {"model": "gpt-4o-transcribe"}}


@dataclass
class Stack:
    stt: list[SttSim]
    llm: OpenAISim
    tts: list[TtsSim]
    router: RunningRouter

    def sdk(self) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.router.base_url, api_key="unused", max_retries=0)

    def metric(self, name: str, **labels: str) -> float:
        value = self.router.router.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


def config(stack_stt: list[SttSim], llm: OpenAISim, tts: list[TtsSim]) -> str:
    fast = "timeouts: {connect_s: 0.5, first_token_s: 1.0, idle_s: 2.0}"
    stt_targets = "\n".join(
        f"  - {{name: stt-{i}, kind: stt, base_url: '{s.base_url}', model: whisper-1, "
        f"price: {{per_minute: 0.006}}, {fast}}}"
        for i, s in enumerate(stack_stt)
    )
    tts_targets = "\n".join(
        f"  - {{name: tts-{i}, kind: tts, base_url: '{s.base_url}', model: kokoro, "
        f"sample_rate: {s.params.sample_rate}, price: {{per_mchar: 15.0}}, {fast}}}"
        for i, s in enumerate(tts)
    )
    stt_names = ", ".join(f"stt-{i}" for i in range(len(stack_stt)))
    tts_names = ", ".join(f"tts-{i}" for i in range(len(tts)))
    return f"""
targets:
{stt_targets}
{tts_targets}
  - {{name: llm, kind: openai, base_url: '{llm.base_url}', model: sim,
      price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  - name: local-voice
    kind: cascade
    cascade:
      stt: stt
      llm: chat
      tts: tts
      voice: af_heart
      vad: {{silence_duration_ms: 300, prefix_padding_ms: 200}}
      clauses: {{first_min_chars: 8, max_chars: 30, hard_max_chars: 30}}
routes:
  - {{name: stt, targets: [{stt_names}], policy: {{type: ordered}}}}
  - {{name: tts, targets: [{tts_names}], policy: {{type: ordered}}}}
  - {{name: chat, targets: [llm]}}
  - {{name: voice, targets: [local-voice]}}
"""


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with (
        SttSim(behaviour=Behaviour(ttft_s=0.02)) as stt_a,
        SttSim(behaviour=Behaviour(ttft_s=0.02)) as stt_b,
        OpenAISim(Behaviour(ttft_s=0.03, itl_s=0.005, tokens=12)) as llm,
        TtsSim(
            TtsParams(sample_rate=22_050), behaviour=Behaviour(ttft_s=0.02, itl_s=0.01)
        ) as tts_a,
        TtsSim(
            TtsParams(sample_rate=24_000), behaviour=Behaviour(ttft_s=0.02, itl_s=0.01)
        ) as tts_b,
    ):
        stt_a.set_params(transcript=TRANSCRIPT)
        stt_b.set_params(transcript=TRANSCRIPT)
        router = await start_router(config([stt_a, stt_b], llm, [tts_a, tts_b]))
        try:
            yield Stack([stt_a, stt_b], llm, [tts_a, tts_b], router)
        finally:
            await stop_router(router)


async def speak(conn: AsyncRealtimeConnection, pcm: bytes, pace_s: float = 0.0) -> None:
    for chunk in frames(pcm):
        await conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        if pace_s:
            await asyncio.sleep(pace_s)


def decoded_seconds(data: bytes) -> float:
    """The length of encoded audio, as FFmpeg's demuxer and decoder read it."""
    samples, rate = decoded(data)
    return len(samples) / rate


async def until(conn: AsyncRealtimeConnection, kind: str, timeout_s: float = 10) -> list[Any]:
    seen = []
    async with asyncio.timeout(timeout_s):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return seen
    raise AssertionError(f"closed before {kind}")


async def hear(conn: AsyncRealtimeConnection, **audio_input: Any) -> None:
    """Ask for input transcripts (and set `audio_input` beside them)."""
    update = {"type": "realtime", "audio": {"input": {**HEAR, **audio_input}}}
    await conn.session.update(session=update)  # type: ignore[arg-type]
    await until(conn, "session.updated")


def _types(events: list[Any]) -> list[str]:
    out: list[str] = []
    for e in events:
        if not out or out[-1] != e.type:  # runs of deltas count once
            out.append(e.type)
    return out


async def test_a_spoken_turn_in_protocol_order_with_usage_and_cost(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await hear(conn)
        await speak(conn, silence(400) + speech_24k() + silence(600))
        events = await until(conn, "response.done")
    kinds = _types(events)
    assert kinds[:7] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",  # live captions read these
        "conversation.item.input_audio_transcription.completed",
    ]
    rest = kinds[7:]
    assert rest[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert rest[-6:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    heard = next(e for e in events if e.type.endswith("transcription.completed"))
    assert heard.transcript == TRANSCRIPT
    assert "firsttoken" not in (heard.model_extra or {})  # its cost is told in the answer
    audio = b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )
    transcript = "".join(
        e.delta for e in events if e.type == "response.output_audio_transcript.delta"
    )
    assert transcript == "".join(f"t{i} " for i in range(12))
    # the TTS spoke each piece at 60 ms a character at 22.05 kHz; the client hears 24 kHz
    pieces = [call.text for call in stack.tts[0].calls]
    assert len(pieces) > 1  # clause by clause, not the whole answer at once
    assert abs(len(audio) / 48 - sum(len(p) for p in pieces) * 60) <= 2 * len(pieces)
    done = events[-1].response
    assert done.status == "completed"
    assert done.usage.output_tokens == 12 and done.usage.input_tokens > 0
    cost = done.model_extra["firsttoken"]
    assert cost["stages"]["stt"]["target"] == "stt-0"
    assert cost["stages"]["tts"]["target"] == "tts-0"
    assert cost["stages"]["llm"]["target"] == "llm"
    assert cost["cost_usd"] > 0
    # the LLM saw the transcript as the user's message
    assert stack.llm.records[-1].body["messages"][-1] == {"role": "user", "content": TRANSCRIPT}
    assert stack.metric("firsttoken_voice_to_voice_seconds_count", target="local-voice") == 1
    assert (
        stack.metric("firsttoken_voice_stage_seconds_count", target="local-voice", stage="overhead")
        == 1
    )


async def test_a_transcription_session_runs_the_vad_and_stt_stages_only(stack: Stack) -> None:
    intent = {"intent": "transcription"}
    async with stack.sdk().realtime.connect(model="voice", extra_query=intent) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        update: Any = {"type": "transcription", "audio": {"input": {"noise_reduction": None}}}
        await conn.session.update(session=update)
        await speak(conn, silence(400) + speech_24k() + silence(600))
        events = await until(conn, "conversation.item.input_audio_transcription.completed")
        await conn.response.create()  # no answers in a transcription session
        refused = await until(conn, "error")
        # a session keeps its type
        await conn.session.update(session={"type": "realtime", "instructions": "x"})
        mismatch = await until(conn, "error")
    assert events[-1].transcript == TRANSCRIPT
    assert [e.delta for e in events if e.type.endswith("transcription.delta")] == [TRANSCRIPT]
    assert "response.created" not in _types(events + refused)
    assert "no responses" in refused[-1].error.message
    assert "transcription session" in mismatch[-1].error.message
    assert not stack.llm.records and not stack.tts[0].calls  # no LLM, no TTS
    labels = {"route": "voice", "target": "local-voice"}
    assert stack.metric("firsttoken_realtime_transcript_seconds_count", **labels) == 1
    # with no answer to tell it in, the speech-to-text stage's cost rides on the transcript
    told = events[-1].model_extra["firsttoken"]
    assert told["stt_target"] == "stt-0" and told["cost_usd"] > 0
    assert stack.metric("firsttoken_realtime_cost_usd_total", **labels) == told["cost_usd"]


async def test_failing_stt_and_tts_targets_fall_back_before_the_first_byte(stack: Stack) -> None:
    await stack.stt[0].set_fault(Fault("status", status=503))
    await stack.tts[0].set_fault(Fault("hang_before_first_token"))
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await speak(conn, silence(300) + speech_24k() + silence(600))
        events = await until(conn, "response.done")
    done = events[-1].response
    assert done.status == "completed"
    stages = done.model_extra["firsttoken"]["stages"]
    assert (stages["stt"]["target"], stages["tts"]["target"]) == ("stt-1", "tts-1")
    assert any(e.type == "response.output_audio.delta" for e in events)


async def test_an_utterance_with_no_words_gets_no_answer(stack: Stack) -> None:
    stack.stt[0].say("", TRANSCRIPT)  # a cough, then words
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await hear(conn)
        await speak(conn, silence(300) + speech_24k() + silence(600))
        heard = await until(conn, "conversation.item.input_audio_transcription.completed")
        await speak(conn, silence(300) + speech_24k() + silence(600))
        events = await until(conn, "response.done")
    assert heard[-1].transcript == ""
    assert not any(e.type == "response.created" for e in heard)
    assert [e.type for e in events].count("response.created") == 1
    assert events[-1].response.status == "completed"
    assert len(stack.llm.records) == 1  # the LLM was asked once, with words
    assert stack.llm.records[0].body["messages"][-1]["content"] == TRANSCRIPT


async def test_text_only_output_skips_tts(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        )
        await conn.response.create()
        events = await until(conn, "response.done")
    assert "response.output_text.delta" in _types(events)
    assert "response.output_audio.delta" not in _types(events)
    assert not stack.tts[0].calls and not stack.tts[1].calls
    assert events[-1].response.status == "completed"


async def _audio_until(conn: AsyncRealtimeConnection, ms: float) -> tuple[str, list[Any]]:
    """Read events until `ms` of answer audio arrived; returns the answer's item id."""
    seen: list[Any] = []
    got = 0.0
    async with asyncio.timeout(10):
        async for event in conn:
            seen.append(event)
            if event.type == "response.output_audio.delta":
                got += len(base64.b64decode(event.delta)) / 48
                if got >= ms:
                    item = next(e for e in seen if e.type == "response.output_item.added")
                    return str(item.item.id), seen
    raise AssertionError("closed before the audio")


async def test_barge_in_cancels_llm_and_tts_and_truncation_keeps_what_was_heard(
    stack: Stack,
) -> None:
    await stack.llm.set_behaviour(Behaviour(ttft_s=0.03, itl_s=0.03, tokens=40))
    await stack.tts[0].set_behaviour(Behaviour(ttft_s=0.02, itl_s=0.04))  # real time
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await speak(conn, silence(300) + speech_24k() + silence(600))
        item_id, first = await _audio_until(conn, 600)
        said = "".join(e.delta for e in first if e.type.endswith("transcript.delta"))
        await speak(conn, speech_24k()[:24_000])  # the caller speaks over the answer
        events = await until(conn, "response.done")
        done = events[-1].response
        assert done.status == "cancelled"
        assert done.status_details.reason == "turn_detected"
        kinds = _types(events)
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
        # every upstream stage in flight saw the cancel
        llm_call = stack.llm.records[-1]
        assert llm_call.cancelled_at is not None or llm_call.finished_at is not None
        assert any(c.cancelled_at is not None for c in stack.tts[0].calls)
        assert all(c.finished_at or c.cancelled_at for c in stack.tts[0].calls)
        assert stack.metric("firsttoken_voice_barge_in_seconds_count", target="local-voice") == 1
        # the client played 500 ms: the conversation keeps what those 500 ms said
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=500)
        await until(conn, "conversation.item.truncated")
        await stack.llm.set_behaviour(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3))
        await stack.tts[0].set_behaviour(Behaviour(ttft_s=0.01, itl_s=0.001))
        await speak(conn, silence(700))  # the barge-in utterance ends: next turn
        await until(conn, "response.done")
    messages = stack.llm.records[-1].body["messages"]
    (assistant,) = [m["content"] for m in messages if m["role"] == "assistant"]
    full = "".join(f"t{i} " for i in range(40))
    assert said and full.startswith(assistant.strip())
    # 500 ms at 60 ms a character is 8 characters: "t0 t1 t2" at most
    assert 0 < len(assistant) <= 9
    assert messages[-1] == {"role": "user", "content": TRANSCRIPT}


async def test_a_route_mixing_a_realtime_target_and_a_cascade_sends_sessions_to_each() -> None:
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        text = config([stt], llm, [tts]).replace(
            "  - {name: voice, targets: [local-voice]}",
            "  - {name: voice, targets: [gpt-realtime, local-voice], policy: {type: round_robin}}",
        )
        text = text.replace(
            "targets:\n",
            f"targets:\n  - {{name: gpt-realtime, kind: realtime, base_url: '{hosted.base_url}', "
            "model: gpt-realtime}\n",
            1,
        )
        router = await start_router(text)
        served: list[str] = []
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            for _ in range(4):
                async with client.realtime.connect(model="voice") as conn:
                    created = await conn.recv()
                    assert created.type == "session.created"
                    await conn.session.update(
                        session={"type": "realtime", "output_modalities": ["text"]}
                    )
                    await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
                    await conn.response.create()
                    events = await until(conn, "response.done")
                    assert events[-1].response.status == "completed"
                    served.append(str(getattr(created.session, "model", "")))
        finally:
            await stop_router(router)
    assert sorted(served) == ["gpt-realtime", "gpt-realtime", "local-voice", "local-voice"]
    assert len(hosted.records) == 2 and len(llm.records) == 2


async def test_speech_routes_are_served_at_openais_audio_endpoints(stack: Stack) -> None:
    await stack.stt[0].set_fault(Fault("status", status=500))
    client = stack.sdk()
    heard = await client.audio.transcriptions.create(
        model="stt", file=("a.wav", wav(speech_24k(), 24_000), "audio/wav"), language="en"
    )
    assert heard.text == TRANSCRIPT
    assert stack.stt[1].calls[-1].body["language"] == "en"  # fields passed on
    assert stack.stt[1].calls[-1].body["model"] == "whisper-1"  # the target's model
    text = "Two people, seven tonight."
    async with client.audio.speech.with_streaming_response.create(
        model="tts", input=text, voice="af_heart", response_format="pcm"
    ) as response:
        assert response.headers["x-firsttoken-target"] == "tts-0"
        audio = b"".join([chunk async for chunk in response.iter_bytes()])
    # tts-0 speaks 22.05 kHz; the client gets OpenAI's 24 kHz
    assert abs(len(audio) / 48 - len(text) * 60) <= 2
    with pytest.raises(openai.BadRequestError):
        await client.audio.speech.create(model="stt", input="hi", voice="v")
    await client.close()


async def test_translations_are_asked_at_each_targets_translations_endpoint(
    stack: Stack,
) -> None:
    """`client.audio.translations` reaches an stt route's targets at their own
    `/audio/translations`; one without that endpoint (a 404) is passed over."""
    stack.stt[0].set_params(translates=False)
    client = stack.sdk()
    upload = ("a.wav", wav(speech_24k(), 24_000), "audio/wav")
    raw = await client.audio.translations.with_raw_response.create(
        model="stt", file=upload, prompt="a restaurant"
    )
    assert raw.parse().text == TRANSCRIPT
    assert raw.headers["x-firsttoken-target"] == "stt-1"
    refused, served = stack.stt[0].calls[-1], stack.stt[1].calls[-1]
    assert (refused.path, refused.status) == ("/v1/audio/translations", 404)
    assert served.path == "/v1/audio/translations"
    assert served.body["prompt"] == "a restaurant"
    assert served.body["model"] == "whisper-1"
    verbose = await client.audio.translations.create(
        model="stt", file=upload, response_format="verbose_json"
    )
    assert (verbose.text, verbose.language) == (TRANSCRIPT, "english")
    assert stack.stt[1].calls[-1].body["response_format"] == "verbose_json"
    # a transcription on the same route still goes to the transcriptions endpoint
    await client.audio.transcriptions.create(model="stt", file=upload)
    assert stack.stt[0].calls[-1].path == "/v1/audio/transcriptions"
    with pytest.raises(openai.BadRequestError, match="not a route of stt targets"):
        await client.audio.translations.create(model="tts", file=upload)
    with pytest.raises(openai.BadRequestError, match="multipart"):
        await client.post("/audio/translations", body={"model": "stt"}, cast_to=object)
    await client.close()


async def test_speech_comes_in_every_openai_format_mp3_by_default(stack: Stack) -> None:
    """`client.audio.speech.create()` as apps call it against OpenAI: no format is mp3;
    each other format streams with its content type and decodes to the words' length."""
    client = stack.sdk()
    text = "Two people, seven tonight."
    seconds = len(text) * 0.060  # the simulator speaks 60 ms per character
    default = await client.audio.speech.create(model="tts", input=text, voice="af_heart")
    assert default.response.headers["content-type"] == "audio/mpeg"
    assert abs(decoded_seconds(default.content) - seconds) < 0.1
    formats: tuple[tuple[Literal["opus", "aac", "flac", "wav"], str], ...] = (
        ("opus", "audio/ogg"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
    )
    for response_format, content_type in formats:
        async with client.audio.speech.with_streaming_response.create(
            model="tts", input=text, voice="af_heart", response_format=response_format
        ) as response:
            assert response.headers["content-type"] == content_type
            data = b"".join([chunk async for chunk in response.iter_bytes()])
        assert abs(decoded_seconds(data) - seconds) < 0.1, response_format
    with pytest.raises(openai.BadRequestError, match="response_format"):
        await client.audio.speech.create(
            model="tts",
            input=text,
            voice="v",
            response_format="ogg",  # type: ignore[arg-type]
        )
    await client.close()


async def test_a_failing_llm_target_falls_back_before_the_first_token(stack: Stack) -> None:
    async with OpenAISim(Behaviour(fault=Fault("status", status=503))) as broken:
        text = config(stack.stt, stack.llm, stack.tts)
        text = text.replace(
            "  - name: local-voice\n",
            f"  - {{name: llm-broken, kind: openai, base_url: '{broken.base_url}', model: sim}}\n"
            "  - name: local-voice\n",
        ).replace("{name: chat, targets: [llm]}", "{name: chat, targets: [llm-broken, llm]}")
        router = await start_router(text)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                await speak(conn, silence(300) + speech_24k() + silence(600))
                events = await until(conn, "response.done")
        finally:
            await stop_router(router)
    done = events[-1].response
    assert done.status == "completed"
    assert done.model_extra["firsttoken"]["stages"]["llm"]["target"] == "llm"
    assert len(broken.records) == 1 and broken.records[0].status == 503
    assert any(e.type == "response.output_audio.delta" for e in events)


async def test_a_telephony_session_speaks_g711_both_ways(stack: Stack) -> None:
    fmt = AudioFormat("audio/pcmu")
    down = Resampler(24_000, 8_000)
    caller = fmt.encode(down.push(silence(300) + speech_24k() + silence(600)) + down.flush())
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            }
        )
        for i in range(0, len(caller), 160):  # 20 ms at 8 kHz, a byte a sample
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(caller[i : i + 160]).decode()
            )
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    audio = b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )
    pieces = [call.text for call in stack.tts[0].calls]
    # 60 ms a character at 8 kHz, a byte a sample
    assert abs(len(audio) / 8 - sum(len(p) for p in pieces) * 60) <= 2 * len(pieces)
    assert stack.stt[0].calls[-1].audio_ms > 2000  # the caller was heard, decoded, at 8 kHz


def hosted_and_cascade(hosted: RealtimeSim, stt: SttSim, llm: OpenAISim, tts: TtsSim) -> str:
    text = config([stt], llm, [tts]).replace(
        "  - {name: voice, targets: [local-voice]}",
        "  - {name: voice, targets: [gpt-realtime, local-voice], policy: {type: ordered}}",
    )
    return text.replace(
        "targets:\n",
        f"targets:\n  - {{name: gpt-realtime, kind: realtime, base_url: '{hosted.base_url}', "
        "model: gpt-realtime}\n",
        1,
    )


def cascade_first(hosted: RealtimeSim, stt: SttSim, llm: OpenAISim, tts: TtsSim) -> str:
    """`hosted_and_cascade`, the cascade listed first."""
    return hosted_and_cascade(hosted, stt, llm, tts).replace(
        "targets: [gpt-realtime, local-voice]", "targets: [local-voice, gpt-realtime]"
    )


async def ask(conn: AsyncRealtimeConnection, text: str) -> list[Any]:
    item = {**USER, "content": [{"type": "input_text", "text": text}]}
    await conn.conversation.item.create(item=item)  # type: ignore[arg-type]
    await conn.response.create()
    return await until(conn, "response.done")


async def test_a_session_moves_between_a_hosted_target_and_a_cascade() -> None:
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        router = await start_router(hosted_and_cascade(hosted, stt, llm, tts))
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "output_modalities": ["text"],
                        "instructions": "be brief",
                    }
                )
                first = await ask(conn, "table for two")  # on the hosted target
                await hosted.drop(1011)  # the hosted session dies: on to the cascade
                await asyncio.sleep(0.05)
                second = await ask(conn, "at seven")
                # the cascade's target goes bad: back to the hosted one, whose sim is well
                router.router.runtime.signals["local-voice"].breaker.open_for(60)
                await asyncio.sleep(0.7)  # the supervisor looks every 0.5 s
                third = await ask(conn, "thanks")
        finally:
            await stop_router(router)
    assert [e[-1].response.status for e in (first, second, third)] == ["completed"] * 3
    assert "error" not in [e.type for e in first + second + third]
    # the cascade's LLM turn carried the hosted part of the conversation
    (turn,) = llm.records
    messages = turn.body["messages"]
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert [m["content"] for m in messages[1:]] == [
        "table for two",
        "You said: table for two",
        "at seven",
    ]
    # and the hosted target got the cascade's part back
    back = hosted.records[-1]
    assert len(hosted.records) == 2 and back.session["instructions"] == "be brief"
    texts = back.item_texts()
    assert texts[:3] == [
        ("user", "table for two"),
        ("assistant", "You said: table for two"),
        ("user", "at seven"),
    ]
    assert texts[3][0] == "assistant" and texts[4] == ("user", "thanks")
    migrations = "firsttoken_realtime_migrations_total"
    registry = router.router.metrics.registry
    assert (
        registry.get_sample_value(migrations, {"route": "voice", "reason": "upstream_closed"}) == 1
    )
    assert registry.get_sample_value(migrations, {"route": "voice", "reason": "breaker_open"}) == 1


async def test_a_client_that_did_not_ask_for_transcripts_gets_none_and_its_words_still_move() -> (
    None
):
    # OpenAI sends input transcripts only when `audio.input.transcription` is set. The
    # cascade transcribes every turn to answer it; a client that did not ask is told
    # nothing of it, and the words still reach the LLM and, when the session moves to
    # the hosted target, the conversation it is given.
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        stt.say(TRANSCRIPT)
        router = await start_router(cascade_first(hosted, stt, llm, tts))
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                assert (await conn.recv()).type == "session.created"
                await speak(conn, silence(400) + speech_24k() + silence(600))
                spoken = await until(conn, "response.done")  # answered by the cascade
                router.router.runtime.signals["local-voice"].breaker.open_for(60)
                await asyncio.sleep(0.7)  # the supervisor looks every 0.5 s: on to hosted
                typed = await ask(conn, "thanks")
        finally:
            await stop_router(router)
    assert spoken[-1].response.status == typed[-1].response.status == "completed"
    assert not [e.type for e in spoken + typed if "input_audio_transcription" in e.type]
    assert llm.records[0].body["messages"][-1] == {"role": "user", "content": TRANSCRIPT}
    assert hosted.records[-1].item_texts()[0] == ("user", TRANSCRIPT)


async def test_speech_targets_use_the_chat_targets_client_and_key_settings() -> None:
    async with SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt, TtsSim() as tts:
        stt.set_params(transcript=TRANSCRIPT)
        azure = "auth_header: api-key, headers_env: {x-ms-client-request-id: REQUEST_ID}"
        text = f"""
targets:
  - {{name: stt-az, kind: stt, base_url: '{stt.base_url}', model: w, api_key_env: AZ, {azure}}}
  - {{name: tts-or, kind: tts, base_url: '{tts.base_url}', model: k, api_key_env: AZ,
      headers: {{X-Title: my-app}}}}
routes:
  - {{name: stt, targets: [stt-az]}}
  - {{name: tts, targets: [tts-or]}}
"""
        environ = {"AZ": " sk-az\n", "REQUEST_ID": "req-7"}
        router = await start_router(text, environ=environ)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            for _ in range(2):
                heard = await client.audio.transcriptions.create(
                    model="stt", file=("a.wav", wav(speech_24k(), 24_000), "audio/wav")
                )
                assert heard.text == TRANSCRIPT
            await client.audio.speech.create(model="tts", input="Hi.", voice="v")
            await client.close()
            registry = router.router.metrics.registry
            counted = {
                kind: registry.get_sample_value(
                    "firsttoken_upstream_connections_total", {"target": "stt-az", "kind": kind}
                )
                for kind in ("new", "reused")
            }
        finally:
            await stop_router(router)
    heard_headers = stt.calls[-1].headers
    assert heard_headers["api-key"] == "sk-az" and "authorization" not in heard_headers
    assert heard_headers["x-ms-client-request-id"] == "req-7"
    assert tts.calls[-1].headers["authorization"] == "Bearer sk-az"
    assert tts.calls[-1].headers["x-title"] == "my-app"
    # one keep-alive pool, counted as chat targets' are
    assert counted == {"new": 1.0, "reused": 1.0}


async def test_speech_routes_hedge_a_late_target() -> None:
    slow, fast = Behaviour(ttft_s=3.0, itl_s=0.01), Behaviour(ttft_s=0.01, itl_s=0.01)
    async with (
        SttSim(behaviour=slow) as stt_slow,
        SttSim(behaviour=fast) as stt_fast,
        TtsSim(behaviour=slow) as tts_slow,
        TtsSim(behaviour=fast) as tts_fast,
    ):
        for sim in (stt_slow, stt_fast):
            sim.set_params(transcript=TRANSCRIPT)
        late = "timeouts: {first_token_s: 10}"
        hedged = "policy: {type: ordered}, hedge: {after_ms: 100}"
        text = f"""
targets:
  - {{name: stt-slow, kind: stt, base_url: '{stt_slow.base_url}', model: w, {late}}}
  - {{name: stt-fast, kind: stt, base_url: '{stt_fast.base_url}', model: w, {late}}}
  - {{name: tts-slow, kind: tts, base_url: '{tts_slow.base_url}', model: k, {late}}}
  - {{name: tts-fast, kind: tts, base_url: '{tts_fast.base_url}', model: k, {late}}}
routes:
  - {{name: stt, targets: [stt-slow, stt-fast], {hedged}}}
  - {{name: tts, targets: [tts-slow, tts-fast], {hedged}}}
"""
        router = await start_router(text)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            started = asyncio.get_running_loop().time()
            heard = await client.audio.transcriptions.with_raw_response.create(
                model="stt", file=("a.wav", wav(speech_24k(), 24_000), "audio/wav")
            )
            async with client.audio.speech.with_streaming_response.create(
                model="tts", input="Two people, seven tonight.", voice="v", response_format="pcm"
            ) as spoken:
                audio = b"".join([chunk async for chunk in spoken.iter_bytes()])
            took = asyncio.get_running_loop().time() - started
            await client.close()
            await asyncio.sleep(0.1)
        finally:
            await stop_router(router)
    assert heard.parse().text == TRANSCRIPT and heard.headers["x-firsttoken-target"] == "stt-fast"
    assert spoken.headers["x-firsttoken-target"] == "tts-fast" and audio
    assert took < 2.5  # neither waited for its slow target's 3 s
    # both slow targets were asked first, and saw the cancel once the hedge won
    for slow_sim in (stt_slow, tts_slow):
        assert len(slow_sim.calls) == 1 and slow_sim.calls[0].cancelled_at is not None


async def test_a_cascade_whose_stages_all_fail_hands_the_session_over() -> None:
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(fault=Fault("status", status=503))) as broken,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        text = hosted_and_cascade(hosted, stt, broken, tts).replace(
            "targets: [gpt-realtime, local-voice]", "targets: [local-voice, gpt-realtime]"
        )
        router = await start_router(text)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                created = await conn.recv()
                assert created.type == "session.created"
                await conn.session.update(
                    session={"type": "realtime", "output_modalities": ["text"]}
                )
                first = await ask(conn, "table for two")  # the cascade's only LLM fails
                await asyncio.sleep(0.1)
                second = await ask(conn, "at seven")  # answered by the hosted target
        finally:
            await stop_router(router)
    assert getattr(created.session, "model", "") == "local-voice"
    assert first[-1].response.status == "failed"
    assert second[-1].response.status == "completed"
    assert "error" not in [e.type for e in first + second]  # the hand-over is the router's
    assert hosted.records[-1].item_texts()[0] == ("user", "table for two")
    migrations = router.router.metrics.registry.get_sample_value(
        "firsttoken_realtime_migrations_total", {"route": "voice", "reason": "server_error"}
    )
    assert migrations == 1


async def test_a_failing_speech_to_text_stage_counts_once_against_the_cascade() -> None:
    # The cascade's STT stage fails (503): the client sees the transcription fail
    # (`server_error`), then the session moves to the hosted target. That is one
    # incident of the cascade's: its breaker counts one failure, not one per event.
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(fault=Fault("status", status=503))) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        router = await start_router(cascade_first(hosted, stt, llm, tts))
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                assert (await conn.recv()).type == "session.created"
                await hear(conn)
                await speak(conn, silence(400) + speech_24k() + silence(600))
                heard = await until(conn, "conversation.item.input_audio_transcription.failed")
                await asyncio.sleep(0.2)
                answered = await ask(conn, "table for two")
        finally:
            await stop_router(router)
    assert heard[-1].error.type == "server_error"
    assert answered[-1].response.status == "completed"
    registry = router.router.metrics.registry
    migrated = registry.get_sample_value(
        "firsttoken_realtime_migrations_total", {"route": "voice", "reason": "server_error"}
    )
    assert migrated == 1 and hosted.records
    cascade = router.router.runtime.realtime.targets["local-voice"]
    assert cascade.signals.breaker.consecutive_failures == 1


ASIDE = {"conversation": "none", "output_modalities": ["text"], "metadata": {"topic": "intent"}}


async def test_an_out_of_band_response_runs_on_its_own_context_and_stays_out(
    stack: Stack,
) -> None:
    # `conversation: none` with `input`: the LLM sees that context (a referenced item,
    # a new one), the answer's item joins no conversation (no conversation.item.*
    # events), and the next turn's context does not carry it.
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        first = await ask(conn, "table for two")
        said = next(e.item for e in first if e.type == "conversation.item.added")
        question = {**USER, "content": [{"type": "input_text", "text": "the intent?"}]}
        given = [{"type": "item_reference", "id": said.id}, question]
        await conn.response.create(response={**ASIDE, "input": given})  # type: ignore[arg-type]
        aside = await until(conn, "response.done")
        aside_llm = stack.llm.records[-1].body["messages"]
        await ask(conn, "at seven")
        next_llm = stack.llm.records[-1].body["messages"]
        bad = {**ASIDE, "input": [{"type": "item_reference", "id": "item_nope"}]}
        await conn.response.create(response=bad)  # type: ignore[arg-type]
        refused = await until(conn, "error")
    created = next(e.response for e in aside if e.type == "response.created")
    done = aside[-1].response
    assert created.conversation_id is None and done.status == "completed"
    assert done.metadata == {"topic": "intent"} and len(done.output or []) == 1
    assert not [e for e in aside if e.type.startswith("conversation.item.")]
    assert next(e for e in first if e.type == "response.created").response.conversation_id
    assert [m["content"] for m in aside_llm if m["role"] == "user"] == [
        "table for two",
        "the intent?",
    ]
    assert [m["role"] for m in next_llm if m["role"] != "system"] == [
        "user",
        "assistant",
        "user",
    ]  # table for two, its answer, at seven: not the aside
    assert refused[-1].error.code == "invalid_value" and "item_nope" in refused[-1].error.message


async def test_an_out_of_band_response_runs_beside_the_conversations_and_is_cancelled_by_id(
    stack: Stack,
) -> None:
    await stack.llm.set_behaviour(Behaviour(ttft_s=0.03, itl_s=0.2, tokens=12))  # 2.4 s
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        in_band = (await until(conn, "response.created"))[-1].response
        await conn.response.create(response=ASIDE)  # type: ignore[arg-type]
        aside = (await until(conn, "response.created"))[-1].response  # not refused
        await conn.response.cancel(response_id=aside.id)
        cancelled = (await until(conn, "response.done"))[-1].response
        await conn.response.cancel()  # no id: the conversation's
        stopped = (await until(conn, "response.done"))[-1].response
    assert cancelled.id == aside.id and cancelled.status == "cancelled"
    assert stopped.id == in_band.id and stopped.status == "cancelled"


async def test_a_spoken_aside_is_timed_as_an_aside_not_as_a_voice_turn(stack: Stack) -> None:
    # An out-of-band response with audio: its first audio is no answer to the caller's
    # turn, so it stays out of the voice-to-voice latency and its stages (the turn's
    # figures), and is timed from its own response.create as an aside, as a hosted
    # target's is.
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await ask(conn, "table for two")
        spoken = {**ASIDE, "output_modalities": ["audio"]}
        await conn.response.create(response=spoken)  # type: ignore[arg-type]
        aside = await until(conn, "response.done")
    assert aside[-1].response.status == "completed"
    assert any(e.type == "response.output_audio.delta" for e in aside)
    turns = stack.metric("firsttoken_voice_to_voice_seconds_count", target="local-voice")
    assert turns == 1  # the conversation's turn only
    stages = stack.metric(
        "firsttoken_voice_stage_seconds_count", target="local-voice", stage="overhead"
    )
    assert stages == 1
    asides = "firsttoken_realtime_out_of_band_first_delta_seconds_count"
    assert stack.metric(asides, route="voice", target="local-voice") == 1


async def test_silence_past_the_idle_timeout_is_answered_as_openai_does(stack: Stack) -> None:
    # `idle_timeout_ms`: no speech for that long (of streamed audio) is committed as an
    # empty user turn and answered, with no speech-to-text; the timer then counts again
    # from the answer's end plus the length of its audio (what the caller hears).
    turn_detection = {"type": "server_vad", "idle_timeout_ms": 1500}
    update = {"type": "realtime", "audio": {"input": {"turn_detection": turn_detection}}}
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=update)  # type: ignore[arg-type]
        await until(conn, "session.updated")
        await speak(conn, silence(2000))
        events = await until(conn, "response.done")
        spoken = [e for e in events if e.type == "response.output_audio.delta"]
        heard_ms = sum(len(base64.b64decode(e.delta)) for e in spoken) / 48  # 24 kHz PCM16
        await speak(conn, silence(round(heard_ms) + 2000))
        again = (await until(conn, "input_audio_buffer.timeout_triggered"))[-1]
    kinds = _types(events)
    assert kinds[:5] == [
        "input_audio_buffer.timeout_triggered",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    timed_out = events[0]
    assert timed_out.audio_start_ms == 0 and 1500 <= timed_out.audio_end_ms <= 1520
    assert timed_out.item_id == events[1].item_id
    assert events[-1].response.status == "completed", events[-1].response.status_details
    assert heard_ms > 100
    assert not stack.stt[0].calls and not stack.stt[1].calls  # nothing to transcribe
    assert stack.llm.records[0].body["messages"] == [{"role": "user", "content": "(silence)"}]
    # armed at the answer's end (all 2 s of audio were in by then) plus its audio
    assert abs(again.audio_start_ms - (2000 + heard_ms)) <= 25


async def test_items_go_where_previous_item_id_says_and_a_bad_one_adds_nothing(
    stack: Stack,
) -> None:
    def said(text: str, item_id: str) -> Any:
        return {**USER, "id": item_id, "content": [{"type": "input_text", "text": text}]}

    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await until(conn, "session.updated")
        for text, item_id in (("second", "item_b"), ("third", "item_c")):
            await conn.conversation.item.create(item=said(text, item_id))
            await until(conn, "conversation.item.done")
        await conn.conversation.item.create(item=said("first", "item_a"), previous_item_id="root")
        first = (await until(conn, "conversation.item.added"))[-1]
        await conn.conversation.item.create(
            item=said("lost", "item_x"), previous_item_id="item_nope"
        )
        unknown = (await until(conn, "error"))[-1]
        await conn.conversation.item.create(item=said("again", "item_b"))
        taken = (await until(conn, "error"))[-1]
        await conn.response.create()
        await until(conn, "response.done")
    assert first.previous_item_id is None
    assert unknown.error.code == "item_not_found"
    assert taken.error.code == "item_id_conflict"
    asked = [m["content"] for m in stack.llm.records[-1].body["messages"] if m["role"] == "user"]
    assert asked == ["first", "second", "third"]


async def test_the_sessions_transcription_language_and_prompt_reach_speech_to_text(
    stack: Stack,
) -> None:
    hints = {"model": "gpt-4o-transcribe", "language": "fr", "prompt": "Réservation, Paris"}
    update = {"type": "realtime", "audio": {"input": {"transcription": hints}}}
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session=update)  # type: ignore[arg-type]
        await until(conn, "session.updated")
        await speak(conn, silence(400) + speech_24k() + silence(600))
        await until(conn, "conversation.item.input_audio_transcription.completed")
    body = stack.stt[0].calls[-1].body
    assert body["language"] == "fr" and body["prompt"] == "Réservation, Paris"
    assert body["model"] == "whisper-1"  # the stt route's target's own model


async def test_a_user_image_reaches_the_llm_as_an_image_part(stack: Stack) -> None:
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n one pixel").decode()
    content = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": image, "detail": "low"},
    ]
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={**USER, "content": content})  # type: ignore[arg-type]
        await conn.response.create()
        done = (await until(conn, "response.done"))[-1].response
    assert done.status == "completed"
    assert stack.llm.records[-1].body["messages"][-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
        ],
    }


async def test_a_response_speaks_with_its_own_voice_and_format(stack: Stack) -> None:
    # `response.create`'s `audio.output` (voice, format) is the response's; the next
    # response speaks as the session says again.
    own = {"audio": {"output": {"voice": "marin", "format": {"type": "audio/pcmu"}}}}
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create(response=own)  # type: ignore[arg-type]
        first = await until(conn, "response.done")
        first_voice = stack.tts[0].calls[-1].body["voice"]
        await conn.response.create()
        second = await until(conn, "response.done")
    assert first_voice == "marin" and stack.tts[0].calls[-1].body["voice"] == "af_heart"
    done = first[-1].response
    assert done.audio.output.voice == "marin" and done.audio.output.format.type == "audio/pcmu"

    def audio_ms(events: list[Any], bytes_per_ms: int) -> float:
        spoken = [e for e in events if e.type == "response.output_audio.delta"]
        return sum(len(base64.b64decode(e.delta)) for e in spoken) / bytes_per_ms

    # G.711 at 8 kHz (a byte a sample) for the first, PCM16 at 24 kHz for the second:
    # the same words, so about the same length of audio
    assert abs(audio_ms(first, 8) - audio_ms(second, 48)) < 0.2 * audio_ms(second, 48)


async def test_the_sessions_output_speed_reaches_text_to_speech(stack: Stack) -> None:
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create()
        await until(conn, "response.done")
        usual = stack.tts[0].calls[-1].body
        faster = {"type": "realtime", "audio": {"output": {"speed": 1.25}}}
        await conn.session.update(session=faster)  # type: ignore[arg-type]
        await until(conn, "session.updated")
        await conn.response.create()
        await until(conn, "response.done")
    assert "speed" not in usual  # 1.0: not sent
    assert stack.tts[0].calls[-1].body["speed"] == 1.25


async def test_a_forced_tool_and_reasoning_effort_reach_the_llm_in_chats_shape(
    stack: Stack,
) -> None:
    tool = {"type": "function", "name": "book", "parameters": {"type": "object"}}
    asked = {
        "output_modalities": ["text"],
        "tools": [tool],
        "tool_choice": {"type": "function", "name": "book"},
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
    }
    async with stack.sdk().realtime.connect(model="voice") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.conversation.item.create(item=USER)  # type: ignore[arg-type]
        await conn.response.create(response=asked)  # type: ignore[arg-type]
        await until(conn, "response.done")
    body = stack.llm.records[-1].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "book"}}
    assert body["parallel_tool_calls"] is False and body["reasoning_effort"] == "low"
    assert body["tools"][0]["function"]["name"] == "book"


RETAIN = {"type": "retention_ratio", "retention_ratio": 0.8}


@pytest.mark.parametrize("truncation", ["auto", "disabled", RETAIN])
async def test_a_conversation_too_long_for_the_llm_drops_its_oldest_turns(
    truncation: str | dict[str, Any],
) -> None:
    # The llm route's only target is a vLLM-like engine with a 200-token context; ten
    # turns of ~50 tokens are refused (context_length), so the turn is asked again with
    # the older half dropped (truncation: auto, as OpenAI's default), or fails (disabled).
    async with (
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        VllmSim(EngineParams(max_model_len=200), Behaviour(ttft_s=0.01, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        router = await start_router(config([stt], llm, [tts]))  # type: ignore[arg-type]
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                assert (await conn.recv()).type == "session.created"
                update = {"type": "realtime", "output_modalities": ["text"]}
                await conn.session.update(session={**update, "truncation": truncation})  # type: ignore[arg-type]
                for n in range(10):
                    said = {**USER, "content": [{"type": "input_text", "text": f"{n} " * 100}]}
                    await conn.conversation.item.create(item=said)  # type: ignore[arg-type]
                await conn.response.create()
                done = (await until(conn, "response.done"))[-1].response
        finally:
            await stop_router(router)
    if truncation == "disabled":
        assert done.status == "failed"
        return
    assert done.status == "completed"
    asked = [m["content"] for m in llm.records[-1].body["messages"]]
    assert 0 < len(asked) < 10 and asked[-1] == "9 " * 100  # the newest turns kept
    # the first retry: half the turns (auto), or the newest 80 % of the text
    retried = llm.records[1].body["messages"]
    assert len(retried) == (8 if truncation == RETAIN else 5)


async def _answered(stt: SttSim, calls: int) -> None:
    def done() -> bool:
        return len(stt.calls) >= calls and stt.calls[calls - 1].finished_at is not None

    await wait_for(done, timeout_s=5.0)
    await asyncio.sleep(0.05)  # and read by the router


async def _semantic_session(conn: AsyncRealtimeConnection, eagerness: str) -> None:
    turn_detection = {"type": "semantic_vad", "eagerness": eagerness}
    assert (await conn.recv()).type == "session.created"
    await hear(conn, turn_detection=turn_detection)


async def test_semantic_vad_waits_out_an_unfinished_sentence_and_ends_a_finished_one_at_once(
    stack: Stack,
) -> None:
    # `semantic_vad`: the words are read at each pause (300 ms for `medium`); "for" leaves
    # the sentence open, so the turn waits (2.6 s) and the caller goes on within it; the
    # finished sentence ends the turn at its pause, and its words are the transcript
    stack.stt[0].say("book a table for", "book a table for two.")
    speech = speech_24k()
    clip_ms = len(speech) // 48
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await _semantic_session(conn, "medium")
        await speak(conn, silence(300) + speech, pace_s=0.005)
        await speak(conn, silence(700), pace_s=0.02)  # in real time: the reading comes back
        await speak(conn, speech + silence(1000), pace_s=0.005)
        events = await until(conn, "response.done")
    kinds = [e.type for e in events]
    for kind in ("speech_started", "speech_stopped", "committed"):
        assert kinds.count(f"input_audio_buffer.{kind}") == 1, kinds
    heard = next(e for e in events if e.type.endswith("transcription.completed"))
    assert heard.transcript == "book a table for two."
    # two readings, one per pause; none more once the turn ended
    assert [c.text for c in stack.stt[0].calls] == ["book a table for", "book a table for two."]
    assert stack.llm.records[0].body["messages"][-1]["content"] == "book a table for two."
    # ended about 300 ms after the last word (the clip ends in ~240 ms of quiet), long
    # before the 1 s of silence sent
    second_clip_end = 300 + clip_ms + 700 + clip_ms
    stopped = next(e for e in events if e.type == "input_audio_buffer.speech_stopped")
    assert -100 <= stopped.audio_end_ms - second_clip_end <= 200
    done = events[-1].response
    assert done.status == "completed"
    # both readings are billed with the turn: the first was talked over, not free
    first, second = (c.audio_ms / 60_000 * 0.006 for c in stack.stt[0].calls)
    stt_cost = done.model_extra["firsttoken"]["stages"]["stt"]["cost_usd"]
    assert stt_cost == pytest.approx(first + second, rel=0.05)
    readings = "firsttoken_voice_turn_readings_total"
    assert stack.metric(readings, target="local-voice", outcome="talked_over") == 1
    assert stack.metric(readings, target="local-voice", outcome="ended") == 1


async def test_semantic_vad_a_trailing_filler_waits_most_of_the_timeout(stack: Stack) -> None:
    # "um" at the pause: `high` (2 s at most) waits 2 s x (1 - 0.1)^2 = 1.62 s of silence
    # after the last word, then the turn ends with the words already read
    stack.stt[0].say("so um")
    speech = speech_24k()
    clip_end = 300 + len(speech) // 48
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await _semantic_session(conn, "high")
        await speak(conn, silence(300) + speech, pace_s=0.005)
        await speak(conn, silence(2500), pace_s=0.01)  # the reading is back well before 1.6 s
        events = await until(conn, "response.done")
    stopped = next(e for e in events if e.type == "input_audio_buffer.speech_stopped")
    last_word = clip_end - 240  # the clip ends in ~240 ms of quiet
    assert abs(stopped.audio_end_ms - (last_word + 1620)) <= 80
    heard = next(e for e in events if e.type.endswith("transcription.completed"))
    assert heard.transcript == "so um"
    assert len(stack.stt[0].calls) == 1  # read once, at the pause


async def test_semantic_vad_words_read_before_a_switch_to_server_vad_are_no_turns(
    stack: Stack,
) -> None:
    # read at a semantic pause, then the session moves to server VAD: the next turn is
    # heard anew, not given the words of a pause that no longer exists
    stack.stt[0].say("book a table for", "for two people")
    speech = speech_24k()
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await _semantic_session(conn, "low")  # an 8 s timeout: the pause outlives the switch
        await speak(conn, silence(300) + speech + silence(700), pace_s=0.005)
        await _answered(stack.stt[0], 1)  # the reading is back
        server = {"type": "server_vad", "silence_duration_ms": 500}
        update = {"type": "realtime", "audio": {"input": {"turn_detection": server}}}
        await conn.session.update(session=update)  # type: ignore[arg-type]
        await speak(conn, speech + silence(800))
        events = await until(conn, "response.done")
    heard = [e.transcript for e in events if e.type.endswith("transcription.completed")]
    assert heard == ["for two people"]
    assert [c.text for c in stack.stt[0].calls] == ["book a table for", "for two people"]
    readings = "firsttoken_voice_turn_readings_total"
    assert stack.metric(readings, target="local-voice", outcome="talked_over") == 1


async def test_semantic_vad_carries_over_when_a_hosted_session_moves_to_the_cascade() -> None:
    # the session's turn detection is replayed with the rest of its configuration: after
    # the hosted upstream dies, the cascade ends the caller's next turn on its words
    semantic = {"type": "semantic_vad", "eagerness": "medium"}
    async with (
        RealtimeSim(RealtimeBehaviour(ttfa_s=0.01, response_audio_ms=40)) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        stt.say("Book a table for two, please.")
        router = await start_router(hosted_and_cascade(hosted, stt, llm, tts))
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                audio_input = {**HEAR, "turn_detection": semantic}
                update = {"type": "realtime", "audio": {"input": audio_input}}
                await conn.session.update(session=update)  # type: ignore[arg-type]
                first = await ask(conn, "table for two")  # on the hosted target
                await hosted.drop(1011)  # on to the cascade
                await asyncio.sleep(0.05)
                await speak(conn, silence(300) + speech_24k(), pace_s=0.005)
                await speak(conn, silence(1000), pace_s=0.02)
                second = await until(conn, "response.done")
        finally:
            await stop_router(router)
    assert first[-1].response.status == "completed"
    assert second[-1].response.status == "completed"
    heard = next(e for e in second if e.type.endswith("transcription.completed"))
    assert heard.transcript == "Book a table for two, please."
    assert len(stt.calls) == 1  # read at the pause, and that reading was the turn's
    readings = "firsttoken_voice_turn_readings_total"
    registry = router.router.metrics.registry
    assert registry.get_sample_value(readings, {"target": "local-voice", "outcome": "ended"}) == 1


async def test_push_to_talk_the_answer_hears_the_turn_just_committed(stack: Stack) -> None:
    # turn_detection null: the client commits and asks at once, as a push-to-talk
    # button does; the answer must wait for the words of the turn it answers
    async with stack.sdk().realtime.connect(model="voice") as conn:
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await speak(conn, speech_24k())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await until(conn, "response.done")
    assert events[-1].response.status == "completed"
    assert stack.llm.records[-1].body["messages"][-1] == {"role": "user", "content": TRANSCRIPT}


async def test_a_turn_a_stalled_hosted_target_never_answered_is_heard_by_the_cascade() -> None:
    # Push to talk, no transcripts asked for: the user's words exist only as audio.
    # The hosted target takes the turn and never answers; the router moves the session
    # to the cascade with that turn as its audio, which the cascade hears and answers.
    async with (
        RealtimeSim(RealtimeBehaviour(fault=RealtimeFault("hang_before_response"))) as hosted,
        SttSim(behaviour=Behaviour(ttft_s=0.01)) as stt,
        OpenAISim(Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)) as llm,
        TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as tts,
    ):
        stt.set_params(transcript=TRANSCRIPT)
        text = hosted_and_cascade(hosted, stt, llm, tts).replace(
            "model: gpt-realtime}", "model: gpt-realtime, timeouts: {first_token_s: 0.4}}"
        )
        router = await start_router(text)
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            async with client.realtime.connect(model="voice") as conn:
                manual: dict[str, Any] = {"type": "realtime", "output_modalities": ["text"]}
                manual["audio"] = {"input": {"turn_detection": None}}
                await conn.session.update(session=manual)  # type: ignore[arg-type]
                await speak(conn, speech_24k())
                await conn.input_audio_buffer.commit()
                await conn.response.create()
                events = await until(conn, "response.done")
            stalled = router.router.metrics.registry.get_sample_value(
                "firsttoken_realtime_migrations_total", {"route": "voice", "reason": "stalled"}
            )
        finally:
            await stop_router(router)
    assert events[-1].response.status == "completed"
    assert [e.type for e in events].count("response.created") == 1  # moved before it began
    assert llm.records[-1].body["messages"][-1] == {"role": "user", "content": TRANSCRIPT}
    assert stt.calls[-1].audio_ms > 500  # the turn's audio, heard on the cascade
    assert stalled == 1
    # the client asked for no transcripts: the cascade's stay the router's
    assert not any("transcription" in e.type for e in events)
