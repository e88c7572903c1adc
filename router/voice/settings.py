"""The YAML of speech targets and cascades.

targets:
  - {name: whisper, kind: stt, base_url: http://127.0.0.1:8000/v1, model: whisper-1,
     price: {per_minute: 0.006}}
  - {name: kokoro, kind: tts, base_url: http://127.0.0.1:8880/v1, model: kokoro,
     sample_rate: 24000, price: {per_mchar: 15.0}}
  - name: local-voice
    kind: cascade
    cascade:
      stt: stt-route        # a route of stt targets
      llm: chat-fast        # any text route
      tts: tts-route        # a route of tts targets
      voice: af_heart       # unless the session asks for another
      vad: {threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500}
routes:
  - {name: voice, targets: [gpt-realtime, local-voice]}   # side by side, per policy
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from router.voice.turn_end import eagerness_of
from router.voice.vad import VadSettings


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VadBlock(_Model):
    """Server VAD defaults of a cascade's sessions (a client's `session.update` wins)."""

    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True

    def settings(self) -> VadSettings:
        return VadSettings(
            threshold=self.threshold,
            prefix_padding_ms=self.prefix_padding_ms,
            silence_duration_ms=self.silence_duration_ms,
            create_response=self.create_response,
            interrupt_response=self.interrupt_response,
        )


class ClauseBlock(_Model):
    """Where the LLM's text is cut for the TTS (`router.voice.clauses`)."""

    first_min_chars: int = Field(12, ge=1)
    max_chars: int = Field(150, ge=10)
    hard_max_chars: int = Field(300, ge=10)


class CascadeSettings(_Model):
    stt: str = Field(min_length=1)
    llm: str = Field(min_length=1)
    tts: str = Field(min_length=1)
    voice: str = "alloy"
    vad: VadBlock = VadBlock()
    #: TTS requests started ahead of the piece being played
    prefetch: int = Field(2, ge=1, le=8)
    clauses: ClauseBlock = ClauseBlock()


def _audio_input(settings: CascadeSettings, **turn_detection: Any) -> dict[str, Any]:
    """A new session's input audio: 24 kHz PCM, the cascade's VAD (and
    `turn_detection`'s fields), no transcription model."""
    vad = settings.vad
    return {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": vad.threshold,
            "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms,
            **turn_detection,
        },
    }


def default_session(session_id: str, target: str, settings: CascadeSettings) -> dict[str, Any]:
    vad = settings.vad
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": target,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "audio": {
            "input": _audio_input(
                settings,
                idle_timeout_ms=None,
                create_response=vad.create_response,
                interrupt_response=vad.interrupt_response,
            ),
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": settings.voice,
                "speed": 1.0,
            },
        },
    }


def transcription_session(session_id: str, settings: CascadeSettings) -> dict[str, Any]:
    """A transcription session as a cascade opens one: its VAD and its STT stage only
    (the `transcription.model` a client names is not used: the `stt` route decides)."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "include": None,
        "audio": {"input": _audio_input(settings)},
    }


def cascade_issues(
    cascades: Sequence[tuple[int, dict[str, Any]]],
    route_kinds: Mapping[str, set[str]],
    issue: Callable[[tuple[str | int, ...], str], None],
) -> None:
    """A cascade's stages name routes of the right kind."""
    for i, block in cascades:
        for stage, kind in (("stt", "stt"), ("llm", "text"), ("tts", "tts")):
            route = block.get(stage)
            if isinstance(route, str) and route not in route_kinds:
                issue(("targets", i, "cascade", stage), f"unknown route '{route}'")
            elif isinstance(route, str) and route_kinds[route] != {kind}:
                issue(("targets", i, "cascade", stage), f"route '{route}' is not a {kind} route")


def session_vad(turn_detection: object, base: VadBlock, transcription: bool) -> VadSettings | None:
    """The session's `audio.input.turn_detection` over the cascade's own VAD settings:
    `server_vad` with its fields; `semantic_vad` with its `eagerness` (the VAD's own
    threshold and padding; the turn's end is read from the words); none for null."""
    td = turn_detection
    if not isinstance(td, Mapping):
        return None
    create = bool(td.get("create_response", True))
    interrupt = bool(td.get("interrupt_response", True))
    if td.get("type") == "semantic_vad":
        return VadSettings(
            threshold=base.threshold,
            prefix_padding_ms=base.prefix_padding_ms,
            create_response=create,
            interrupt_response=interrupt,
            eagerness=eagerness_of(td.get("eagerness")),
        )
    return VadSettings(
        threshold=float(td.get("threshold", base.threshold)),
        prefix_padding_ms=int(td.get("prefix_padding_ms", base.prefix_padding_ms)),
        silence_duration_ms=int(td.get("silence_duration_ms", base.silence_duration_ms)),
        create_response=create,
        interrupt_response=interrupt,
        idle_timeout_ms=_idle_timeout(td, transcription),
    )


def _idle_timeout(td: Mapping[str, Any], transcription: bool) -> int | None:
    """`turn_detection.idle_timeout_ms`, for `server_vad` only, as OpenAI (none in a
    transcription session: no answers)."""
    value = td.get("idle_timeout_ms")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    return value if td.get("type") == "server_vad" and not transcription else None


TURN_DETECTION_TYPES = ("server_vad", "semantic_vad")
EAGERNESS = ("low", "medium", "high", "auto")


def turn_detection_error(session: Mapping[str, Any]) -> str | None:
    """What is wrong with a `session.update`'s `audio.input.turn_detection`, in OpenAI's
    words, or None (absent or null is fine: null turns detection off)."""
    audio = session.get("audio")
    heard = audio.get("input") if isinstance(audio, Mapping) else None
    if not isinstance(heard, Mapping) or heard.get("turn_detection") is None:
        return None
    td = heard["turn_detection"]
    if not isinstance(td, Mapping):
        return "Invalid type for 'session.audio.input.turn_detection': expected an object."
    kind = td.get("type")
    if kind not in TURN_DETECTION_TYPES:
        return f"Invalid value: {kind!r}. Supported values are: 'server_vad' and 'semantic_vad'."
    eagerness = td.get("eagerness", "auto")
    if kind == "semantic_vad" and eagerness not in EAGERNESS:
        return (
            f"Invalid value: {eagerness!r}. Supported values are: 'low', 'medium', 'high', "
            "and 'auto'."
        )
    return None
