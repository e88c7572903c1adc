"""Audio for the voice tests: real speech (eSpeak NG, 24 kHz, shipped as a WAV),
silence and tones."""

from __future__ import annotations

import io
import math
import wave
from array import array
from pathlib import Path

import av
import numpy as np

SPEECH_WAV = Path(__file__).parent / "data" / "speech-24k.wav"


def speech_24k() -> bytes:
    """ "Book a table for two, please.", spoken by eSpeak NG: PCM16 mono at 24 kHz."""
    with wave.open(str(SPEECH_WAV), "rb") as reader:
        assert reader.getframerate() == 24_000 and reader.getsampwidth() == 2
        return reader.readframes(reader.getnframes())


def silence(ms: int, rate: int = 24_000) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def tone(ms: int, rate: int = 24_000, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    n = rate * ms // 1000
    scale = amplitude * 32767
    step = 2 * math.pi * freq / rate
    return array("h", (int(scale * math.sin(step * i)) for i in range(n))).tobytes()


def frames(pcm: bytes, ms: int = 20, rate: int = 24_000) -> list[bytes]:
    """Split PCM16 into appends of `ms` each, as a real-time client sends them."""
    size = rate * ms // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def decoded(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float samples and their rate, as FFmpeg's demuxer and decoder read them."""
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([f.to_ndarray().reshape(-1, f.samples)[0] for f in frames])
    if samples.dtype.kind == "i":
        samples = samples / 32768.0
    return samples.astype(np.float64), frames[0].sample_rate
