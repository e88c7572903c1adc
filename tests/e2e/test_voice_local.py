"""A real round trip on a laptop: eSpeak NG's speech, streamed by the official `openai`
SDK's realtime client in 20 ms frames -> the router's server VAD -> PocketSphinx (the
local STT engine) -> an LLM target -> eSpeak NG (the local TTS engine) -> audio back
that holds speech, whose own transcript matches the LLM's text."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest
from openai import AsyncOpenAI

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import LoopThread, start_router, stop_router
from tests.speech.speaking import (
    SENTENCES,
    needs_engines,
    pcm24,
    say,
    shared_words,
    voiced_share,
)
from tests.voice.audio import frames, silence

if TYPE_CHECKING:
    from router.speech.server import SpeechServer

pytestmark = [pytest.mark.voice, needs_engines]

#: what the LLM answers: words PocketSphinx hears back from eSpeak NG
REPLY = "There are three people in the room."


def config(speech: SpeechServer, llm: OpenAISim) -> str:
    slow = "timeouts: {connect_s: 2, first_token_s: 30, idle_s: 30}"
    return f"""
targets:
  - {{name: pocketsphinx, kind: stt, base_url: '{speech.base_url}', model: pocketsphinx-en-us,
      {slow}}}
  - {{name: espeak, kind: tts, base_url: '{speech.base_url}', model: espeak-ng,
      sample_rate: 24000, {slow}}}
  - {{name: llm, kind: openai, base_url: '{llm.base_url}', model: sim}}
  - name: laptop-voice
    kind: cascade
    cascade: {{stt: stt, llm: chat, tts: tts, voice: alloy}}
routes:
  - {{name: stt, targets: [pocketsphinx]}}
  - {{name: tts, targets: [espeak]}}
  - {{name: chat, targets: [llm]}}
  - {{name: voice, targets: [laptop-voice]}}
"""


async def round_trip(speech: SpeechServer, said: str) -> tuple[list[Any], OpenAISim]:
    reply = Behaviour(ttft_s=0.05, itl_s=0.01, tokens=len(REPLY.split()), reply=REPLY)
    async with OpenAISim(reply) as llm:
        router = await start_router(config(speech, llm))
        try:
            client = AsyncOpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
            events = []
            async with client.realtime.connect(model="voice") as conn:
                # the caller's words come back only when asked for, as from OpenAI
                heard = {"transcription": {"model": "pocketsphinx-en-us"}}
                update = {"type": "realtime", "audio": {"input": heard}}
                await conn.session.update(session=update)  # type: ignore[arg-type]
                for frame in frames(silence(300) + pcm24(say(said)) + silence(900)):
                    await conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())
                async for event in conn:
                    events.append(event)
                    if event.type in ("response.done", "error"):
                        break
            return events, llm
        finally:
            await stop_router(router)


def test_speech_in_speech_out_through_the_local_engines(
    speech_server: SpeechServer, loop_thread: LoopThread
) -> None:
    said = SENTENCES[0]
    events, llm = loop_thread.run(round_trip(speech_server, said), timeout=90)
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.done", kinds[-5:]
    # PocketSphinx heard the caller ...
    heard = next(e for e in events if e.type.endswith("input_audio_transcription.completed"))
    assert shared_words(said, heard.transcript) >= 0.6, heard.transcript
    # ... the LLM got that transcript and answered ...
    assert llm.records[-1].body["messages"][-1]["content"] == heard.transcript
    text = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
    assert text.strip() == REPLY
    # ... and eSpeak NG's answer came back as speech ...
    audio = b"".join(
        base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
    )
    assert len(audio) / 48_000 > 1.0  # seconds at 24 kHz
    assert voiced_share(audio, 24_000) > 0.3
    # ... whose words are the LLM's words
    from openai import OpenAI

    local = OpenAI(base_url=speech_server.base_url, api_key="unused", max_retries=0)
    back = local.audio.transcriptions.create(
        model="pocketsphinx", file=("answer.pcm", audio, "audio/pcm;rate=24000")
    )
    assert shared_words(REPLY, back.text) >= 0.6, back.text
    # the router's one clock split the turn into its stages
    latency = events[-1].response.model_extra["firsttoken"]["latency_ms"]
    assert latency["stt"] > 0
    assert latency["voice_to_voice"] >= latency["stt"] + latency["vad_hangover"]
