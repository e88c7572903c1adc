"""Audio formats of the Realtime protocol, and the one place G.711 is decoded.

    {"type": "audio/pcm", "rate": 24000}   16-bit little-endian mono PCM at 24 kHz
    {"type": "audio/pcmu"}                 G.711 mu-law, 8 kHz, a byte a sample
    {"type": "audio/pcma"}                 G.711 A-law, 8 kHz

G.711 goes through `audioop`'s C code: the standard library's module on 3.11 and
3.12, where importing it warns that it is deprecated (it left the standard library
in 3.13, PEP 594), and the `audioop-lts` package on 3.13+, a maintained port of the
same module under the same name (a dependency with a `python_version >= '3.13'`
marker). The deprecation warning is silenced around that import only: the module is
a tested C implementation of both laws in both directions, where the alternatives
are unmaintained (`g711`, last released 2021) or need a file object per 20 ms
frame (`soundfile`'s RAW mode).

`wav()` wraps PCM16 for speech-to-text APIs, which accept files, not raw PCM
(OpenAI: flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm), with the standard
library's `wave` writer.
"""

from __future__ import annotations

import io
import warnings
import wave
from dataclasses import dataclass
from typing import Literal, get_args

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

AudioType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
AUDIO_TYPES: frozenset[str] = frozenset(get_args(AudioType))
#: the Realtime API's PCM rate, in and out
PCM_RATE = 24_000
G711_RATE = 8_000


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One side's audio format; `decode` and `encode` convert to and from PCM16 at `rate`."""

    type: AudioType = "audio/pcm"

    @property
    def rate(self) -> int:
        return PCM_RATE if self.type == "audio/pcm" else G711_RATE

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.type == "audio/pcm" else 1

    def samples(self, n_bytes: int) -> int:
        return n_bytes // self.bytes_per_sample

    def duration_ms(self, n_bytes: int) -> float:
        return self.samples(n_bytes) * 1000.0 / self.rate

    def decode(self, data: bytes) -> bytes:
        """This format's bytes as PCM16 at `rate` (PCM: whole samples only)."""
        if self.type == "audio/pcmu":
            return audioop.ulaw2lin(data, 2)
        if self.type == "audio/pcma":
            return audioop.alaw2lin(data, 2)
        return data[: len(data) - len(data) % 2]

    def encode(self, pcm16: bytes) -> bytes:
        """PCM16 at `rate` in this format."""
        if self.type == "audio/pcmu":
            return audioop.lin2ulaw(pcm16, 2)
        if self.type == "audio/pcma":
            return audioop.lin2alaw(pcm16, 2)
        return pcm16


def wav(pcm16: bytes, rate: int) -> bytes:
    """A WAV file of mono 16-bit PCM."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm16)
    return out.getvalue()


def pcm_ms(n_bytes: int, rate: int) -> float:
    """Milliseconds of 16-bit mono PCM."""
    return (n_bytes // 2) * 1000.0 / rate
