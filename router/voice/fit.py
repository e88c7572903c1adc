"""A cascade's conversation kept within its LLM's context (`truncation: auto`).

A cascade sends the whole conversation to its `llm` route each turn, so a long call
can outgrow the model's context. OpenAI's default (`truncation: auto`) then drops the
oldest items; here, when every target of the route refuses the request as too long
(a `context_length` refusal, which comes before any token, so nothing was said yet),
the turn is asked again with the older half of the conversation dropped, until it
fits or one user turn is left. `truncation: {type: retention_ratio, retention_ratio:
r}` keeps the newest share `r` of the conversation's text instead of half of its
items (OpenAI counts tokens; characters stand in for them here). The system
instructions always stay; the kept part starts at a user message, so no tool output
is left without its call. `truncation: disabled` keeps the refusal (the response
fails).
"""

from __future__ import annotations

import json
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


def shorter(body: Mapping[str, Any], retain: float | None = None) -> dict[str, Any] | None:
    """`body` with the older half of its conversation dropped (`retain`: all but the
    newest share of its text); None when there is nothing left to drop."""
    messages = list(body.get("messages") or ())
    system = [m for m in messages if m.get("role") == "system"]
    turns = [m for m in messages if m.get("role") != "system"]
    kept = turns[len(turns) // 2 :] if retain is None else _newest(turns, retain)
    while kept and kept[0].get("role") != "user":
        kept = kept[1:]
    if not kept or len(kept) == len(turns):
        return None
    return {**body, "messages": system + kept}


def _newest(turns: list[dict[str, Any]], share: float) -> list[dict[str, Any]]:
    """The newest messages holding at most `share` of the text (one at least, never all)."""
    sizes = [len(json.dumps(m, ensure_ascii=False)) for m in turns]
    budget = share * sum(sizes)
    start = len(turns) - 1  # the newest stays whatever its size
    held = sizes[start] if turns else 0
    while start > 1 and held + sizes[start - 1] <= budget:
        start -= 1
        held += sizes[start]
    return turns[max(start, 0) :]


def retention_ratio(truncation: object) -> float | None:
    """`truncation: {type: retention_ratio, retention_ratio: r}`'s r (None: `auto`)."""
    if not isinstance(truncation, Mapping) or truncation.get("type") != "retention_ratio":
        return None
    ratio = truncation.get("retention_ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio < 1:
        return None
    return float(ratio)


class Fitted:
    """The cascade's stages, with the chat turn asked again shorter when too long."""

    def __init__(self, stages: Stages, retain: float | None = None) -> None:
        self._stages = stages
        self._retain = retain

    async def chat(self, body: dict[str, Any], sink: Sink) -> tuple[str | None, float]:
        while True:
            try:
                return await self._stages.chat(body, sink)
            except FirstTokenError as exc:
                less = shorter(body, self._retain) if too_long(exc) else None
                if less is None:
                    raise
                body = less

    async def speak(self, text: str, voice: str, speed: float | None = None) -> PcmSource:
        return await self._stages.speak(text, voice, speed)

    def speech_cost(self, source: PcmSource, text: str) -> tuple[str, float, float]:
        return self._stages.speech_cost(source, text)
