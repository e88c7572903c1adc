"""Uploads read as mono 16-bit PCM: WAV at any rate, raw PCM with its rate, and a refusal
that names the fix for anything else."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from router.errors import BadRequest
from router.speech.pcm import DEFAULT_RAW_RATE, read_audio

pytest.importorskip("soxr")


def wav_file(frames: bytes, *, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(frames)
    return out.getvalue()


def test_a_wav_keeps_its_rate_and_samples() -> None:
    samples = np.arange(-500, 500, dtype="<i2")
    audio = read_audio(wav_file(samples.tobytes(), rate=44_100))
    assert audio.rate == 44_100
    assert audio.pcm16() == samples.tobytes()
    assert audio.duration_s == pytest.approx(1000 / 44_100)


def test_stereo_is_mixed_down_to_mono() -> None:
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, -200, dtype="<i2")
    stereo = np.stack([left, right], axis=1).reshape(-1).tobytes()
    audio = read_audio(wav_file(stereo, channels=2))
    assert np.array_equal(audio.samples, np.full(100, 400, dtype="<i2"))


def test_a_piped_wav_whose_header_does_not_know_its_length_reads_to_the_end() -> None:
    data = bytearray(wav_file(b"\x01\x00" * 300, rate=22_050))
    data[4:8] = data[40:44] = (0x7FFFFFFF).to_bytes(4, "little")  # as espeak-ng --stdout
    assert len(read_audio(bytes(data)).samples) == 300


@pytest.mark.parametrize(
    ("content_type", "filename", "field", "rate"),
    [
        ("audio/pcm;rate=16000", "a", None, 16_000),
        ("audio/L16; rate=8000; channels=1", "a", None, 8_000),
        ("application/octet-stream", "utterance.pcm", "44100", 44_100),
        ("audio/pcm", "a", None, DEFAULT_RAW_RATE),
    ],
)
def test_raw_pcm_takes_its_rate_from_the_type_the_form_or_the_realtime_default(
    content_type: str, filename: str, field: str | None, rate: int
) -> None:
    audio = read_audio(
        b"\x10\x00" * 50 + b"\x01",  # an odd last byte is not half a sample
        content_type=content_type,
        filename=filename,
        sample_rate=field,
    )
    assert (audio.rate, len(audio.samples)) == (rate, 50)


@pytest.mark.parametrize(
    ("data", "kwargs", "says"),
    [
        (b"ID3\x04" + b"\0" * 32, {}, "not mp3"),
        (b"OggS" + b"\0" * 32, {}, "not ogg"),
        (b"fLaC" + b"\0" * 32, {}, "not flac"),
        (b"hello world", {}, "raw 16-bit PCM sent as audio/pcm;rate=N"),
        (wav_file(b"\x80" * 10, width=1), {}, "16-bit WAV, not 8-bit"),
        (b"\0" * 10, {"content_type": "audio/pcm;rate=fast"}, "a whole number of Hz"),
        (b"\0" * 10, {"content_type": "audio/pcm;rate=100"}, "100 Hz"),
        (b"RIFF\0\0\0\0WAVEjunk", {}, "not a PCM WAV file"),
    ],
)
def test_what_it_cannot_read_is_refused_with_the_fix(
    data: bytes, kwargs: dict[str, str], says: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        read_audio(data, **kwargs)
    assert says in caught.value.message
