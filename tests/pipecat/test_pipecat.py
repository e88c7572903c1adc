"""Pipecat, an outside voice framework, as a FirstToken client: its
`OpenAIRealtimeLLMService` with `base_url` at the router's `/v1/realtime`, answered by a
cascade on the local engines. Pipecat needs openai >= 3 and websockets >= 17, which the
dev environment's litellm and uvicorn pins exclude, so it runs from its own venv
(`make test-pipecat` builds `.venv-pipecat` and points FIRSTTOKEN_PIPECAT_PYTHON at it);
the router runs here."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from tests.e2e.harness import LoopThread, start_router, stop_router
from tests.e2e.test_voice_local import REPLY, config
from tests.speech.speaking import SENTENCES, needs_engines, pcm24, say, shared_words

if TYPE_CHECKING:
    from router.speech.server import SpeechServer

PYTHON = os.environ.get("FIRSTTOKEN_PIPECAT_PYTHON")
CLIENT = Path(__file__).with_name("pipecat_client.py")

pytestmark = [
    pytest.mark.pipecat,
    needs_engines,
    pytest.mark.skipif(not PYTHON, reason="no Pipecat venv: run `make test-pipecat`"),
]


def test_a_pipecat_pipeline_talks_to_a_cascade_through_the_router(
    speech_server: SpeechServer, loop_thread: LoopThread, tmp_path: Path
) -> None:
    assert PYTHON is not None
    said = SENTENCES[0]
    audio = tmp_path / "said.pcm"
    audio.write_bytes(pcm24(say(said)))
    reply = Behaviour(ttft_s=0.05, itl_s=0.01, tokens=len(REPLY.split()), reply=REPLY)
    llm = OpenAISim(reply)
    loop_thread.run(llm.start())
    router = loop_thread.run(start_router(config(speech_server, llm)))
    try:
        done = subprocess.run(
            [PYTHON, str(CLIENT), "--url", f"ws://127.0.0.1:{router.port}/v1/realtime",
             "--model", "voice", "--audio", str(audio)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        loop_thread.run(stop_router(router))
        loop_thread.run(llm.stop())
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert seen["audio_bytes"] > 48_000  # over a second of the answer, as TTSAudioRawFrames
    assert seen["assistant"].strip() == REPLY
    assert seen["user"], seen
    assert shared_words(said, seen["user"][0]) >= 0.6, seen["user"]
