"""OpenAI's speech `response_format`s, made from the 24 kHz 16-bit mono PCM a speech route
streams: `pcm` as it is; `mp3`, `opus` (in Ogg), `aac` (ADTS), `flac` and `wav` encoded by
FFmpeg's codecs through PyAV (`av`), and streamed as they are encoded.

The container is written to a sink that cannot seek, so nothing already sent is ever
rewritten: the muxers write a stream's header up front (a WAV's sizes say "unknown", as
streamed WAV does), Ogg pages are cut every 20 ms instead of every second, and the
encoders' own frame sizes (1152 samples for MP3, 1024 for AAC, 20 ms for Opus) are met
by PyAV buffering what a chunk leaves over. One `SpeechEncoder` per answer; `push()`
each chunk of PCM, then `flush()` once; `apush()`/`aflush()` do it in a worker thread for
the lossy codecs (MP3 and AAC take ~15 ms of CPU per second of audio, ~0.6 ms per 40 ms
chunk: too long to hold the event loop other streams' first tokens wait on; FFmpeg
releases the GIL for part of it). WAV, FLAC and PCM cost little and stay on the loop.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import anyio
import av
import numpy as np
from av.audio.stream import AudioStream

from router.errors import BadRequest

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]


@dataclass(frozen=True, slots=True)
class Codec:
    container: str
    encoder: str
    content_type: str
    options: tuple[tuple[str, str], ...] = ()
    #: bits per second (0: the encoder's default)
    bit_rate: int = 0
    #: costly enough to encode off the event loop
    heavy: bool = False


#: each `response_format` and how it is made; `pcm` is the stream itself
CODECS: dict[str, Codec] = {
    "mp3": Codec("mp3", "libmp3lame", "audio/mpeg", bit_rate=64_000, heavy=True),
    "opus": Codec("ogg", "libopus", "audio/ogg", (("page_duration", "20000"),), heavy=True),
    "aac": Codec("adts", "aac", "audio/aac", bit_rate=64_000, heavy=True),
    "flac": Codec("flac", "flac", "audio/flac"),
    "wav": Codec("wav", "pcm_s16le", "audio/wav"),
}
FORMATS: tuple[str, ...] = ("mp3", "opus", "aac", "flac", "wav", "pcm")
PCM_CONTENT_TYPE = "audio/pcm"


def speech_format(value: object) -> str:
    """A request's `response_format` (OpenAI's default, `mp3`, when it is absent)."""
    if value is None:
        return "mp3"
    if value not in FORMATS:
        raise BadRequest(f"'response_format' must be one of {', '.join(FORMATS)}, not {value!r}")
    return str(value)


class _Sink(io.RawIOBase):
    """What the muxer writes, taken as it comes; it cannot seek, so no header is
    rewritten after its bytes have gone to the client."""

    def __init__(self) -> None:
        super().__init__()
        self._out = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._out += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out


class SpeechEncoder:
    """16-bit mono PCM at `rate` in, the chosen format's bytes out, streamed."""

    def __init__(self, response_format: str, rate: int) -> None:
        codec = CODECS[response_format]
        self.content_type = codec.content_type
        self._rate = rate
        self._pts = 0
        self._carry = b""
        self._sink = _Sink()
        self._container = av.open(
            self._sink, mode="w", format=codec.container, options=dict(codec.options)
        )
        stream = self._container.add_stream(codec.encoder, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        if codec.bit_rate:
            stream.bit_rate = codec.bit_rate
        self._stream = stream
        self._heavy = codec.heavy
        self._closed = False

    def push(self, pcm16: bytes) -> bytes:
        """Encode the next chunk; the container's bytes ready so far."""
        data = self._carry + pcm16
        usable = len(data) & ~1
        self._carry = data[usable:]
        if usable:
            samples = np.frombuffer(data[:usable], dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    async def apush(self, pcm16: bytes) -> bytes:
        """`push()`, in a worker thread for a lossy codec."""
        if not self._heavy:
            return self.push(pcm16)
        return await anyio.to_thread.run_sync(self.push, pcm16)

    async def aflush(self) -> bytes:
        """`flush()`, in a worker thread for a lossy codec."""
        if not self._heavy:
            return self.flush()
        return await anyio.to_thread.run_sync(self.flush)

    def flush(self) -> bytes:
        """The encoder's last frames and the container's end."""
        if not self._closed:
            self._closed = True
            self._container.mux(self._stream.encode(None))
            self._container.close()
        return self._sink.take()

    def close(self) -> None:
        """Drop an unfinished answer (a client that left): free the codec."""
        if not self._closed:
            self._closed = True
            self._container.close()
