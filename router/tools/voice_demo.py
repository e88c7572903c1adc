"""`firsttoken demo --voice`: hear FirstToken route voice sessions on a laptop.

One realtime route, `voice`, holds a simulated hosted speech-to-speech target
(`hosted-rt`, a Realtime simulator answering 450 ms after the turn) beside a cascade
served by FirstToken itself (`laptop-voice`): the local speech engines (PocketSphinx
and eSpeak NG, `router.speech`) for its `stt` and `tts` routes and a simulated text
fleet (a fast free `local-llm`, a slower priced `hosted-llm`, `slo_cost` between them)
for its `llm` route. Sessions alternate between the two (`round_robin`), so both can
be compared; a few synthetic callers (`voice_callers`) speak eSpeak NG sentences
with pauses and sometimes barge in.

Without the `voice-local` extra or Debian's `espeak-ng`, the missing engine is
replaced by its simulator (an STT that returns a fixed transcript, a TTS that speaks
tones) and the demo says so; without eSpeak NG the callers speak tones.

The live view shows per session the target or cascade serving it, its answers,
voice-to-voice latency and the stages of its last answer, barge-ins and cancels;
`--no-live` (or output that is not a terminal) prints the summary once at the end;
`--save-audio DIR` writes each session's two sides as WAV files.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from router.config import parse_config
from router.errors import EngineError
from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.realtime import RealtimeSim
from router.sim.realtime_behaviour import RealtimeBehaviour
from router.speech.check import missing
from router.tools.simulate import running_router
from router.tools.voice_callers import RATE, Caller, call
from router.tools.voice_view import VoiceDemo, headline, plain_table, session_rows, show_live
from router.voice.codec import wav
from router.voice.resample import Resampler

if TYPE_CHECKING:
    from router.runtime import Router

#: what the callers say: sentences PocketSphinx follows from eSpeak NG
SENTENCES = (
    "I would like to order a pizza.",
    "The meeting starts at ten o'clock.",
    "I am looking for a good restaurant.",
    "There are three people in the room.",
)
LOCAL_REPLY = "Sure, I can help you with that. What time would you like it?"
HOSTED_REPLY = "Of course. Let me check that for you right away."
HOSTED_MODEL = "gpt-realtime-sim"
LABELS = {HOSTED_MODEL: "hosted-rt", "laptop-voice": "laptop-voice"}
SLOW = "timeouts: {connect_s: 2, first_token_s: 30, idle_s: 30}"
#: the hosted simulator ends each session after this long (`session_expired`, as
#: OpenAI does after 60 minutes), so a demo of half a minute shows a migration
HOSTED_SESSION_MAX_S = 20.0


@dataclass
class Speech:
    """Where the cascade's stt and tts routes go, and what that means."""

    stt_url: str
    stt_model: str
    tts_url: str
    tts_model: str
    tts_rate: int
    notes: list[str] = field(default_factory=list)


def policy_yaml(
    speech: Speech, local_llm: str, hosted_llm: str, hosted_rt: str, *, cascade_only: bool = False
) -> str:
    voice = "[laptop-voice]" if cascade_only else "[hosted-rt, laptop-voice]"
    return f"""
targets:
  - {{name: local-llm, kind: openai, base_url: '{local_llm}', model: sim,
      price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
  - {{name: hosted-llm, kind: openai, base_url: '{hosted_llm}', model: sim,
      price: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}}}
  - {{name: stt, kind: stt, base_url: '{speech.stt_url}', model: {speech.stt_model}, {SLOW}}}
  - {{name: tts, kind: tts, base_url: '{speech.tts_url}', model: {speech.tts_model},
      sample_rate: {speech.tts_rate}, {SLOW}}}
  - {{name: hosted-rt, kind: realtime, base_url: '{hosted_rt}', model: {HOSTED_MODEL},
      price: {{audio_input: 32, audio_output: 64, text_input: 4, text_output: 16}}}}
  - name: laptop-voice
    kind: cascade
    cascade: {{stt: stt-route, llm: chat, tts: tts-route, voice: alloy}}
routes:
  - {{name: chat, targets: [local-llm, hosted-llm], policy: {{type: slo_cost}},
      slo: {{ttft_ms: 300, quantile: 0.9}}}}
  - {{name: stt-route, targets: [stt]}}
  - {{name: tts-route, targets: [tts]}}
  - {{name: voice, targets: {voice}, policy: {{type: round_robin}}}}
"""


@contextlib.asynccontextmanager
async def speech_engines() -> AsyncIterator[Speech]:
    """The local engines where they can run, each missing one's simulator otherwise."""
    from router.sim.stt import SttSim
    from router.sim.tts import TtsParams, TtsSim

    stt_ok, tts_ok = not missing(tts=False), not missing(stt=False)
    failed = ""
    async with contextlib.AsyncExitStack() as stack:
        local: Any = None
        if stt_ok or tts_ok:
            from router.speech.espeak import Espeak
            from router.speech.server import STT_MODEL, TTS_MODEL, SpeechServer
            from router.speech.sphinx import Sphinx

            local = SpeechServer(
                stt=Sphinx(workers=2) if stt_ok else None, tts=Espeak() if tts_ok else None
            )
            try:
                await local.start()
                stack.push_async_callback(local.stop)
            except EngineError as exc:
                failed = f"the local engines did not start ({exc.message})"
                local, stt_ok, tts_ok = None, False, False
        notes = [failed] if failed else []
        if local is not None and stt_ok:
            stt_url, stt_model = local.base_url, STT_MODEL
        else:
            stt_sim = SttSim(behaviour=Behaviour(ttft_s=0.3))
            stt_sim.set_params(transcript=SENTENCES[0])
            await stack.enter_async_context(stt_sim)
            stt_url, stt_model = stt_sim.base_url, "whisper-sim"
            notes.append(f"speech-to-text simulated ({'; '.join(missing(tts=False))})")
        if local is not None and tts_ok:
            tts_url, tts_model, tts_rate = local.base_url, TTS_MODEL, 24_000
        else:
            tts_sim = TtsSim(TtsParams(sample_rate=22_050), behaviour=Behaviour(ttft_s=0.08))
            await stack.enter_async_context(tts_sim)
            tts_url, tts_model, tts_rate = tts_sim.base_url, "tts-sim", 22_050
            notes.append(f"text-to-speech simulated, tones ({'; '.join(missing(stt=False))})")
        yield Speech(stt_url, stt_model, tts_url, tts_model, tts_rate, notes)


async def utterances(espeak: bool) -> list[bytes]:
    """What the callers say, as 24 kHz PCM16: eSpeak NG's sentences, else tones."""
    if not espeak:
        from router.sim.tts import TtsParams, speech_pcm

        params = TtsParams(sample_rate=RATE, ms_per_char=45.0)
        return [speech_pcm(s, params) for s in SENTENCES]
    from router.speech.espeak import Espeak

    engine = Espeak()
    out = []
    for sentence in SENTENCES:
        resample = Resampler(22_050, RATE)
        async with engine.speak(sentence) as audio:
            pcm = b"".join([resample.push(chunk) async for chunk in audio])
        out.append(_trimmed(pcm + resample.flush()))
    return out


def _trimmed(pcm: bytes, floor: int = 300) -> bytes:
    """Without the silence around the speech: its end is the caller's end of speech."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > floor)
    return samples[loud[0] : loud[-1] + 1].tobytes() if len(loud) else pcm


async def run_voice_demo(
    *,
    duration_s: float,
    sessions: int,
    barge_in: float,
    live: bool,
    port: int,
    save_audio: Path | None,
    stream: TextIO,
    seed: int = 7,
    cascade_only: bool = False,
) -> VoiceDemo:
    local_reply = Behaviour(ttft_s=0.08, itl_s=0.02, tokens=12, reply=LOCAL_REPLY)
    hosted_reply = Behaviour(ttft_s=0.25, itl_s=0.01, tokens=10, reply=HOSTED_REPLY)
    rt = RealtimeBehaviour(
        ttfa_s=0.45,
        response_audio_ms=2000,
        frame_interval_s=0.02,
        reply=HOSTED_REPLY,
        session_max_s=HOSTED_SESSION_MAX_S,
    )
    async with (
        speech_engines() as speech,
        OpenAISim(local_reply) as local_llm,
        OpenAISim(hosted_reply) as hosted_llm,
        RealtimeSim(rt, model=HOSTED_MODEL) as hosted_rt,
    ):
        config = parse_config(
            policy_yaml(
                speech,
                local_llm.base_url,
                hosted_llm.base_url,
                hosted_rt.base_url,
                cascade_only=cascade_only,
            ),
            "<voice demo>",
        )
        said = await utterances(espeak=not missing(stt=False))
        if said and not missing(stt=False):
            speech.notes.append("callers speak eSpeak NG sentences")
        else:
            speech.notes.append("callers speak tones (eSpeak NG is not installed)")
        async with running_router(config, port=port) as (router, base_url):
            demo = VoiceDemo(
                [Caller(i + 1) for i in range(sessions)],
                base_url,
                duration_s,
                speech.notes,
                migrations=lambda: migrations(router),
            )
            if not live:
                print(f"router listening on {base_url}; route 'voice'", file=stream)
                for note in speech.notes:
                    print(f"  {note}", file=stream)
                print(f"{sessions} callers for {duration_s:g} s ...", file=stream, flush=True)
            until = time.monotonic() + duration_s
            rng = random.Random(seed)
            tasks = [
                call(
                    c,
                    base_url=base_url,
                    route="voice",
                    utterances=said,
                    rng=random.Random(rng.random()),
                    until=until,
                    barge_in=barge_in,
                    labels=LABELS,
                    save_audio=save_audio is not None,
                )
                for c in demo.callers
            ]
            view = asyncio.create_task(show_live(demo)) if live else None
            try:
                for n, task in enumerate(tasks):  # the sessions start a moment apart
                    tasks[n] = _after(n * 0.7, task)
                await asyncio.gather(*tasks)
            finally:
                if view is not None:
                    view.cancel()
    if save_audio is not None:
        write_audio(demo, save_audio)
    return demo


def migrations(router: Router) -> dict[str, int]:
    """The router's realtime migrations so far, by reason (its own counter)."""
    out: dict[str, int] = {}
    for metric in router.realtime_metrics.migrations.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.value:
                reason = sample.labels["reason"]
                out[reason] = out.get(reason, 0) + int(sample.value)
    return out


async def _after(delay_s: float, work: Any) -> None:
    await asyncio.sleep(delay_s)
    await work


def write_audio(demo: VoiceDemo, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for c in demo.callers:
        for side, pcm in (("caller", c.said), ("answer", c.heard)):
            (folder / f"session-{c.number}-{side}.wav").write_bytes(wav(bytes(pcm), RATE))


def voice_demo(
    *,
    duration_s: float,
    sessions: int = 4,
    barge_in: float = 0.25,
    live: bool,
    port: int = 0,
    save_audio: str | None = None,
    stream: TextIO | None = None,
) -> int:
    stream = stream or sys.stdout
    live = live and stream.isatty()
    folder = Path(save_audio) if save_audio else None
    demo = asyncio.run(
        run_voice_demo(
            duration_s=duration_s,
            sessions=sessions,
            barge_in=barge_in,
            live=live,
            port=port,
            save_audio=folder,
            stream=stream,
        )
    )
    print(
        f"\nvoice demo summary: {duration_s:g} s, {sessions} callers on route 'voice'", file=stream
    )
    for note in demo.notes:
        print(f"  {note}", file=stream)
    print(plain_table(session_rows(demo)), file=stream)
    for line in headline(demo):
        print(line, file=stream)
    if folder is not None:
        print(f"audio: {folder}/session-N-caller.wav and session-N-answer.wav", file=stream)
    stream.flush()
    return 0 if any(a.status == "completed" for c in demo.callers for a in c.done()) else 1
