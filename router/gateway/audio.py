"""OpenAI's audio endpoints, served from speech routes:

    POST /v1/audio/transcriptions   multipart (`file`, `model` = an stt route, and any other
                                    field, passed on); the chosen target's answer as it is
    POST /v1/audio/translations     the same form, to the same stt routes; the targets are
                                    asked at their `/audio/translations` (speech in any
                                    language, its text in English: Whisper's)
    POST /v1/audio/speech           JSON (`model` = a tts route, `input`, `voice`, `speed`,
                                    `response_format`): OpenAI's formats, streamed

The route's targets are tried as `router.voice.stages` does for a cascade (policy,
fallback before the first byte, breaker). Targets are asked for PCM and resampled to
24 kHz when they speak another rate; `pcm` goes out as it is, and `mp3` (OpenAI's
default, so also when no format is asked for), `opus`, `aac`, `flac` and `wav` are encoded
as the audio comes (`router.voice.encode`). The multipart form is parsed by the standard
library's `email` package (`forms.py`). Answers carry `x-firsttoken-target` (and a transcription
`x-firsttoken-cost-usd`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.errors import BadRequest, ModelNotFound
from router.gateway.asgi import Send
from router.gateway.auth import Client
from router.gateway.forms import multipart_parts
from router.runtime import Router
from router.voice.codec import PCM_RATE
from router.voice.encode import PCM_CONTENT_TYPE, SpeechEncoder, speech_format
from router.voice.resample import SPEECH_QUALITY, Resampler
from router.wiring import RouteRuntime


def _route(router: Router, model: object, kind: str, client: Client | None) -> RouteRuntime:
    runtime = router.runtime
    route = runtime.routes.get(str(model)) if isinstance(model, str) else None
    if route is None:
        raise ModelNotFound(f"the model '{model}' does not exist")
    configs = runtime.speech.configs
    if not all(
        configs.get(n) is not None and configs[n].kind == kind for n in route.config.targets
    ):
        raise BadRequest(f"the route '{model}' is not a route of {kind} targets")
    runtime.auth.admit(client, route.config.name, 0)
    return route


def _form(raw: bytes, content_type: str) -> tuple[dict[str, str], tuple[bytes, str, str] | None]:
    """The fields of a multipart form, and its `file` (bytes, filename, content type)."""
    parts = multipart_parts(raw, content_type, "a transcription or translation (with a 'file')")
    file = parts.pop("file", None)
    upload = (
        None if file is None else (file.payload, file.filename or "audio.wav", file.content_type)
    )
    return {name: part.text for name, part in parts.items()}, upload


async def transcription(
    router: Router,
    raw: bytes,
    headers: Mapping[str, str],
    send: Send,
    client: Client | None,
    *,
    translation: bool = False,
) -> None:
    fields, upload = _form(raw, headers.get("content-type", ""))
    if upload is None:
        raise BadRequest(
            f"'file' is required: the audio to {'translate' if translation else 'transcribe'}"
        )
    route = _route(router, fields.pop("model", None), "stt", client)
    audio, filename, content_type = upload
    heard = await router.runtime.speech.transcribe(
        route.config,
        route.policy,
        router.rng,
        audio,
        fields,
        filename=filename,
        content_type=content_type,
        budget=route.budget,
        translation=translation,
    )
    body = heard.transcript.body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", heard.transcript.content_type.encode() or b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-firsttoken-target", heard.target.encode()),
                (b"x-firsttoken-cost-usd", f"{heard.cost_usd:.9f}".encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def speech(router: Router, raw: bytes, send: Send, client: Client | None) -> None:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    route = _route(router, body.get("model"), "tts", client)
    text, voice = body.get("input"), body.get("voice")
    if not isinstance(text, str) or not text.strip() or not isinstance(voice, str):
        raise BadRequest("'input' (text) and 'voice' are required")
    response_format = speech_format(body.get("response_format"))
    speed = body.get("speed")
    source = await router.runtime.speech.speak(
        route.config,
        route.policy,
        router.rng,
        text,
        voice=voice,
        speed=float(speed) if isinstance(speed, int | float) else None,
        budget=route.budget,
    )
    encoder = SpeechEncoder(response_format, PCM_RATE) if response_format != "pcm" else None
    try:
        content_type = encoder.content_type if encoder is not None else PCM_CONTENT_TYPE
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"x-firsttoken-target", source.target.encode()),
                ],
            }
        )
        to_24k = Resampler(source.sample_rate, PCM_RATE, SPEECH_QUALITY)
        async for chunk in source.aiter_bytes():
            out = to_24k.push(chunk)
            if encoder is not None and out:
                out = await encoder.apush(out)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
        tail = to_24k.flush()
        if encoder is not None:
            tail = await encoder.apush(tail) + await encoder.aflush()
        await send({"type": "http.response.body", "body": tail})
    finally:
        if encoder is not None:
            encoder.close()
        await source.aclose()
