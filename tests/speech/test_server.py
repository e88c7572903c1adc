"""The local engines behind OpenAI's audio endpoints, driven by the official `openai` SDK:
eSpeak NG's speech transcribed by PocketSphinx, speech streamed back, bad input refused in
OpenAI's shape, a client that leaves kills its eSpeak NG process, and the server keeps
answering while PocketSphinx decodes."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.harness import LoopThread, wait_until
from tests.speech.speaking import (
    SENTENCES,
    needs_engines,
    pcm24,
    say,
    shared_words,
    voiced_share,
)

if TYPE_CHECKING:
    from router.speech.server import SpeechServer

pytestmark = [pytest.mark.voice, needs_engines]


@pytest.fixture(scope="module")
def api(speech_server: SpeechServer) -> Iterator[OpenAI]:
    """One SDK client, closed at the end: clients left to the collector close their
    sockets whenever it runs, as a ResourceWarning in whichever test is running then."""
    with OpenAI(
        base_url=speech_server.base_url, api_key="unused", max_retries=0, timeout=60
    ) as sdk:
        yield sdk


def test_pocketsphinx_transcribes_what_espeak_said(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    shares = []
    for sentence in SENTENCES:
        heard = api.audio.transcriptions.create(
            model="pocketsphinx", file=("said.wav", say(sentence), "audio/wav")
        )
        shares.append(shared_words(sentence, heard.text))
        assert shares[-1] >= 0.6, (sentence, heard.text)
    assert sum(shares) / len(shares) >= 0.8, shares


def test_raw_pcm_at_24khz_is_resampled_and_transcribed(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    heard = api.audio.transcriptions.create(
        model="pocketsphinx", file=("said.pcm", pcm24(say(SENTENCES[0])), "audio/pcm;rate=24000")
    )
    assert shared_words(SENTENCES[0], heard.text) >= 0.8, heard.text


def test_text_and_verbose_json_answers(speech_server: SpeechServer, api: OpenAI) -> None:
    wav = say(SENTENCES[1])
    text = api.audio.transcriptions.create(
        model="pocketsphinx", file=("said.wav", wav), response_format="text"
    )
    assert isinstance(text, str)
    assert shared_words(SENTENCES[1], text) >= 0.8
    verbose = api.audio.transcriptions.create(
        model="pocketsphinx",
        file=("said.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert verbose.text.strip() == text.strip()
    assert 1.0 < verbose.duration < 5.0
    assert verbose.words
    spoken = [w.word for w in verbose.words]
    assert " ".join(spoken) == verbose.text
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts)
    assert verbose.words[-1].end <= verbose.duration


def test_speech_streams_pcm_at_24khz_that_contains_speech(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    text = "Sure, I can help you with that. The meeting starts at ten o'clock."
    chunks = []
    with api.audio.speech.with_streaming_response.create(
        model="espeak-ng", voice="alloy", input=text, response_format="pcm"
    ) as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        assert "rate=24000" in response.headers["content-type"]
        chunks = list(response.iter_bytes())
    pcm = b"".join(chunks)
    seconds = len(pcm) / 2 / 24_000
    assert len(chunks) > 1  # streamed, not one body
    assert 2.5 < seconds < 12, seconds  # about the length of the sentences at 130 words a minute
    assert voiced_share(pcm, 24_000) > 0.4


def test_what_espeak_says_pocketsphinx_writes_back(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    with api.audio.speech.with_streaming_response.create(
        model="espeak-ng", voice="marin", input=SENTENCES[3], response_format="pcm"
    ) as response:
        pcm = response.read()
    heard = api.audio.transcriptions.create(
        model="pocketsphinx", file=("answer.pcm", pcm, "audio/pcm;rate=24000")
    )
    assert shared_words(SENTENCES[3], heard.text) >= 0.8, heard.text


def test_another_engines_voice_is_spoken_with_the_default(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    """A cascade whose TTS route falls back from Kokoro to eSpeak NG still gets speech."""
    for asked, spoken in (("af_heart", "en-us"), ("nova", "en-us+f3"), ("en-gb", "en-gb")):
        with api.audio.speech.with_streaming_response.create(
            model="espeak-ng", voice=asked, input="Hello.", response_format="pcm"
        ) as response:
            assert response.headers["x-espeak-voice"] == spoken
            assert voiced_share(response.read(), 24_000) > 0.2


def test_wav_is_a_whole_file_at_espeaks_rate(speech_server: SpeechServer, api: OpenAI) -> None:
    import io
    import wave

    audio = api.audio.speech.create(
        model="espeak-ng", voice="nova", input="Hello there.", response_format="wav"
    )
    with wave.open(io.BytesIO(audio.content)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        assert reader.getframerate() == 22_050
        frames = reader.readframes(reader.getnframes())
        assert 0.5 < reader.getnframes() / 22_050 < 3
    assert voiced_share(frames, 22_050) > 0.3


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"voice": "en-us; rm -rf /"}, "a voice is a name of letters"),
        ({"response_format": "mp3"}, "response_format must be one of pcm, wav"),
        ({"input": ""}, "'input' is required"),
        ({"input": "x" * 4097}, "at most 4096"),
        ({"speed": 9.0}, "'speed' must be"),
    ],
)
def test_bad_speech_requests_get_openai_shaped_errors(
    speech_server: SpeechServer, kwargs: dict[str, object], says: str, api: OpenAI
) -> None:
    request: dict[str, object] = {"model": "espeak-ng", "voice": "alloy", "input": "Hi."}
    with pytest.raises(openai.BadRequestError) as caught:
        api.audio.speech.create(**{**request, **kwargs})  # type: ignore[arg-type]
    assert says in caught.value.message
    assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_audio_it_cannot_read_is_refused_with_the_fix(
    speech_server: SpeechServer, api: OpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.audio.transcriptions.create(model="m", file=("a.mp3", b"ID3\x03" + b"\0" * 64))
    assert "not mp3" in caught.value.message
    assert "sox" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        api.audio.transcriptions.create(
            model="m", file=("a.wav", say("hello")), response_format="srt"
        )
    assert "response_format must be one of json, text, verbose_json" in caught.value.message
    answer = httpx.post(f"{speech_server.base_url}/audio/transcriptions", data={"model": "m"})
    assert answer.status_code == 400
    assert "send the audio as multipart/form-data" in answer.json()["error"]["message"]


def test_a_client_that_goes_away_kills_its_espeak_process(
    speech_server: SpeechServer, loop_thread: LoopThread
) -> None:
    tts = speech_server.tts
    assert tts is not None
    killed = tts.killed
    long_text = "This answer goes on and on, far longer than anyone will listen. " * 60
    with httpx.stream(
        "POST",
        f"{speech_server.base_url}/audio/speech",
        json={"model": "espeak-ng", "voice": "alloy", "input": long_text, "response_format": "pcm"},
        timeout=30,
    ) as response:
        # the iterator is kept: one dropped after its first chunk closes the response, and
        # the client would be gone (racing the check below) before it meant to leave
        chunks = response.iter_raw()
        assert next(chunks)
        assert loop_thread.call(lambda: tts.running) == 1
    # The client read one chunk of minutes of audio and hung up: eSpeak NG must not go on.
    assert wait_until(loop_thread, lambda: tts.running == 0 and tts.killed == killed + 1)


def test_the_server_answers_while_pocketsphinx_decodes(
    speech_server: SpeechServer, loop_thread: LoopThread, api: OpenAI
) -> None:
    stt = speech_server.stt
    assert stt is not None
    long_wav = say(" ".join(SENTENCES[:2]))
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(
            api.audio.transcriptions.create(model="m", file=("long.wav", long_wav)).text
        )
    )
    worker.start()
    try:
        assert wait_until(loop_thread, lambda: stt.in_flight == 1)
        health = httpx.get(f"{speech_server.base_url.removesuffix('/v1')}/health", timeout=5)
        assert health.status_code == 200
        # answered while the utterance was still decoding: the decoder is off the loop
        assert loop_thread.call(lambda: stt.in_flight) == 1
    finally:
        worker.join(60)
    assert result
    assert result[0]


def test_a_full_queue_answers_503_with_retry_after(
    speech_server: SpeechServer, loop_thread: LoopThread, api: OpenAI
) -> None:
    stt = speech_server.stt
    assert stt is not None
    queued = stt.max_queued
    stt.max_queued = 0
    long_wav = say(" ".join(SENTENCES[:2]))
    worker = threading.Thread(
        target=lambda: api.audio.transcriptions.create(model="m", file=("long.wav", long_wav))
    )
    worker.start()
    try:
        assert wait_until(loop_thread, lambda: stt.in_flight == 1)
        with pytest.raises(openai.InternalServerError) as caught:
            api.audio.transcriptions.create(model="m", file=("short.wav", say("hello")))
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "1"
        assert "PocketSphinx is busy" in caught.value.message
    finally:
        worker.join(60)
        stt.max_queued = queued


@pytest.mark.parametrize("cancels", [1, 2], ids=["cancelled", "cancelled_again_while_killing"])
def test_a_cancelled_wait_leaves_no_process(
    speech_server: SpeechServer, loop_thread: LoopThread, cancels: int
) -> None:
    """A speech request cancelled while its process runs (a barge-in in the cascade). And
    cancelled again while its `finally` kills eSpeak NG, as aiohttp may cancel a handler:
    the process is still reaped and its pipes closed (else a ResourceWarning when it is
    collected)."""
    tts = speech_server.tts
    assert tts is not None

    killed = tts.killed
    pids: list[int] = []

    async def cancel_mid_speech() -> None:
        async def listen() -> None:
            async with tts.speak("One two three four five six. " * 200) as audio:
                pids.append(audio.pid)
                async for _ in audio:
                    await asyncio.sleep(3600)

        task = asyncio.create_task(listen())
        await asyncio.sleep(0.2)
        assert tts.running == 1
        task.cancel()
        if cancels == 2:
            await asyncio.sleep(0)  # into the kill's reap, then cancelled again
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    loop_thread.run(cancel_mid_speech())
    assert wait_until(loop_thread, lambda: tts.running == 0 and not tts.reaping)
    assert tts.killed == killed + 1
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pids[0], 0)
    gc.collect()  # an unclosed pipe would warn here, and the warning fails the test
