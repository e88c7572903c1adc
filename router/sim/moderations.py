"""`POST /v1/moderations` as the simulator answers it (OpenAI's shape): one result per
string of `input` (one for an array of content parts), flagged for `violence` when
the text says "attack" or "kill", with every category's score, so a test can tell a
flagged input from a clean one and which target answered (`model` is echoed)."""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from router.sim.wire import error_body

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_VIOLENT = ("attack", "kill")


def _texts(value: object) -> list[str] | None:
    """The texts judged one by one: each string, or the parts' text as one."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [" ".join(str(v.get("text", "")) for v in value)]
    return None


def _result(text: str) -> dict[str, Any]:
    violent = any(word in text.lower() for word in _VIOLENT)
    flags = {c: violent and c == "violence" for c in CATEGORIES}
    return {
        "flagged": violent,
        "categories": flags,
        "category_scores": {c: 0.93 if flags[c] else 0.001 for c in CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
    }


async def moderate(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    texts = _texts(body.get("input")) if isinstance(body, dict) else None
    if not isinstance(body, dict) or texts is None:
        message = "'input' must be a string, an array of strings, or of content parts"
        return web.json_response(error_body(message, "invalid_request_error"), status=400)
    answer = {
        "id": f"modr-{os.urandom(6).hex()}",
        "model": body.get("model", "omni-moderation-latest"),
        "results": [_result(t) for t in texts],
    }
    return web.json_response(answer)
