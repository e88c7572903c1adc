"""Speech `response_format`s (router/voice/encode.py): every format is streamed as it is
encoded, nothing sent is rewritten, and what arrives decodes (by FFmpeg, through PyAV,
not by the encoder's own code path) to the audio that went in."""

from __future__ import annotations

import numpy as np
import pytest

from router.errors import BadRequest
from router.voice.encode import CODECS, SpeechEncoder, speech_format
from tests.voice.audio import decoded, speech_24k, tone

RATE = 24_000


def streamed(response_format: str, pcm: bytes, chunk: int) -> tuple[list[bytes], bytes]:
    encoder = SpeechEncoder(response_format, RATE)
    pieces = [encoder.push(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk)]
    return pieces, encoder.flush()


@pytest.mark.parametrize("response_format", sorted(CODECS))
def test_each_format_streams_and_decodes_to_the_audio_sent(response_format: str) -> None:
    pcm = tone(1000, RATE, freq=440.0) + speech_24k()
    pieces, tail = streamed(response_format, pcm, chunk=4801)  # odd: a byte carried over
    # streamed: most of the answer leaves before the end, not all of it at flush
    assert sum(map(len, pieces)) > len(tail)
    assert sum(1 for p in pieces[:5] if p) >= 3, [len(p) for p in pieces[:5]]
    samples, rate = decoded(b"".join(pieces) + tail)
    seconds_in = len(pcm) / 2 / RATE
    assert abs(len(samples) / rate - seconds_in) < 0.1  # encoder padding only
    # the first second is the 440 Hz tone: its spectrum peaks there
    first = samples[rate // 10 : rate * 9 // 10]
    peak = np.argmax(np.abs(np.fft.rfft(first))) * rate / len(first)
    assert abs(peak - 440.0) < 5.0, peak


def test_a_client_that_leaves_frees_the_encoder_without_a_tail() -> None:
    encoder = SpeechEncoder("mp3", RATE)
    assert encoder.push(tone(200, RATE))  # 200 ms in: MP3 frames out before the end
    encoder.close()
    encoder.close()  # twice is harmless
    assert encoder.flush() == b""


def test_response_format_defaults_to_mp3_as_openai_and_refuses_the_unknown() -> None:
    assert speech_format(None) == "mp3"
    assert speech_format("pcm") == "pcm"
    assert speech_format("opus") == "opus"
    with pytest.raises(BadRequest, match="mp3, opus, aac, flac, wav, pcm"):
        speech_format("ogg")
    with pytest.raises(BadRequest):
        speech_format(3)
