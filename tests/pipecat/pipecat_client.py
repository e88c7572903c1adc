"""A Pipecat pipeline as a FirstToken client (runs in its own venv: Pipecat pins
openai >= 3 and websockets >= 17, which the router's dev environment cannot take).

    python tests/pipecat/pipecat_client.py --url ws://127.0.0.1:PORT/v1/realtime \
        --model voice --audio said.pcm

Pipecat's `OpenAIRealtimeLLMService`, its `base_url` at the router, gets the PCM of
`--audio` (24 kHz, 16-bit mono) as 20 ms `InputAudioRawFrame`s, then silence, and
this prints one JSON line: what came back downstream (the user's transcript, the
assistant's text, the bytes of its audio) and any error frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime.events import (
    AudioConfiguration,
    AudioInput,
    InputAudioTranscription,
    SessionProperties,
)
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService

RATE = 24_000
FRAME = RATE // 50 * 2


class Collector(FrameProcessor):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, Any] = {"user": [], "assistant": "", "audio_bytes": 0, "errors": []}
        self.answered = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.seen["user"].append(frame.text)
        elif isinstance(frame, LLMTextFrame):
            self.seen["assistant"] += frame.text
        elif isinstance(frame, TTSAudioRawFrame):
            self.seen["audio_bytes"] += len(frame.audio)
            if self.seen["audio_bytes"] > RATE:  # a second of answer
                self.answered.set()
        elif isinstance(frame, ErrorFrame):
            self.seen["errors"].append(str(frame.error))
            self.answered.set()
        await self.push_frame(frame, direction)


async def main(url: str, model: str, audio: bytes, timeout_s: float) -> dict[str, Any]:
    llm = OpenAIRealtimeLLMService(
        api_key="unused",
        base_url=url,
        # the user's words come back only when asked for, as from OpenAI
        settings=OpenAIRealtimeLLMService.Settings(
            model=model,
            session_properties=SessionProperties(
                audio=AudioConfiguration(input=AudioInput(transcription=InputAudioTranscription()))
            ),
        ),
    )
    collector = Collector()
    before = Collector()  # the user's transcript travels upstream, to the context
    task = PipelineTask(
        Pipeline([before, llm, collector]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
    )
    runner = PipelineRunner(handle_sigint=False)
    run = asyncio.create_task(runner.run(task))
    await asyncio.sleep(1.0)  # connected, session configured
    speech = bytes(RATE // 5 * 2) + audio + bytes(RATE * 2)  # 0.2 s, the speech, 1 s
    for start in range(0, len(speech), FRAME):
        chunk = speech[start : start + FRAME]
        await task.queue_frame(InputAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1))
        await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(collector.answered.wait(), timeout_s)
        await asyncio.sleep(0.5)  # the rest of the transcript
    except TimeoutError:
        collector.seen["errors"].append(f"no answer within {timeout_s:g} s")
    await task.queue_frame(EndFrame())
    await asyncio.wait_for(run, 10)
    collector.seen["user"] += before.seen["user"]
    return collector.seen


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="voice")
    parser.add_argument("--audio", required=True, help="24 kHz 16-bit mono PCM")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with open(args.audio, "rb") as f:
        pcm = f.read()
    print(json.dumps(asyncio.run(main(args.url, args.model, pcm, args.timeout))))
    sys.exit(0)
