"""The speech simulators, driven by the official openai SDK and by raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour, Fault
from router.sim.stt import SttParams, SttSim
from router.sim.tts import TtsParams, TtsSim
from router.voice.codec import wav
from tests.sim.conftest import wait_for
from tests.voice.audio import speech_24k

pytestmark = pytest.mark.anyio

Sdk = Callable[[str], openai.AsyncOpenAI]


@pytest.fixture
async def stt() -> AsyncIterator[SttSim]:
    async with SttSim(behaviour=Behaviour(ttft_s=0.01)) as server:
        yield server


@pytest.fixture
async def tts() -> AsyncIterator[TtsSim]:
    async with TtsSim(behaviour=Behaviour(ttft_s=0.01, itl_s=0.001)) as server:
        yield server


@pytest.fixture
async def sdk() -> AsyncIterator[Callable[[str], openai.AsyncOpenAI]]:
    """The official client, closed at the end of the test."""
    clients: list[openai.AsyncOpenAI] = []

    def make(base_url: str) -> openai.AsyncOpenAI:
        clients.append(openai.AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def test_transcripts_come_back_as_told_in_openai_shapes(stt: SttSim, sdk: Sdk) -> None:
    stt.say("book a table for two")
    audio = wav(speech_24k(), 24_000)
    client = sdk(stt.base_url)
    first = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio, "audio/wav")
    )
    assert first.text == "book a table for two"
    stt.set_params(transcript="and a dessert")
    verbose = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", audio, "audio/wav"),
        response_format="verbose_json",
        language="en",
    )
    assert verbose.text == "and a dessert"
    assert verbose.duration == pytest.approx(2.193, abs=0.001)
    assert verbose.language == "en"
    plain = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", audio, "audio/wav"), response_format="text"
    )
    assert plain == "and a dessert"
    call = stt.calls[0]
    assert call.audio_ms == pytest.approx(2192.75)
    assert call.body["model"] == "whisper-1" and call.body["filename"] == "a.wav"
    assert call.headers["authorization"] == "Bearer sk-test"


async def test_latency_follows_the_audio_length(stt: SttSim, sdk: Sdk) -> None:
    stt.params = SttParams(seconds_per_audio_s=0.1)
    await sdk(stt.base_url).audio.transcriptions.create(
        model="m", file=("a.wav", wav(bytes(48_000), 24_000), "audio/wav")
    )
    call = stt.calls[-1]
    assert call.finished_at is not None
    assert call.finished_at - call.received_at >= 0.01 + 0.1  # ttft + 1 s of audio at 0.1


async def test_a_bad_transcription_request_gets_400_in_openai_shape(stt: SttSim) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(f"{stt.base_url}/audio/transcriptions", data={"model": "m"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "file" in r.json()["error"]["message"]


async def test_stt_faults_and_cancels_are_recorded(stt: SttSim) -> None:
    files = {"file": ("a.wav", wav(bytes(4800), 24_000), "audio/wav")}
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{stt.base_url}/audio/transcriptions",
            data={"model": "m"},
            files=files,
            headers={"x-sim-fault": "status=503;retry_after=2"},
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        await stt.set_fault(Fault("hang_before_first_token"))
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                f"{stt.base_url}/audio/transcriptions",
                data={"model": "m"},
                files=files,
                timeout=0.2,
            )
    await wait_for(lambda: stt.calls[-1].cancelled_at is not None)
    assert stt.calls[0].status == 503 and stt.calls[0].cancelled_at is None


async def test_speech_streams_pcm_whose_length_follows_the_text(tts: TtsSim, sdk: Sdk) -> None:
    text = "Sure, a table for two."
    async with sdk(tts.base_url).audio.speech.with_streaming_response.create(
        model="tts-1", input=text, voice="alloy", response_format="pcm"
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        chunks = [chunk async for chunk in response.iter_bytes()]
    audio = b"".join(chunks)
    assert len(audio) == len(text) * 60 * 24 * 2  # 60 ms a character, 24 kHz, 16-bit
    assert len(chunks) > 1  # streamed, not sent at once
    # a space is silence, a letter is tone: "Sure," then a space
    per_char = 60 * 24 * 2
    assert any(audio[: per_char * 5])
    assert not any(audio[per_char * 5 : per_char * 6])
    call = tts.calls[-1]
    assert call.text == text and call.audio_ms == pytest.approx(len(text) * 60)
    assert call.first_token_at is not None and call.finished_at is not None


async def test_another_sample_rate_and_speed(tts: TtsSim) -> None:
    tts.params = TtsParams(sample_rate=22_050)
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{tts.base_url}/audio/speech",
            json={
                "model": "m",
                "input": "abcd",
                "voice": "v",
                "response_format": "pcm",
                "speed": 2,
            },
        )
    assert len(r.content) == 4 * round(22_050 * 0.030) * 2


async def test_a_listener_that_hangs_up_is_recorded_as_a_cancel(tts: TtsSim) -> None:
    await tts.set_behaviour(Behaviour(ttft_s=0.01, itl_s=0.05))
    body = {"model": "m", "input": "x" * 200, "voice": "v", "response_format": "pcm"}
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{tts.base_url}/audio/speech", json=body) as r,
    ):
        async for _ in r.aiter_raw():
            break
    await wait_for(lambda: tts.calls[-1].cancelled_at is not None)
    call = tts.calls[-1]
    assert call.finished_at is None
    assert 1 <= call.tokens_sent < 300


@pytest.mark.parametrize(
    ("fault", "error"),
    [("die_after=2", httpx.RemoteProtocolError), ("reset_after_headers", httpx.ReadError)],
)
async def test_tts_faults_cut_the_stream(tts: TtsSim, fault: str, error: type[Exception]) -> None:
    body = {"model": "m", "input": "x" * 50, "voice": "v", "response_format": "pcm"}
    async with httpx.AsyncClient() as client:
        with pytest.raises(error):
            await client.post(
                f"{tts.base_url}/audio/speech", json=body, headers={"x-sim-fault": fault}
            )
    await asyncio.sleep(0)
    assert tts.calls[-1].cancelled_at is None  # the server cut it: not a client cancel


async def test_unsupported_speech_requests_get_400(tts: TtsSim) -> None:
    async with httpx.AsyncClient() as client:
        for extra in ({"response_format": "mp3"}, {"stream_format": "sse"}, {"voice": ""}):
            body = {"model": "m", "input": "hi", "voice": "v", "response_format": "pcm", **extra}
            r = await client.post(f"{tts.base_url}/audio/speech", json=body)
            assert r.status_code == 400, extra
            assert r.json()["error"]["type"] == "invalid_request_error"
