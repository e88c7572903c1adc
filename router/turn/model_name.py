"""`response_model: route`: the `model` of every answer names the route, not the upstream.

By default (`upstream`) the client sees the model the target reports, as
OpenAI-compatible proxies do. With `route`, the exact bytes of the upstream's
`"model":"..."` field, learned once from the head (parsed before the commit point
anyway), are replaced in every block written after it: a bytes substitution per
block, never a JSON parse. Blocks are whole SSE events, so the field is never
split across two of them; JSON escaping means a `"model":"..."` inside generated
text (`\\"model\\":...`) never matches.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True, slots=True)
class ModelRename:
    old: bytes
    new: bytes

    @classmethod
    def learn(cls, head: bytes, route: str) -> ModelRename | None:
        """From the first bytes of an answer; None when it names no model."""
        found = _MODEL_FIELD.search(head)
        if found is None:
            return None
        return cls(found.group(0), b'"model":' + json.dumps(route).encode())

    def __call__(self, data: bytes) -> bytes:
        return data.replace(self.old, self.new)
