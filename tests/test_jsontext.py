"""`jsontext.loads` is `json.loads` for bytes: same value, same kind of error."""

from __future__ import annotations

import codecs
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router import jsontext

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _outcome(fn: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", fn(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        return "error", type(exc).__mro__[-3]


@given(value=json_values, encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32"]))
def test_any_json_text_in_any_encoding_json_reads(value: Any, encoding: str) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")
    assert _outcome(jsontext.loads, raw) == _outcome(json.loads, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1}',
        b"[1, 2]",
        b' {"a": 1}',
        codecs.BOM_UTF8 + b'{"a": 1}',
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": "\xed\xa0\x80"}',  # a lone surrogate: json.loads keeps it
        b"{",
        b"",
        b"nul",
        b"{\x00",
        "{}".encode("utf-16"),
    ],
)
def test_edge_texts_read_as_json_loads_reads_them(raw: bytes) -> None:
    assert _outcome(jsontext.loads, raw) == _outcome(json.loads, raw)
