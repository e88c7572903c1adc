"""Speech targets over aiohttp's client: `kind: stt` and `kind: tts`.

    SttUpstream.transcribe()   POST <base>/audio/transcriptions  (OpenAI's multipart form;
                               <base>/audio/translations with `translation=True`)
    TtsUpstream.speak()        POST <base>/audio/speech          (JSON; streamed `pcm` back)

Both speak OpenAI's audio API, which vLLM (Whisper), speaches, Kokoro-FastAPI,
Groq and OpenAI itself serve. They go through the same client as chat targets,
`router.upstream.http.HttpPool`: one keep-alive pool per target (`max_connections`,
`upstream.keepalive_s`), Happy Eyeballs, TLS against the system's CAs or the
target's `ca_file`, the environment's proxy, a POST retried once on a keep-alive
connection the server had closed (the multipart form is serialised once, to bytes,
so it can be), and the connections counted in `firsttoken_upstream_connections_total`.
Two deadlines: `connect_s` for the connection and `idle_s` for any wait for bytes. A
stage's first-byte deadline (`first_token_s`) belongs to the caller that races
targets, as for text turns.

`speak()` returns once the status and headers are in; `SpeechStream.aiter_bytes()`
then yields raw 16-bit mono PCM at the target's `sample_rate` as it arrives (a chunk
may end mid-sample: `router.voice.resample.Resampler` carries the odd byte).
`aclose()` before the end closes the connection, so the target sees the cancel.

aiohttp's exceptions become `router.errors` in `http.translate`, plus what only a
body read means here (`translate()`):

    aiohttp.ClientPayloadError (the body      UpstreamProtocolError
      ended early), a body that is not what
      was asked for (JSON, audio)
    a non-2xx status                          UpstreamStatusError (body, Retry-After)
    the rest                                  as `http.translate` says
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from yarl import URL

from router.clock import Clock
from router.config import Timeouts
from router.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from router.targetsettings import AuthHeader, key_headers
from router.upstream import http
from router.upstream.openai import retry_after_s
from router.upstream.rejections import rejection_reason

Phase = Literal["connect", "stream", "body"]
#: bytes of an error body kept for the client and the logs
MAX_ERROR_BODY = 65_536
#: the PCM rate of OpenAI's (and Kokoro's) `pcm` speech
OPENAI_PCM_RATE = 24_000
AUDIO_TYPES = ("audio/", "application/octet-stream", "binary/octet-stream")


def translate(exc: BaseException, target: str, phase: Phase) -> UpstreamError:
    """aiohttp's (and the socket's) exceptions, in our tree. Names the target, never a key."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        kind = type(exc).__name__
        return UpstreamProtocolError(f"{target}: the answer ended early ({kind})", target=target)
    return http.translate(exc, target, phase)


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    #: seconds of audio the target billed or measured (`usage.seconds`, else `duration`)
    audio_s: float | None
    #: the answer as the target sent it, for clients of /v1/audio/transcriptions
    body: bytes
    content_type: str


class _SpeechTarget:
    """What both kinds share: the pool, the headers and the status check."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        auth_header: AuthHeader = "authorization",
        timeouts: Timeouts | None = None,
        max_connections: int = 100,
        keepalive_s: float = 30.0,
        ca_file: str | None = None,
        on_connection: Callable[[bool], None] | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self.name = name
        self.model = model
        self._base = base_url.rstrip("/")
        self._key = api_key.encode() if api_key else b""
        self._headers = {**(headers or {}), **key_headers(auth_header, api_key)}
        t = timeouts or Timeouts()
        self._timeout = aiohttp.ClientTimeout(total=None, connect=t.connect_s, sock_read=t.idle_s)
        self._wall = wall_clock
        self.pool = http.HttpPool(
            name,
            self._base,
            max_connections=max_connections,
            keepalive_s=keepalive_s,
            ca_file=ca_file,
            on_connection=on_connection,
        )

    async def _post(
        self, path: str, headers: Mapping[str, str], body: bytes, content_type: str
    ) -> aiohttp.ClientResponse:
        """Send; return a 2xx answer with its body unread, or raise in our tree."""
        headers = {**self._headers, **headers, "Content-Type": content_type}
        response = await self.pool.post(URL(self._base + path), headers, body, self._timeout)
        if response.status < 300:
            return response
        try:
            data = (await response.content.read(MAX_ERROR_BODY))[:MAX_ERROR_BODY]
        except http.ERRORS:
            data = b""
        finally:
            response.close()
        if self._key and self._key in data:  # some APIs echo the key they rejected
            data = data.replace(self._key, b"[redacted]")
        headers_in = {k.lower(): v for k, v in response.headers.items()}
        status = response.status
        # A 404/405 at a speech path is a target without that endpoint (a server that
        # does not translate, say), whatever its body says: another target may serve it.
        rejection = rejection_reason(status, data) or ("endpoint" if status in (404, 405) else None)
        raise UpstreamStatusError(
            f"{self.name}: upstream answered {status}",
            target=self.name,
            upstream_status=status,
            body=data,
            retry_after_s=retry_after_s(headers_in, data, wall_now=self._wall()),
            headers=headers_in,
            rejection=rejection,
        )

    async def warm_up(self) -> None:
        """Nothing to pay up front: connections open with the first request."""

    async def aclose(self) -> None:
        await self.pool.aclose()


class SttUpstream(_SpeechTarget):
    """A speech-to-text target: one utterance in, its transcript out."""

    async def transcribe(
        self,
        audio: bytes,
        *,
        filename: str = "audio.wav",
        content_type: str = "audio/wav",
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        translation: bool = False,
    ) -> Transcript:
        """`fields` are the form's other fields (`language`, `prompt`, `response_format`,
        `temperature` ...); `model` is the target's. `translation`: into English, at the
        target's `/audio/translations` (Whisper's; a target without it answers 4xx)."""
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=filename, content_type=content_type)
        for key, value in (fields or {}).items():
            if key != "model":
                form.add_field(key, value)
        form.add_field("model", self.model)
        payload = form()
        data = await payload.as_bytes()
        path = "/audio/translations" if translation else "/audio/transcriptions"
        response = await self._post(path, headers or {}, data, str(payload.content_type))
        try:
            body = await response.read()
        except http.ERRORS as exc:
            raise translate(exc, self.name, "body") from exc
        finally:
            response.release()
        content_type_in = response.headers.get("content-type", "")
        return _transcript(body, content_type_in, self.name)


def _transcript(body: bytes, content_type: str, target: str) -> Transcript:
    if not content_type.startswith("application/json"):
        try:
            return Transcript(body.decode().strip(), None, body, content_type)
        except UnicodeDecodeError as exc:
            raise UpstreamProtocolError(
                f"{target}: a transcript that is not text", target=target
            ) from exc
    try:
        parsed = json.loads(body)
        text = parsed["text"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamProtocolError(
            f"{target}: a transcription answer without its text", target=target
        ) from exc
    if not isinstance(text, str):
        raise UpstreamProtocolError(f"{target}: a transcript that is not text", target=target)
    usage = parsed.get("usage")
    seconds = usage.get("seconds") if isinstance(usage, dict) else None
    if not isinstance(seconds, int | float):
        seconds = parsed.get("duration")
    audio_s = float(seconds) if isinstance(seconds, int | float) else None
    return Transcript(text, audio_s, body, content_type)


class SpeechStream:
    """A 2xx answer of raw PCM; read it with `aiter_bytes()`, end it with `aclose()`."""

    __slots__ = ("_response", "_target", "headers", "sample_rate", "status")

    def __init__(self, response: aiohttp.ClientResponse, target: str, sample_rate: int) -> None:
        self._response = response
        self._target = target
        self.status = response.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in response.headers.items()}
        self.sample_rate = sample_rate

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except http.ERRORS as exc:
            raise translate(exc, self._target, "stream") from exc

    async def aclose(self) -> None:
        """Done, or cancelled: an unfinished answer's connection is closed."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class TtsUpstream(_SpeechTarget):
    """A text-to-speech target that streams `pcm` at `sample_rate` (24 kHz for OpenAI and
    Kokoro, 22050 for Piper voices, 16 kHz for some others: the target's config says)."""

    def __init__(self, *, sample_rate: int = OPENAI_PCM_RATE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate = sample_rate

    async def speak(
        self,
        text: str,
        *,
        voice: str,
        speed: float | None = None,
        instructions: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SpeechStream:
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": voice,
            "response_format": "pcm",
        }
        if speed is not None:
            body["speed"] = speed
        if instructions:
            body["instructions"] = instructions
        response = await self._post(
            "/audio/speech", headers or {}, json.dumps(body).encode(), "application/json"
        )
        content_type = response.headers.get("content-type", "")
        if content_type and not content_type.startswith(AUDIO_TYPES):
            response.close()
            raise UpstreamProtocolError(
                f"{self.name}: asked for audio, got {content_type.split(';')[0]}",
                target=self.name,
            )
        return SpeechStream(response, self.name, self.sample_rate)
