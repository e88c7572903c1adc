"""A cascade's conversation kept within its LLM's context (`truncation: auto`).

A cascade sends the whole conversation to its `llm` route each turn, so a long call
can outgrow the model's context. OpenAI's default (`truncation: auto`) then drops the
oldest items; here, when every target of the route refuses the request as too long
(a `context_length` refusal, which comes before any token, so nothing was said yet),
the turn is asked again with the older half of the conversation dropped, until it
fits or one user turn is left. The system instructions always stay; the kept part
starts at a user message, so no tool output is left without its call.
`truncation: disabled` keeps the refusal (the response fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.errors import AllTargetsFailed, FirstTokenError
from router.turn.sink import Sink
from router.voice.respond import Stages
from router.voice.speak import PcmSource


def too_long(exc: FirstTokenError) -> bool:
    """Every target refused the request for its length."""
    refused = exc.client_error if isinstance(exc, AllTargetsFailed) else None
    return refused is not None and refused.rejection == "context_length"


def shorter(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """`body` with the older half of its conversation dropped; None when there is
    nothing left to drop."""
    messages = list(body.get("messages") or ())
    system = [m for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    kept = turns[len(turns) // 2 :]
    while kept and kept[0].get("role") != "user":
        kept = kept[1:]
    if not kept or len(kept) == len(turns):
        return None
    return {**body, "messages": system + kept}


class Fitted:
    """The cascade's stages, with the chat turn asked again shorter when too long."""

    def __init__(self, stages: Stages) -> None:
        self._stages = stages

    async def chat(self, body: dict[str, Any], sink: Sink) -> tuple[str | None, float]:
        while True:
            try:
                return await self._stages.chat(body, sink)
            except FirstTokenError as exc:
                less = shorter(body) if too_long(exc) else None
                if less is None:
                    raise
                body = less

    async def speak(self, text: str, voice: str, speed: float | None = None) -> PcmSource:
        return await self._stages.speak(text, voice, speed)

    def speech_cost(self, source: PcmSource, text: str) -> tuple[str, float, float]:
        return self._stages.speech_cost(source, text)
