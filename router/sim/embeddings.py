"""Embeddings as the simulator answers them (`POST /v1/embeddings`).

Each input gets a deterministic unit vector (seeded by the input's text), of
`dimensions` floats when the request asks (else `Behaviour.embedding_dims`), as a
JSON list or, with `encoding_format: base64`, as the base64 of little-endian
float32s (what OpenAI sends and the `openai` SDK decodes). The answer is ready
after the backend's first-token wait. Vectors are cached per input: the simulator
must stay cheap enough to be the upstream of the router's benchmarks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import struct
from collections import OrderedDict
from typing import Any

from router.sim.wire import InvalidRequest, SimRequest, input_texts

#: cached encoded vectors per server
CACHE_SIZE = 4096


class Embedder:
    """Encoded vectors by (text, dimensions, format), cached."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()

    def vector(self, text: str, dims: int, as_base64: bool) -> bytes:
        key = (text, dims, as_base64)
        found = self._cache.get(key)
        if found is not None:
            return found
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        rng = random.Random(seed)
        values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        values = [round(v / norm, 6) for v in values]
        if as_base64:
            packed = struct.pack(f"<{dims}f", *values)
            encoded = json.dumps(base64.b64encode(packed).decode()).encode()
        else:
            encoded = json.dumps(values, separators=(",", ":")).encode()
        self._cache[key] = encoded
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return encoded

    def body(self, sim: SimRequest, default_dims: int) -> bytes:
        """The whole answer, as bytes."""
        dims = sim.body.get("dimensions", default_dims)
        if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 8192:
            raise InvalidRequest("'dimensions' must be an integer from 1 to 8192")
        fmt = sim.body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InvalidRequest("'encoding_format' must be 'float' or 'base64'")
        items = [
            b'{"object":"embedding","index":%d,"embedding":%s}'
            % (i, self.vector(text, dims, fmt == "base64"))
            for i, text in enumerate(input_texts("embeddings", sim.body))
        ]
        usage: dict[str, Any] = {"prompt_tokens": sim.prompt_tokens}
        usage["total_tokens"] = sim.prompt_tokens
        return (
            b'{"object":"list","data":['
            + b",".join(items)
            + b'],"model":'
            + json.dumps(sim.model).encode()
            + b',"usage":'
            + json.dumps(usage, separators=(",", ":")).encode()
            + b"}"
        )
