"""A text-to-speech server like OpenAI's, Kokoro-FastAPI's or speaches':
`POST /v1/audio/speech`, streaming raw PCM.

The request is OpenAI's JSON: `model`, `input`, `voice` (required), `speed`
(0.25-4), `response_format` (`pcm`: 16-bit mono little-endian at
`params.sample_rate`, 24 kHz like OpenAI's, or another rate such as Piper's 22050
to exercise resampling; or `wav`, the same in a WAV file), `stream_format` (`audio`
only). The audio is real PCM whose length follows the text: each character of
`input` is `ms_per_char / speed` of a 440 Hz tone (a space is that much silence),
so a test can tell how much of the text a stretch of audio carries.

The first chunk is sent `Behaviour.ttft_s` after the request arrived (or
`x-sim-ttft-ms`), then one chunk of `chunk_ms` of audio every `Behaviour.itl_s`
(or `x-sim-itl-ms`): the default streams four times faster than real time.

Faults after the request: `hang_before_first_token` sends the headers and no
audio, `die_after=N` (and `error_event_after=N`) cuts the connection after N
chunks, `trickle=S` spaces chunks S seconds apart, `reset_after_headers` resets
the connection after the headers, `malformed` answers 200 with an HTML page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from aiohttp import web

from router.sim.behaviour import ITL_HEADER, Fault
from router.sim.openai_server import _ms_header
from router.sim.speech import BadSpeechRequest, SpeechRecord, SpeechSim
from router.voice.codec import wav

FORMATS = ("pcm", "wav")
TONE_HZ = 440.0


@dataclass(frozen=True, slots=True)
class TtsParams:
    sample_rate: int = 24_000
    chunk_ms: int = 40
    ms_per_char: float = 60.0
    amplitude: float = 0.3


def speech_pcm(text: str, params: TtsParams, speed: float = 1.0) -> bytes:
    """The simulator's audio for `text`: a tone per character, silence per space."""
    rate = params.sample_rate
    per_char = max(1, round(rate * params.ms_per_char / 1000.0 / speed))
    voiced = np.repeat(np.array([not c.isspace() for c in text], dtype=bool), per_char)
    t = np.arange(len(voiced)) / rate
    wave_ = np.sin(2 * np.pi * TONE_HZ * t) * (params.amplitude * 32767) * voiced
    pcm: bytes = wave_.astype("<i2").tobytes()
    return pcm


class TtsSim(SpeechSim):
    path: ClassVar[str] = "/v1/audio/speech"
    prefix: ClassVar[str] = "tts-sim"

    def __init__(self, params: TtsParams | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = params or TtsParams()

    def set_params(self, **changes: Any) -> None:
        self.params = replace(self.params, **changes)

    async def _parse(self, request: web.Request, record: SpeechRecord) -> None:
        try:
            body = await request.json()
        except ValueError as exc:
            raise BadSpeechRequest("the body must be JSON") from exc
        if not isinstance(body, dict):
            raise BadSpeechRequest("the body must be a JSON object")
        record.body = body
        for field in ("model", "input", "voice"):
            if not body.get(field):
                raise BadSpeechRequest(f"'{field}' is required")
        if not isinstance(body["input"], str) or len(body["input"]) > 4096:
            raise BadSpeechRequest("'input' must be a string of at most 4096 characters")
        if body.get("response_format", "mp3") not in FORMATS:
            raise BadSpeechRequest(f"the simulator speaks response_format {' or '.join(FORMATS)}")
        if body.get("stream_format", "audio") != "audio":
            raise BadSpeechRequest("the simulator streams stream_format 'audio' only")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise BadSpeechRequest("'speed' must be between 0.25 and 4.0")
        record.text = body["input"]

    async def _answer(
        self, request: web.Request, record: SpeechRecord, fault: Fault, delay_s: float
    ) -> web.StreamResponse:
        params = self.params
        body = record.body
        pcm = speech_pcm(record.text, params, float(body.get("speed", 1.0)))
        is_wav = body["response_format"] == "wav"
        audio = wav(pcm, params.sample_rate) if is_wav else pcm
        kind = fault.kind
        if kind == "malformed":
            await self._wait_until(record, delay_s)
            record.status = 200
            record.finished_at = self._clock()
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        response = web.StreamResponse(
            headers={"Content-Type": "audio/wav" if is_wav else "audio/pcm"}
        )
        record.status = 200
        await response.prepare(request)
        if kind == "reset_after_headers":
            self._cut(request, record, reset=True)
            return response
        if kind == "hang_before_first_token":
            await self._hang()
        chunk = params.sample_rate * params.chunk_ms // 1000 * 2
        gap = (
            fault.trickle_s
            if kind == "trickle"
            else _ms_header(request.headers, ITL_HEADER, self.behaviour.itl_s)
        )
        limit = fault.after_tokens if kind in ("die_after", "error_event_after") else None
        for n, start in enumerate(range(0, len(audio), chunk)):
            if limit is not None and n >= limit:
                self._cut(request, record)
                return response
            await self._wait_until(record, delay_s + n * gap)
            piece = audio[start : start + chunk]
            await response.write(piece)
            if n == 0:
                record.first_token_at = self._clock()
            record.tokens_sent = n + 1
            record.audio_bytes += len(piece)
            record.audio_ms = record.audio_bytes / 2 * 1000.0 / params.sample_rate
        await response.write_eof()
        record.finished_at = self._clock()
        return response
