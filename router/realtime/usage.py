"""Usage and cost of one Realtime response, from its `response.done`.

`response.usage` (GA) counts input and output tokens with details:
`input_token_details {text_tokens, audio_tokens, cached_tokens,
cached_tokens_details {text_tokens, audio_tokens}}` and `output_token_details
{text_tokens, audio_tokens}`. Cached tokens are a subset of the input tokens, so
they are billed at the cached price instead of, never on top of, the input price.
Reasoning tokens of the reasoning models are already inside the text output
tokens: they are counted once, as text output.

When the cached split by modality is missing, the cached tokens are shared out in
proportion to the text and audio input. When the details are missing altogether,
input and output tokens are billed as text.

Transcribing the input audio is billed apart, at the transcription model's prices
(`transcription_cost`), from the `usage` of each completed transcript.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class TranscriptionPrice(Protocol):
    """US dollars for transcribing input audio: per million tokens by kind, or per
    minute of audio (a target's `price.transcription` block)."""

    @property
    def audio_input(self) -> float: ...
    @property
    def text_input(self) -> float: ...
    @property
    def text_output(self) -> float: ...
    @property
    def per_minute(self) -> float: ...


class RealtimePrice(Protocol):
    """US dollars per million tokens, by kind (a target's `price:` block)."""

    @property
    def audio_input(self) -> float: ...
    @property
    def audio_output(self) -> float: ...
    @property
    def text_input(self) -> float: ...
    @property
    def text_output(self) -> float: ...
    @property
    def cached_input(self) -> float: ...
    @property
    def transcription(self) -> TranscriptionPrice | None: ...


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def transcription_cost(usage: object, price: TranscriptionPrice | None) -> float:
    """US dollars for one transcript, from the `usage` of its
    `conversation.item.input_audio_transcription.completed`: `{"type": "tokens",
    "input_tokens", "output_tokens", "input_token_details": {"text_tokens",
    "audio_tokens"}}` or `{"type": "duration", "seconds"}`. Nothing without a price."""
    if price is None or not isinstance(usage, Mapping):
        return 0.0
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        if not isinstance(seconds, int | float) or not 0.0 < seconds < 86_400.0:
            return 0.0
        return float(seconds) / 60.0 * price.per_minute
    tokens = RealtimeUsage.from_usage(usage)
    return (
        (tokens.text_input + tokens.cached_text_input) * price.text_input
        + (tokens.audio_input + tokens.cached_audio_input) * price.audio_input
        + tokens.output_tokens * price.text_output
    ) / 1e6


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class RealtimeUsage:
    """Tokens by kind; `*_input` fields exclude the cached ones."""

    text_input: int = 0
    audio_input: int = 0
    cached_text_input: int = 0
    cached_audio_input: int = 0
    text_output: int = 0
    audio_output: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_input + self.audio_input + self.cached_text_input + self.cached_audio_input

    @property
    def cached_tokens(self) -> int:
        return self.cached_text_input + self.cached_audio_input

    @property
    def output_tokens(self) -> int:
        return self.text_output + self.audio_output

    def cost(self, price: RealtimePrice) -> float:
        """US dollars."""
        return (
            self.text_input * price.text_input
            + self.audio_input * price.audio_input
            + self.cached_tokens * price.cached_input
            + self.text_output * price.text_output
            + self.audio_output * price.audio_output
        ) / 1e6

    def __add__(self, other: RealtimeUsage) -> RealtimeUsage:
        return RealtimeUsage(
            self.text_input + other.text_input,
            self.audio_input + other.audio_input,
            self.cached_text_input + other.cached_text_input,
            self.cached_audio_input + other.cached_audio_input,
            self.text_output + other.text_output,
            self.audio_output + other.audio_output,
        )

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any]) -> RealtimeUsage:
        """From a `response.usage` object."""
        inp = _details(usage, "input_token_details")
        out = _details(usage, "output_token_details")
        text_in, audio_in = _int(inp.get("text_tokens")), _int(inp.get("audio_tokens"))
        if not inp:
            text_in = _int(usage.get("input_tokens"))
        cached = _int(inp.get("cached_tokens"))
        split = _details(inp, "cached_tokens_details")
        if split:
            cached_text = min(_int(split.get("text_tokens")), text_in)
            cached_audio = min(_int(split.get("audio_tokens")), audio_in)
        else:
            total = text_in + audio_in
            cached = min(cached, total)
            cached_text = round(cached * text_in / total) if total else 0
            cached_audio = cached - cached_text
        text_out, audio_out = _int(out.get("text_tokens")), _int(out.get("audio_tokens"))
        if not out:
            text_out = _int(usage.get("output_tokens"))
        return cls(
            text_input=text_in - cached_text,
            audio_input=audio_in - cached_audio,
            cached_text_input=cached_text,
            cached_audio_input=cached_audio,
            text_output=text_out,
            audio_output=audio_out,
        )

    @classmethod
    def from_response(cls, response: Mapping[str, Any]) -> RealtimeUsage | None:
        """From a `response.done`'s `response`; None when it carries no usage."""
        usage = response.get("usage")
        return cls.from_usage(usage) if isinstance(usage, Mapping) else None
