"""JSON from bytes as `json.loads` reads it, for less.

`json.loads(raw_bytes)` asks `json.detect_encoding` (a Python function: BOM and NUL
byte checks) on every call, then decodes and builds its result with the module's
decoder. Every JSON text the router parses on a turn's path (a request body, an
upstream's chunk, a unary answer) is UTF-8 in practice and starts with `{` or `[`:
then the text is decoded as UTF-8 straight away; anything else (a BOM, UTF-16 or
UTF-32, leading whitespace) goes through `detect_encoding` as before, so the result,
and the error for a body that is not JSON, are `json.loads`'s own.
"""

from __future__ import annotations

import json
from typing import Any

_DECODER = json.JSONDecoder()
#: the first bytes of a UTF-8 text that opens an object or an array (a NUL after
#: them would be UTF-16 or UTF-32: `detect_encoding` decides those)
_OPENERS = (b"{", b"[")


def text_of(raw: bytes) -> str:
    """`raw` decoded as `json.loads` would decode it (a ValueError if it cannot be)."""
    if raw[:1] in _OPENERS and raw[1:2] != b"\x00":
        return raw.decode("utf-8", "surrogatepass")
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def loads(raw: bytes) -> Any:
    """`json.loads(raw)` for bytes."""
    return _DECODER.decode(text_of(raw))
