"""The local speech engines behind OpenAI's audio endpoints (aiohttp's server).

    POST /v1/audio/transcriptions   PocketSphinx   multipart: file, model, language,
                                                   response_format json|text|verbose_json
    POST /v1/audio/speech           eSpeak NG      JSON: model, input, voice, speed,
                                                   response_format pcm|wav
    GET  /v1/models                 the two engines
    GET  /health                    200 while serving

So a policy names them as any `kind: stt` / `kind: tts` target. The `model` a client sends
is required, as OpenAI requires it, and is answered by the one engine whatever it says.

`pcm` is streamed as eSpeak NG synthesises it: 16-bit mono little-endian at `pcm_rate`
(24 kHz, like OpenAI's `pcm`; converted from eSpeak NG's 22050 Hz by the cascade's own
streaming `Resampler`, at the setting that answers the first chunk at once). `wav` is eSpeak NG's
own 22050 Hz file, sent whole with its true length (synthesis runs hundreds of times
faster than real time, so little is lost by waiting for the end). A request that omits
`response_format` gets `wav`: OpenAI's default, mp3, is not spoken here.

Errors come back in OpenAI's shape, `{"error": {"message", "type", "code"}}`, logged at
INFO; an engine that is full answers 503 with Retry-After. A client that goes away
cancels its handler (aiohttp's `handler_cancellation`): its eSpeak NG process is killed
and a transcription still queued is dropped.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, Self

from aiohttp import web

from router.errors import BadRequest, EngineBusy, FirstTokenError, PayloadTooLarge
from router.speech.espeak import ESPEAK_RATE, Espeak
from router.speech.pcm import read_audio
from router.speech.sphinx import Sphinx
from router.speech.sphinx_worker import Recognition
from router.voice.codec import wav
from router.voice.resample import SPEECH_QUALITY, Resampler

log = logging.getLogger("firsttoken.speech")

#: OpenAI's limits: 25 MB uploads, 4096 characters to speak
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_INPUT_CHARS = 4096
OPENAI_PCM_RATE = 24_000
STT_MODEL = "pocketsphinx-en-us"
TTS_MODEL = "espeak-ng"
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
SPEECH_FORMATS = ("pcm", "wav")
#: the eSpeak NG voice that spoke (a voice unknown here is spoken with the default)
VOICE_HEADER = "X-Espeak-Voice"


def error_response(exc: FirstTokenError) -> web.Response:
    headers = {"Retry-After": f"{exc.retry_after_s:g}"} if isinstance(exc, EngineBusy) else {}
    return web.Response(
        status=exc.status, body=exc.to_json(), content_type="application/json", headers=headers
    )


class SpeechServer:
    """Use as `async with SpeechServer(stt=..., tts=...) as server: server.base_url`."""

    def __init__(
        self,
        *,
        stt: Sphinx | None,
        tts: Espeak | None,
        host: str = "127.0.0.1",
        port: int = 0,
        pcm_rate: int = OPENAI_PCM_RATE,
    ) -> None:
        self.stt = stt
        self.tts = tts
        self.host = host
        self.port = port
        self.pcm_rate = pcm_rate
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        """Start the engines, then listen (raises `EngineError` if an engine cannot)."""
        if self.tts is not None:
            await self.tts.start()
        if self.stt is not None:
            await self.stt.start()
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        sock = socket.create_server((self.host, self.port), reuse_port=False)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.stt is not None:
            await self.stt.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "stt": self.stt is not None, "tts": self.tts is not None}
        )

    async def _models(self, request: web.Request) -> web.Response:
        names = [STT_MODEL] * (self.stt is not None) + [TTS_MODEL] * (self.tts is not None)
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "local"} for n in names]
        return web.json_response({"object": "list", "data": data})

    # -- speech to text -------------------------------------------------------------------

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.stt is None:
                raise BadRequest("this server runs no speech-to-text engine")
            fields, upload = await _form(request)
            response_format = _choice(fields, "response_format", TRANSCRIPT_FORMATS, "json")
            language = fields.get("language", "en").lower()
            if language not in ("en", "english", "en-us"):
                raise BadRequest(f"PocketSphinx transcribes English (en) here, not {language!r}")
            if fields.get("stream", "false").lower() == "true":
                raise BadRequest("this engine does not stream transcripts: leave out 'stream'")
            data, content_type, filename = upload
            audio = read_audio(
                data,
                content_type=content_type,
                filename=filename,
                sample_rate=fields.get("sample_rate"),
            )
            result = await self.stt.transcribe(audio)
        except FirstTokenError as exc:
            log.info("transcription refused: %s", exc.message)
            return error_response(exc)
        words = "word" in fields.get("timestamp_granularities[]", "")
        return _transcript_response(result, response_format, words=words)

    # -- text to speech -------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.tts is None:
                raise BadRequest("this server runs no text-to-speech engine")
            body = await _json(request)
            text, voice, speed, response_format = _speech_request(body)
            async with self.tts.speak(text, voice=voice, speed=speed) as audio:
                voice_header = {VOICE_HEADER: audio.voice}
                if response_format == "wav":
                    pcm = b"".join([chunk async for chunk in audio])
                    return web.Response(
                        body=wav(pcm, ESPEAK_RATE), content_type="audio/wav", headers=voice_header
                    )
                pieces = aiter(audio)
                first = await anext(pieces, b"")  # an engine failure before any audio is a 500
                response = web.StreamResponse(
                    headers={"Content-Type": f"audio/pcm;rate={self.pcm_rate}", **voice_header}
                )
                await response.prepare(request)
                resample = Resampler(audio.rate, self.pcm_rate, SPEECH_QUALITY)
                try:
                    await response.write(resample.push(first))
                    async for chunk in pieces:
                        await response.write(resample.push(chunk))
                    await response.write(resample.flush())
                except FirstTokenError as exc:  # after the headers: cut, never a clean end
                    log.warning("speech cut short: %s", exc.message)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write_eof()
                return response
        except FirstTokenError as exc:
            log.info("speech refused: %s", exc.message)
            return error_response(exc)


async def _form(request: web.Request) -> tuple[dict[str, str], tuple[bytes, str, str]]:
    """The multipart form's text fields, and its file (data, content type, name)."""
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("send the audio as multipart/form-data with a 'file' field")
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the upload is over {MAX_UPLOAD_BYTES} bytes") from exc
    except ValueError as exc:
        raise BadRequest(f"the multipart form could not be read ({exc})") from exc
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        raise BadRequest("'file' is required: an audio file in a multipart form")
    with upload.file:  # aiohttp spools uploads to a temporary file
        data = upload.file.read()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    words = [v for k, v in form.items() if k == "timestamp_granularities[]"]
    fields["timestamp_granularities[]"] = ",".join(str(w) for w in words)
    if not fields.get("model"):
        raise BadRequest("'model' is required")
    return fields, (data, upload.content_type or "", upload.filename or "")


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the request is over {MAX_UPLOAD_BYTES} bytes") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body must be JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _choice(fields: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = fields.get(name) or default
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)} here, not {value!r}")
    return str(value)


def _speech_request(body: dict[str, Any]) -> tuple[str, str, float, str]:
    """(input, voice, speed, response_format) of a checked speech request."""
    for name in ("model", "voice"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise BadRequest(f"'{name}' is required (a string)")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("'input' is required: the text to speak")
    if len(text) > MAX_INPUT_CHARS:
        raise BadRequest(f"'input' is {len(text)} characters; at most {MAX_INPUT_CHARS}")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4:
        raise BadRequest("'speed' must be a number from 0.25 to 4.0")
    if body.get("stream_format", "audio") != "audio":
        raise BadRequest("this engine streams stream_format 'audio' only, not 'sse'")
    response_format = _choice(body, "response_format", SPEECH_FORMATS, "wav")
    return text, body["voice"], float(speed), response_format


def _transcript_response(result: Recognition, response_format: str, *, words: bool) -> web.Response:
    if response_format == "text":
        return web.Response(text=result.text, content_type="text/plain")
    seconds = round(result.duration_s, 3)
    usage = {"type": "duration", "seconds": seconds}
    if response_format == "json":
        return web.json_response({"text": result.text, "usage": usage})
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": "english",
        "duration": seconds,
        "text": result.text,
        "segments": [
            {
                "id": 0,
                "seek": 0,
                "start": result.words[0].start_s if result.words else 0.0,
                "end": result.words[-1].end_s if result.words else seconds,
                "text": result.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0 if result.words else 1.0,
            }
        ],
        "usage": usage,
    }
    if words:
        body["words"] = [{"word": w.text, "start": w.start_s, "end": w.end_s} for w in result.words]
    return web.Response(text=json.dumps(body), content_type="application/json")
