"""The simulator's bookkeeping: a new session's defaults and a response's usage.

Usage follows OpenAI's shape: the conversation before a response's output item is
its input (text at about 4 characters a token, input audio at
`AUDIO_IN_TOKENS_PER_S`, earlier assistant audio at `AUDIO_OUT_TOKENS_PER_S`),
and whatever the previous response already read counts as cached.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

Event = dict[str, Any]

#: input audio tokens per second of audio, output audio tokens per second (rough)
AUDIO_IN_TOKENS_PER_S = 10.0
AUDIO_OUT_TOKENS_PER_S = 20.0


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _audio_input(**turn_detection: Any) -> Event:
    """A new session's input audio: 24 kHz PCM, server VAD (and `turn_detection`'s
    fields), no transcription."""
    return {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            **turn_detection,
        },
    }


def default_session(session_id: str, model: str) -> Event:
    fmt = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a simulated assistant.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "audio": {
            "input": _audio_input(
                idle_timeout_ms=None, create_response=True, interrupt_response=True
            ),
            "output": {"format": dict(fmt), "voice": "marin", "speed": 1.0},
        },
    }


def transcription_session(session_id: str) -> Event:
    """A transcription session as `?intent=transcription` opens it (no model: its
    `session.update` names the transcription model)."""
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "include": None,
        "audio": {"input": _audio_input()},
    }


def merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def item_text(item: Mapping[str, Any]) -> str:
    parts = item.get("content") or []
    return " ".join(str(p.get("text") or p.get("transcript") or "") for p in parts).strip()


def response_usage(
    session: Mapping[str, Any],
    items: list[dict[str, Any]],
    audio_ms: Mapping[str, float],
    previous: tuple[int, int],
    *,
    reply: str,
    output_audio_ms: float,
    output_id: str | None,
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Token counts for a response: the conversation before its output item is its
    input, and whatever the previous response already read counts as cached."""
    text_in = _text_tokens(str(session.get("instructions") or ""))
    audio_in = 0
    for item in items:
        if item.get("id") == output_id:
            break
        if item.get("type") == "message":
            text_in += _text_tokens(item_text(item))
            rate = (
                AUDIO_OUT_TOKENS_PER_S if item.get("role") == "assistant" else AUDIO_IN_TOKENS_PER_S
            )
            audio_in += round(audio_ms.get(str(item.get("id")), 0.0) / 1000 * rate)
        else:
            text_in += _text_tokens(str(item.get("arguments") or item.get("output") or ""))
    cached_text = min(previous[0], text_in)
    cached_audio = min(previous[1], audio_in)
    text_out = _text_tokens(reply)
    audio_out = round(output_audio_ms / 1000 * AUDIO_OUT_TOKENS_PER_S)
    usage: dict[str, Any] = {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": 0,
            },
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
    return usage, (text_in, audio_in)
