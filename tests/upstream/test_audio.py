"""Speech upstreams against the speech simulators on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from router.config import Timeouts
from router.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from router.sim.behaviour import Behaviour, Fault
from router.sim.stt import SttSim
from router.sim.tts import TtsParams, TtsSim
from router.upstream.audio import SttUpstream, TtsUpstream
from router.voice.codec import wav
from tests.sim.conftest import wait_for
from tests.voice.audio import speech_24k

pytestmark = pytest.mark.anyio

FAST = Timeouts(connect_s=1.0, first_token_s=1.0, idle_s=0.3)


@pytest.fixture
async def stt_sim() -> AsyncIterator[SttSim]:
    async with SttSim(behaviour=Behaviour(ttft_s=0.005)) as server:
        yield server


@pytest.fixture
async def tts_sim() -> AsyncIterator[TtsSim]:
    async with TtsSim(behaviour=Behaviour(ttft_s=0.005, itl_s=0.002)) as server:
        yield server


@pytest.fixture
async def stt(stt_sim: SttSim) -> AsyncIterator[SttUpstream]:
    upstream = SttUpstream(
        name="stt-a", base_url=stt_sim.base_url, model="whisper-x", api_key="sk-a", timeouts=FAST
    )
    yield upstream
    await upstream.aclose()


@pytest.fixture
async def tts(tts_sim: TtsSim) -> AsyncIterator[TtsUpstream]:
    upstream = TtsUpstream(
        name="tts-a", base_url=tts_sim.base_url, model="kokoro", timeouts=FAST, sample_rate=22_050
    )
    yield upstream
    await upstream.aclose()


async def test_an_utterance_comes_back_as_its_transcript(stt: SttUpstream, stt_sim: SttSim) -> None:
    stt_sim.say("book a table for two", "thanks")
    audio = wav(speech_24k(), 24_000)
    first = await stt.transcribe(audio, fields={"language": "en", "model": "client-model"})
    assert first.text == "book a table for two"
    assert first.audio_s == pytest.approx(2.193, abs=0.001)
    plain = await stt.transcribe(audio, fields={"response_format": "text"})
    assert (plain.text, plain.audio_s) == ("thanks", None)
    call = stt_sim.calls[0]
    assert call.body["model"] == "whisper-x"  # the target's model, not the client's
    assert call.body["language"] == "en"
    assert call.audio_ms == pytest.approx(2192.75)
    assert call.headers["authorization"] == "Bearer sk-a"


async def test_a_refusal_is_a_status_error_with_its_retry_after(
    stt: SttUpstream, stt_sim: SttSim
) -> None:
    await stt_sim.set_fault(Fault("rate_limited", retry_after_s=3))
    with pytest.raises(UpstreamStatusError) as info:
        await stt.transcribe(wav(bytes(480), 24_000))
    err = info.value
    assert (err.upstream_status, err.retryable, err.retry_after_s) == (429, True, 3.0)
    assert b"rate_limit_exceeded" in err.body
    assert err.target == "stt-a"


async def test_a_bad_request_is_not_retryable(tts: TtsUpstream) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        await tts.speak("hi", voice="")
    assert info.value.upstream_status == 400 and not info.value.retryable


async def test_nobody_listening_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    upstream = SttUpstream(name="gone", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    with pytest.raises(UpstreamConnectError) as info:
        await upstream.transcribe(b"RIFF")
    assert info.value.cause == "connect"
    await upstream.aclose()


async def test_a_silent_target_times_out_and_sees_the_cancel(
    stt: SttUpstream, stt_sim: SttSim
) -> None:
    await stt_sim.set_fault(Fault("hang_before_first_token"))
    with pytest.raises(UpstreamTimeout) as info:
        await stt.transcribe(wav(bytes(480), 24_000))
    assert info.value.phase == "idle"
    await wait_for(lambda: stt_sim.calls[-1].cancelled_at is not None)


async def test_an_answer_that_is_not_a_transcript_is_a_protocol_error(
    stt: SttUpstream, stt_sim: SttSim
) -> None:
    await stt_sim.set_fault(Fault("malformed"))
    with pytest.raises(UpstreamProtocolError):
        await stt.transcribe(wav(bytes(480), 24_000))


async def test_speech_streams_at_the_targets_rate(tts: TtsUpstream, tts_sim: TtsSim) -> None:
    tts_sim.params = TtsParams(sample_rate=22_050)
    stream = await tts.speak("Sure, two people.", voice="af_heart", speed=1.0)
    assert stream.sample_rate == 22_050
    audio = b"".join([chunk async for chunk in stream.aiter_bytes()])
    await stream.aclose()
    assert len(audio) == 17 * round(22_050 * 0.06) * 2
    call = tts_sim.calls[-1]
    assert call.body == {
        "model": "kokoro",
        "input": "Sure, two people.",
        "voice": "af_heart",
        "response_format": "pcm",
        "speed": 1.0,
    }
    assert call.cancelled_at is None and call.finished_at is not None


async def test_closing_a_stream_early_cancels_it_at_the_target(
    tts: TtsUpstream, tts_sim: TtsSim
) -> None:
    await tts_sim.set_behaviour(Behaviour(ttft_s=0.005, itl_s=0.05))
    stream = await tts.speak("x" * 300, voice="v")
    async for _ in stream.aiter_bytes():
        break
    await stream.aclose()
    await wait_for(lambda: tts_sim.calls[-1].cancelled_at is not None)
    assert tts_sim.calls[-1].finished_at is None


async def test_a_stream_cut_midway_is_a_protocol_error(tts: TtsUpstream, tts_sim: TtsSim) -> None:
    await tts_sim.set_fault(Fault("die_after", after_tokens=2))
    stream = await tts.speak("x" * 100, voice="v")
    with pytest.raises(UpstreamProtocolError):
        async for _ in stream.aiter_bytes():
            pass
    await stream.aclose()


async def test_a_page_instead_of_audio_is_a_protocol_error(
    tts: TtsUpstream, tts_sim: TtsSim
) -> None:
    await tts_sim.set_fault(Fault("malformed"))
    with pytest.raises(UpstreamProtocolError, match="text/html"):
        await tts.speak("hello", voice="v")
