"""Bounded looks at a request body: what admission can refuse on before a full parse.

Each function reads at most a few KiB (or, for `too_many_messages`, stops after
`limits.max_messages` items) with the C scanner of the `json` module, and answers
only when the answer is certain for a valid JSON body; otherwise None and the full
parse decides. For an invalid body the refusal may name the model or the messages
instead of the JSON (a 404 or a 400 where the parse would have said 400).

- `locate_model`: `model` anywhere, trusted only when the key occurs once (two
  C-speed searches of the whole body).
- `leading_model`: `model` among the first members of the top-level object
  (`{"model": "x", ...}`, how curl users and many clients write it).
- `trailing_model`: `model` as one of the last members (`{"messages": [...],
  "model": "x", "stream": true}`, the official SDKs' order): proved top-level by
  parsing what follows it, which must close the object at the end of the body.
  It is the last `model` member too, the one `json.loads` keeps.
- `too_many_messages`: `messages` bounded without a parse first (fewer commas than
  the limit: certainly within it; the first limit + 1 items flat objects, seen in
  the body's brackets and quotes alone: certainly over it), and only when neither
  is certain counted item by item, stopping one past the limit.

A body with two top-level `model` keys (JSON says names SHOULD be unique) may be
refused on the first; `json.loads` would have kept the last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from router.edge import LimitsConfig
from router.errors import BadRequest

#: how much of either end of a body `leading_model` and `trailing_model` read
WINDOW_BYTES = 4096
#: how much of the start of a large chat body `too_many_messages` reads while it
#: arrives (the default `max_messages` of tiny messages is about 60 KiB)
COUNT_BYTES = 256 * 1024
#: when a large body's first look at its `messages` is taken (then at each doubling):
#: the default `max_messages` of tiny messages fit
EARLY_BYTES = 64 * 1024
#: top-level members `leading_model` looks at before giving up
_LEADING_MEMBERS = 8
_MODEL_KEY = b'"model"'
#: the rest of `"model": "chat-fast"`: a plain string value (no escapes), bounded
_MODEL_VALUE = re.compile(rb'\s*:\s*"([^"\\\x00-\x1f]{1,256})"')
_MESSAGES_FIRST = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*"messages"[ \t\n\r]*:[ \t\n\r]*\[')
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: one JSON value at an offset (no leading whitespace), in C; StopIteration if none
#: (`scan_once` is set in `JSONDecoder.__init__`: typeshed does not declare it)
_SCAN: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_BLANKS = " \t\n\r"
#: how much of the messages `_flat_items_over` looks at first: the default
#: `max_messages` of tiny messages (about 30 bytes each) fit
_FLAT_SLICE_BYTES = 64 * 1024
#: every byte but the ones `_flat_items_over` looks at (`bytes.translate` deletes them)
_NOT_SHAPE = bytes(sorted(set(range(256)) - set(b'{}[]"')))
_EIGHT = b'"' * 8


def _skip(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    assert match is not None  # `*` matches the empty string
    return match.end()


def locate_model(raw: bytes) -> str | None:
    """The top-level `model` of a JSON body without parsing it, when that is certain
    enough to refuse on: the key occurs once, unescaped, with a plain string value.
    Otherwise None (the full parse decides)."""
    first = raw.find(_MODEL_KEY)
    if first < 0 or raw.rfind(_MODEL_KEY) != first or raw[first - 1 : first] == b"\\":
        return None
    match = _MODEL_VALUE.match(raw, first + len(_MODEL_KEY))
    if match is None:
        return None
    try:
        return match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def leading_model(head: bytes) -> str | None:
    """`model` if it is a plain string among the top-level members in `head`, a
    prefix of the body; None when it is not there or not certain."""
    text = head[:WINDOW_BYTES].decode("utf-8", "ignore")
    at = _skip(text, 0)
    if text[at : at + 1] != "{":
        return None
    at += 1
    try:
        for _ in range(_LEADING_MEMBERS):
            at = _skip(text, at)
            key, at = _DECODER.raw_decode(text, at)
            at = _skip(text, at)
            if not isinstance(key, str) or text[at : at + 1] != ":":
                return None
            value, at = _DECODER.raw_decode(text, _skip(text, at + 1))
            if key == "model":
                return value if isinstance(value, str) and value else None
            at = _skip(text, at)
            if text[at : at + 1] != ",":
                return None
            at += 1
    except ValueError:  # the value runs past the window (or the JSON is bad)
        return None
    return None


def trailing_model(tail: bytes) -> str | None:
    """`model` if it is a plain string member of the top-level object followed only
    by other top-level members; `tail` is the end of the body."""
    window = tail.rstrip()[-WINDOW_BYTES:]
    found = window.rfind(_MODEL_KEY)
    if found <= 0 or window[found - 1 : found] == b"\\":
        return None
    before = window[:found].rstrip()[-1:]
    match = _MODEL_VALUE.match(window, found + len(_MODEL_KEY))
    if before not in (b",", b"{") or match is None:
        return None
    rest = window[match.end() :].lstrip()
    if rest != b"}":
        if not rest.startswith(b","):
            return None
        try:  # the members after it, and the top-level object's end
            after = json.loads(b"{" + rest[1:])
        except ValueError:
            return None
        if not isinstance(after, dict) or "model" in after:
            return None
    try:
        return match.group(1).decode("utf-8")
    except UnicodeDecodeError:
        return None


def too_many_messages(raw: bytes, limits: LimitsConfig, *, final: bool = True) -> None:
    """A 400 if `messages`, as the top-level object's first member (the SDKs' order),
    has more than `limits.max_messages` items; silent when unsure. `raw` may be a
    prefix of the body (a refusal needs only complete items). Fewer commas than the
    limit: certainly within it, nothing parsed. Then `_flat_items_over`, at C speed;
    only when that cannot tell (nested items, or too few in `raw`) and `final`, the
    items are parsed one by one up to one past the limit (`_complete_items`: about
    7,500 instructions a tiny message). `final=False`: a look at a part of a prefix
    that will be looked at again, longer."""
    opening = _MESSAGES_FIRST.match(raw)
    if opening is None:
        return
    most, at = limits.max_messages, opening.end()
    # at most `most` items, whatever they are (counted on the first slice first: the
    # slice alone may have enough commas, and the rest is not counted)
    commas = raw.count(b",", at, at + _FLAT_SLICE_BYTES)
    if commas < most and commas + raw.count(b",", at + _FLAT_SLICE_BYTES) < most:
        return
    if not _flat_items_over(raw, at, most) and (
        not final
        # the same offset in `text`: the opening is ASCII; `json.loads` decodes first too
        or _complete_items(raw.decode("utf-8", "ignore"), at, most + 1) <= most
    ):
        return
    raise BadRequest(f"'messages' has over {most} items; the limit is {most}")


def _flat_items_over(raw: bytes, at: int, most: int) -> bool:
    """True when the array whose items begin at `at` certainly (if the body is valid
    JSON) has over `most` complete items in `raw`, told from its brackets and quotes
    alone, with no JSON parsed: about 30 instructions a byte, against 7,500 a tiny
    message parsed. The first `_FLAT_SLICE_BYTES` first, then all of `raw`.

    Escaped backslashes, then escaped quotes, are dropped, so every quote left opens
    or closes a string; keeping only `{}[]"` and then dropping `""` (each string
    that holds none of them) leaves `{}` for each flat object, and the first
    `most` + 1 of them at the start (no `[` or `]` before them: still this array,
    not nested) are that many complete items. A string that holds a bracket leaves
    a quote there, and an item with an object or array inside leaves more than
    `{}`: then False, and the parse decides."""
    target = b"{}" * (most + 1)
    for end in (at + _FLAT_SLICE_BYTES, len(raw)):  # enough for tiny items, then all
        region = raw[at:end]
        if b"\\" in region:  # (outside strings a backslash is not JSON at all)
            region = region.replace(b"\\\\", b"").replace(b'\\"', b"")
        # each run of quotes ends up as its length mod 2: eight at a time first (a
        # two-member message is one run of eight) makes a quarter of the matches
        shape = region.translate(None, _NOT_SHAPE).replace(_EIGHT, b"").replace(b'""', b"")
        if shape.startswith(target):
            return True
        whole = shape[: shape.rfind(b"}") + 1]  # (a string or an item may be cut at `end`)
        if end >= len(raw) or not target.startswith(whole):
            return False  # all of `raw` seen, or something but flat objects seen
    return False


def _complete_items(text: str, at: int, most: int) -> int:
    """How many complete items of an array follow `at` (just past its `[`), up to
    `most`. The C scanner's `scan_once` item by item: about 0.5 microseconds a tiny
    message, half of `raw_decode` (which wraps it); whitespace skipped only where
    there is some."""
    count = 0
    try:
        while count < most:
            if text[at : at + 1] in _BLANKS:  # (the empty string is `in` it too)
                at = _skip(text, at)
            _, at = _SCAN(text, at)
            count += 1
            if text[at : at + 1] != ",":
                at = _skip(text, at)
                if text[at : at + 1] != ",":
                    return count
            at += 1
    except (StopIteration, ValueError):  # the prefix ends, or the JSON is bad
        pass
    return count
