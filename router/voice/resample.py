"""Streaming sample-rate conversion of 16-bit mono PCM over libsoxr (`soxr`).

One `Resampler` per stream: chunks go in as they arrive (an odd trailing byte is
kept for the next chunk), converted samples come out, and `flush()` drains what
the filter still holds at the end. libsoxr's longer filters look ahead: at `HQ`
and `MQ`, 22.05 -> 24 kHz, the first 40 ms chunk yields nothing at all, so the first
audio would wait for the TTS's second chunk (10-40 ms more to the caller's first
audio, measured). `LQ` and `QQ` answer the first chunk at once (938 and 958 of
960 samples): `LQ` (`SPEECH_QUALITY`) is for what a caller hears, `QQ` (cubic
interpolation) for the VAD's 24 -> 16 kHz path, which only decides speech or
silence in the speech band.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
#: for audio a caller hears: no chunk held back at the start of a stream
SPEECH_QUALITY: Quality = "LQ"


class Resampler:
    __slots__ = ("_carry", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._carry = b""
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )

    def push(self, pcm16: bytes) -> bytes:
        """Convert the next chunk; returns the samples ready so far."""
        if self._carry:
            pcm16 = self._carry + pcm16
        odd = len(pcm16) % 2
        self._carry = pcm16[-1:] if odd else b""
        whole = pcm16[: len(pcm16) - odd]
        if self._stream is None:
            return whole
        samples = np.frombuffer(whole, dtype="<i2")
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """The end of the stream: whatever the filter still holds (an odd byte is dropped)."""
        self._carry = b""
        if self._stream is None:
            return b""
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        return out.astype("<i2", copy=False).tobytes()
