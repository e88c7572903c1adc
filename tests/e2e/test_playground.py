"""GET /playground: served on loopback by default under the API's Host and Origin rules,
and, in a real browser (Debian's headless Chromium, its microphone a WAV eSpeak NG
spoke), a spoken turn through the local engines: the transcript appears, the answer
plays and time to first audio and the router's stages are shown."""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from router.sim.behaviour import Behaviour
from router.sim.openai_server import OpenAISim
from router.sim.realtime import RealtimeSim
from tests.e2e.harness import LoopThread, RunningRouter, start_router, stop_router
from tests.speech.speaking import SENTENCES, needs_engines, pcm24, say, shared_words

if TYPE_CHECKING:
    from router.speech.server import SpeechServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REPLY = "There are three people in the room."


def realtime_config(sim: RealtimeSim, server: str = "") -> str:
    return f"""
{server}
targets:
  - {{name: rt, kind: realtime, base_url: '{sim.base_url}', model: gpt-realtime}}
routes:
  - {{name: voice, targets: [rt]}}
"""


@pytest.fixture(scope="module")
def hosted(loop_thread: LoopThread) -> Iterator[tuple[RealtimeSim, RunningRouter, RunningRouter]]:
    sim = RealtimeSim()
    loop_thread.run(sim.start())
    on = loop_thread.run(start_router(realtime_config(sim)))
    off = loop_thread.run(start_router(realtime_config(sim, "server: {playground: false}")))
    yield sim, on, off
    loop_thread.run(stop_router(on))
    loop_thread.run(stop_router(off))
    loop_thread.run(sim.stop())


def test_the_page_and_its_scripts_are_served_with_a_strict_policy(
    hosted: tuple[RealtimeSim, RunningRouter, RunningRouter],
) -> None:
    _, on, _ = hosted
    page = httpx.get(f"{on.url}/playground")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/playground/playground.js">' in page.text
    for script in ("playground.js", "capture-worklet.js"):
        answer = httpx.get(f"{on.url}/playground/{script}")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/javascript")
    assert "input_audio_buffer.append" in httpx.get(f"{on.url}/playground/playground.js").text


def test_the_page_obeys_the_apis_host_rule_and_can_be_turned_off(
    hosted: tuple[RealtimeSim, RunningRouter, RunningRouter],
) -> None:
    _, on, off = hosted
    rebound = httpx.get(f"{on.url}/playground", headers={"host": f"evil.example:{on.port}"})
    assert rebound.status_code == 403
    assert rebound.json()["error"]["code"] == "host_not_allowed"
    closed = httpx.get(f"{off.url}/playground")
    assert closed.status_code == 404
    assert closed.json()["error"]["code"] == "not_found"


def test_only_the_pages_own_origin_opens_a_session(
    hosted: tuple[RealtimeSim, RunningRouter, RunningRouter], loop_thread: LoopThread
) -> None:
    _, on, off = hosted

    async def first_event(router: RunningRouter, origin: str) -> str:
        url = f"ws://127.0.0.1:{router.port}/v1/realtime?model=voice"
        async with websockets.connect(
            url, origin=Origin(origin), subprotocols=[websockets.Subprotocol("realtime")]
        ) as ws:
            return str(await asyncio.wait_for(ws.recv(), 5))

    own = f"http://127.0.0.1:{on.port}"
    assert '"session.created"' in loop_thread.run(first_event(on, own))
    for router, origin in ((on, "http://evil.example"), (off, f"http://127.0.0.1:{off.port}")):
        with pytest.raises(InvalidStatus) as refused:
            loop_thread.run(first_event(router, origin))
        assert refused.value.response.status_code == 403


# -- a real browser -------------------------------------------------------------------------


def microphone_wav(path: Path, said: str) -> None:
    """What the fake microphone plays, over and over: half a second of silence, the
    sentence, and twelve seconds of silence, at 48 kHz (room for a slow machine's
    PocketSphinx: a repeat before the answer would start the next turn, and time to
    first audio belongs to the turn the answer follows)."""
    import soxr

    speech = np.frombuffer(pcm24(say(said)), dtype="<i2")
    pcm = np.concatenate([np.zeros(12_000, "<i2"), speech, np.zeros(288_000, "<i2")])  # at 24 kHz
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(48_000)
        writer.writeframes(soxr.resample(pcm, 24_000, 48_000).astype("<i2").tobytes())
    path.write_bytes(out.getvalue())


def local_voice(speech: SpeechServer, llm: OpenAISim) -> str:
    slow = "timeouts: {connect_s: 2, first_token_s: 30, idle_s: 30}"
    return f"""
targets:
  - {{name: pocketsphinx, kind: stt, base_url: '{speech.base_url}', model: pocketsphinx-en-us,
      {slow}}}
  - {{name: espeak, kind: tts, base_url: '{speech.base_url}', model: espeak-ng, {slow}}}
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


def until_answered(page: Any, timeout_s: float = 60.0) -> dict[str, Any]:
    """The page's state once it showed a transcript, played audio and got the stages.
    (Polled from here: the page's CSP forbids the eval behind `wait_for_function`.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        state: dict[str, Any] = page.evaluate("() => window.playground")
        done = state["userTranscripts"] and state["serverLatency"]
        if (done and state["audioPlayedMs"] > 800) or time.monotonic() > deadline:
            return state
        page.wait_for_timeout(200)


@pytest.mark.voice
@needs_engines
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_a_spoken_turn_in_headless_chromium(
    speech_server: SpeechServer, loop_thread: LoopThread, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    said = SENTENCES[0]
    mic = tmp_path / "spoken.wav"
    microphone_wav(mic, said)
    reply = Behaviour(ttft_s=0.05, itl_s=0.01, tokens=len(REPLY.split()), reply=REPLY)
    llm = OpenAISim(reply)
    loop_thread.run(llm.start())
    router = loop_thread.run(start_router(local_voice(speech_server, llm)))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--use-fake-ui-for-media-stream",
                    "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={mic}",
                    "--autoplay-policy=no-user-gesture-required",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{router.url}/playground?model=voice")
                page.click("#start")
                state = until_answered(page)
                ttfa = page.inner_text("#ttfa")
                stages = page.inner_text("#stages")
                source = page.inner_text("#stage-source")
                shot = os.environ.get("FIRSTTOKEN_PLAYGROUND_SCREENSHOT")
                page.screenshot(path=shot or str(tmp_path / "playground.png"), full_page=True)
            finally:
                browser.close()
    finally:
        loop_thread.run(stop_router(router))
        loop_thread.run(llm.stop())
    assert not errors, errors
    assert state["errors"] == []
    # the transcript appeared ...
    assert shared_words(said, state["userTranscripts"][0]) >= 0.6, state["userTranscripts"]
    # ... the answer played (its words on the page, its audio through the speakers) ...
    assert state["assistantTranscripts"][0].strip() == REPLY
    assert state["audioPlayedMs"] > 800
    # ... and time to first audio and the router's own stages are shown
    # the page rounds with JavaScript's Math.round (halves go up), not Python's round
    assert ttfa.isdigit() and int(ttfa) == math.floor(state["ttfaMs"][0] + 0.5)
    assert "stt" in stages and "tts_first_audio" in stages
    assert "router measured" in source
