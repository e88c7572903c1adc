"""A speech-to-text server like OpenAI's, vLLM's (Whisper) or speaches':
`POST /v1/audio/transcriptions` and `POST /v1/audio/translations` (the same form
without `language`; its transcript stands for the English translation).

The request is OpenAI's multipart form: `file` (a WAV is measured; other formats
are taken as they are), `model`, optional `language`, `prompt`, `temperature` and
`response_format` (`json`, the default: `{"text", "usage"}`; `text`; or
`verbose_json` with `duration`, `language` and one segment). The answer comes
`Behaviour.ttft_s` after the request arrived, plus `seconds_per_audio_s` for each
second of audio (a model's real-time factor).

The transcript is the next one queued with `say()`, else `params.transcript`,
else a description of what was heard (`"<N> ms of audio"`).

Faults after the upload: `hang_before_first_token` never answers,
`die_after` and `reset_after_headers` cut the connection instead of answering,
`malformed` answers 200 with a body that is not JSON, `error_event_after` answers 500.
"""

from __future__ import annotations

import io
import json
import wave
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from aiohttp import web

from router.sim.backend import Rejection
from router.sim.behaviour import Fault
from router.sim.speech import BadSpeechRequest, SpeechRecord, SpeechSim
from router.sim.wire import MALFORMED_FRAME, error_body

FORMATS = ("json", "text", "verbose_json")
TRANSLATIONS_PATH = "/v1/audio/translations"


@dataclass(frozen=True, slots=True)
class SttParams:
    transcript: str | None = None
    seconds_per_audio_s: float = 0.0
    language: str = "english"
    #: False: `/v1/audio/translations` answers aiohttp's own 404, as a server without it
    translates: bool = True


def wav_ms(data: bytes) -> float:
    """Milliseconds of a WAV file's audio; 0 for anything else."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            return reader.getnframes() * 1000.0 / reader.getframerate()
    except (wave.Error, EOFError):
        return 0.0


class SttSim(SpeechSim):
    path: ClassVar[str] = "/v1/audio/transcriptions"
    prefix: ClassVar[str] = "stt-sim"

    def __init__(self, params: SttParams | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params = params or SttParams()
        self._script: deque[str] = deque()

    def say(self, *transcripts: str) -> None:
        """Queue transcripts: each request takes the next one."""
        self._script.extend(transcripts)

    def set_params(self, **changes: Any) -> None:
        self.params = replace(self.params, **changes)

    def _add_route(self, app: web.Application) -> None:
        super()._add_route(app)
        app.router.add_post(TRANSLATIONS_PATH, self._audio)

    async def _parse(self, request: web.Request, record: SpeechRecord) -> None:
        if record.path == TRANSLATIONS_PATH and not self.params.translates:
            record.status = 404
            raise web.HTTPNotFound()
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise BadSpeechRequest("'file' is required: an audio file in a multipart form")
        with upload.file:  # aiohttp spools uploads to a temporary file
            audio = upload.file.read()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not fields.get("model"):
            raise BadSpeechRequest("'model' is required")
        response_format = fields.get("response_format", "json")
        if response_format not in FORMATS:
            raise BadSpeechRequest(f"response_format must be one of {', '.join(FORMATS)}")
        fields["filename"] = upload.filename
        fields["file_bytes"] = str(len(audio))
        record.body = fields
        record.audio_ms = wav_ms(audio)

    async def _answer(
        self, request: web.Request, record: SpeechRecord, fault: Fault, delay_s: float
    ) -> web.StreamResponse:
        audio_s = record.audio_ms / 1000.0
        await self._wait_until(record, delay_s + audio_s * self.params.seconds_per_audio_s)
        kind = fault.kind
        if kind == "hang_before_first_token":
            await self._hang()
        if kind in ("die_after", "reset_after_headers"):
            self._cut(request, record, reset=kind == "reset_after_headers")
            return web.Response(status=500)
        if kind == "error_event_after":
            return self._reject(record, Rejection(500, error_body(fault.message)))
        record.first_token_at = record.finished_at = self._clock()
        record.status = 200
        if kind == "malformed":
            return web.Response(body=MALFORMED_FRAME, content_type="application/json")
        text = self._transcript(record)
        record.text = text
        body: dict[str, Any] = {"text": text}
        fields = record.body
        response_format = fields.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=text, content_type="text/plain")
        usage = {"type": "duration", "seconds": round(audio_s, 3)}
        if response_format == "verbose_json":
            translated = record.path == TRANSLATIONS_PATH
            body = {
                "task": "translate" if translated else "transcribe",
                "language": "english"
                if translated
                else fields.get("language") or self.params.language,
                "duration": round(audio_s, 3),
                "text": text,
                "segments": [_segment(text, audio_s)],
                "usage": usage,
            }
        else:
            body["usage"] = usage
        return web.Response(text=json.dumps(body), content_type="application/json")

    def _transcript(self, record: SpeechRecord) -> str:
        if self._script:
            return self._script.popleft()
        if self.params.transcript is not None:
            return self.params.transcript
        return f"{record.audio_ms:.0f} ms of audio"


def _segment(text: str, audio_s: float) -> dict[str, Any]:
    return {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": round(audio_s, 3),
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -0.1,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }
