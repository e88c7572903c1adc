"""Audio a client uploads for transcription, read as 16-bit mono PCM and resampled.

Accepted, at any sample rate:

    a WAV file of 16-bit PCM        read by the standard library's `wave` (stereo is mixed
                                    down; a header whose sizes are unknown, as a WAV
                                    written to a pipe has, reads to the end of the data)
    raw 16-bit little-endian PCM    content type `audio/pcm` or `audio/l16` (or a `.pcm`
                                    / `.raw` file name); the rate from the content type's
                                    `rate=` parameter, else the form's `sample_rate`
                                    field, else 24 kHz (the Realtime API's PCM)

Anything else (mp3, ogg, flac, webm, 8- or 24-bit WAV) is refused with the command that
converts it. The engine converts the rate (`sphinx_worker`, off the event loop).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np

from router.errors import BadRequest

#: the Realtime API's PCM rate: raw uploads that do not say their rate are taken at it
DEFAULT_RAW_RATE = 24_000
RAW_TYPES = ("audio/pcm", "audio/l16", "audio/x-raw", "audio/raw")
RAW_SUFFIXES = (".pcm", ".raw")
#: magic numbers of formats we can name in the refusal
_OTHER_FORMATS = {
    b"ID3": "mp3",
    b"\xff\xfb": "mp3",
    b"\xff\xf3": "mp3",
    b"OggS": "ogg",
    b"fLaC": "flac",
    b"\x1aE\xdf\xa3": "webm",
}
_CONVERT = "convert it with `sox IN -b 16 -c 1 OUT.wav` (or ffmpeg -i IN -ac 1 OUT.wav)"


@dataclass(frozen=True, slots=True)
class Audio:
    """Mono 16-bit samples at `rate`."""

    samples: np.ndarray
    rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    def pcm16(self) -> bytes:
        """The audio as raw little-endian 16-bit PCM at `rate`."""
        return np.asarray(self.samples, dtype="<i2").tobytes()


def read_audio(
    data: bytes, *, content_type: str = "", filename: str = "", sample_rate: str | None = None
) -> Audio:
    """The upload as mono PCM; `BadRequest` (naming the fix) when it is not one we read."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _read_wav(data)
    media, params = _media_type(content_type)
    if media in RAW_TYPES or filename.lower().endswith(RAW_SUFFIXES):
        return _read_raw(data, params.get("rate") or sample_rate)
    for magic, name in _OTHER_FORMATS.items():
        if data.startswith(magic):
            raise BadRequest(f"this engine reads 16-bit PCM WAV or raw PCM, not {name}: {_CONVERT}")
    raise BadRequest(
        "this engine reads 16-bit PCM WAV, or raw 16-bit PCM sent as audio/pcm;rate=N: " + _CONVERT
    )


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    media, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for part in rest:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def _read_wav(data: bytes) -> Audio:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            width, channels, rate = (
                reader.getsampwidth(),
                reader.getnchannels(),
                reader.getframerate(),
            )
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise BadRequest(f"not a PCM WAV file this engine can read ({exc}): {_CONVERT}") from exc
    if width != 2:
        raise BadRequest(f"this engine reads 16-bit WAV, not {8 * width}-bit: {_CONVERT}")
    if not 1_000 <= rate <= 192_000:
        raise BadRequest(f"a WAV sample rate of {rate} Hz is not audio this engine reads")
    usable = len(frames) - len(frames) % (2 * channels)
    samples = np.frombuffer(frames[:usable], dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return Audio(samples, rate)


def _read_raw(data: bytes, rate_text: str | None) -> Audio:
    try:
        rate = int(rate_text) if rate_text else DEFAULT_RAW_RATE
    except ValueError as exc:
        raise BadRequest(
            f"the sample rate must be a whole number of Hz, not {rate_text!r}"
        ) from exc
    if not 1_000 <= rate <= 192_000:
        raise BadRequest(f"a sample rate of {rate} Hz is not audio this engine reads")
    usable = len(data) - len(data) % 2
    return Audio(np.frombuffer(data[:usable], dtype="<i2"), rate)
