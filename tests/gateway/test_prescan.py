"""The bounded looks admission refuses on: certain for valid JSON, else silent."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.edge import LimitsConfig
from router.errors import BadRequest
from router.gateway import prescan
from router.gateway.prescan import leading_model, too_many_messages, trailing_model
from router.gateway.request import parse_request

TINY = b'{"role":"user","content":"a"},'
MESSAGES = b'[{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b'{"model": "x", "messages": ' + MESSAGES + b"}", "x"),
        (b'{"stream": true, "n": [1, 2], "model": "x", "messages": []}', "x"),
        (b'{"messages": [{"role": "user", "model": "y"}], "model": "x"}', "x"),
        (b'{"messages": ' + MESSAGES + b"}", None),
        (b'{"metadata": {"model": "y"}, "messages": []}', None),
        (b'{"messages": [' + TINY * 1000 + b'{}], "model": "x"}', None),  # past the window
        (b'["model", "x"]', None),
    ],
)
def test_leading_model(body: bytes, model: str | None) -> None:
    assert leading_model(body) == model
    if model is not None:
        assert json.loads(body)["model"] == model


@pytest.mark.parametrize(
    ("body", "model"),
    [
        (b'{"messages": ' + MESSAGES + b', "model": "x"}\n', "x"),
        (b'{"messages": ' + MESSAGES + b', "model": "x", "stream": true, "o": {"a": [1]}}', "x"),
        (
            b'{"model": "y", "messages": ' + MESSAGES + b', "model": "x"}',
            "x",
        ),  # json keeps the last
        (b'{"messages": ' + MESSAGES + b', "model": "x", "model": "y"}', "y"),
        (b'{"messages": [], "tools": [{"model": "y"}]}', None),
        (b'{"messages": [], "metadata": {"model": "y"}}', None),
        (b'{"messages": [{"model": "y", "role": "user"}]}', None),
        (b'{"messages": [{"role": "user", "content": "\\"model\\": \\"y\\"}"}]}', None),
        (b'{"messages": [], "model": "x", "stream": tru', None),
    ],
)
def test_trailing_model(body: bytes, model: str | None) -> None:
    assert trailing_model(body) == model
    if model is not None:
        assert json.loads(body)["model"] == model


def test_too_many_messages_is_found_without_parsing_the_rest() -> None:
    limits = LimitsConfig(max_messages=10)
    at_limit = b'{"messages": [' + TINY * 9 + TINY[:-1] + b'], "model": "chat"}'
    assert parse_request("chat", at_limit, None, limits).model == "chat"
    # One over the limit and then not JSON at all: refused on the count alone.
    over = b'{"messages": [' + TINY * 11 + b" this is never parsed"
    with pytest.raises(BadRequest, match="over 10 items"):
        too_many_messages(over, limits)
    with pytest.raises(BadRequest, match="over 10 items"):
        parse_request("chat", over, None, limits)
    # Not first, or not a list: the full parse decides.
    too_many_messages(b'{"model": "chat", "messages": [' + TINY * 11 + b"{}]}", limits)
    too_many_messages(b'{"messages": "' + b"x" * 100 + b'"}', limits)


@pytest.mark.parametrize("gap", [b"", b" ", b"\n  ", b"\r\n\t"])
def test_messages_are_counted_whatever_the_whitespace_between_them(gap: bytes) -> None:
    limits = LimitsConfig(max_messages=3)
    item = gap + b'{"role": "user", "content": "a, [b]"}' + gap
    at_limit = b'{"messages": [' + b",".join([item] * 3) + b'], "model": "chat"}'
    too_many_messages(at_limit, limits)
    assert parse_request("chat", at_limit, None, limits).model == "chat"
    with pytest.raises(BadRequest, match="over 3 items"):
        too_many_messages(b'{"messages": [' + b",".join([item] * 4) + b"]}", limits)


def test_a_prefix_is_refused_only_on_complete_messages() -> None:
    """The first KiB of a body that is still arriving: the last item may be cut."""
    limits = LimitsConfig(max_messages=3)
    body = b'{"messages": [' + TINY * 5 + b'{}], "model": "chat"}'
    cut = len(b'{"messages": [') + 3 * len(TINY) + 10  # 3 whole, the 4th cut
    too_many_messages(body[:cut], limits)
    with pytest.raises(BadRequest, match="over 3 items"):
        too_many_messages(body[: cut + len(TINY)], limits)


def _no_parse(*args: object) -> int:
    raise AssertionError("the items were parsed")


def test_fewer_commas_than_the_limit_are_within_it_with_nothing_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A large body whose first messages are few and long (most real ones): its
    commas alone (two a message here) say it is within the limit."""
    monkeypatch.setattr(prescan, "_complete_items", _no_parse)
    monkeypatch.setattr(prescan, "_flat_items_over", _no_parse)
    limits = LimitsConfig(max_messages=10)
    long = b'{"role": "user", "content": "' + b"a" * 5000 + b'"},'
    too_many_messages(b'{"messages": [' + long * 3 + long[:-1] + b'], "model": "chat"}', limits)


def test_flat_messages_over_the_limit_are_refused_with_none_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hostile body (tiny flat messages): refused from its brackets and quotes,
    on an early look too (`final=False`, which never parses)."""
    monkeypatch.setattr(prescan, "_complete_items", _no_parse)
    limits = LimitsConfig(max_messages=2048)
    body = b'{"messages":[' + TINY * 2200  # 66 KiB of a body still arriving
    for final in (True, False):
        with pytest.raises(BadRequest, match="over 2048 items"):
            too_many_messages(body, limits, final=final)
    # Strings with commas, quotes and backslashes in them are still strings.
    item = b'{"role": "user", "content": "a \\\\\\" , \\": \\\\"}, '
    with pytest.raises(BadRequest, match="over 3 items"):
        too_many_messages(b'{"messages": [' + item * 5, LimitsConfig(max_messages=3))


def test_messages_with_structure_inside_are_left_to_the_parse() -> None:
    """Content parts (an array in each message), or a bracket in a string, cannot be
    told from the brackets: an early look stays silent; the last look parses and
    refuses."""
    limits = LimitsConfig(max_messages=3)
    for item in (
        b'{"role": "user", "content": [{"type": "text", "text": "a"}]},',
        b'{"role": "user", "content": "}, {"},',
    ):
        body = b'{"messages": [' + item * 5
        too_many_messages(body, limits, final=False)
        with pytest.raises(BadRequest, match="over 3 items"):
            too_many_messages(body, limits)


def test_an_escaped_quote_does_not_end_a_string() -> None:
    """One message whose text, read with its escaped quotes taken as quotes, would
    look like two flat objects: not refused at a limit of one."""
    limits = LimitsConfig(max_messages=1)
    body = json.dumps({"messages": [{"role": "user", "content": '"}, {"'}]}).encode()
    assert b'\\"}, {\\"' in body
    for final in (True, False):
        too_many_messages(body, limits, final=final)


def _message() -> st.SearchStrategy[object]:
    text = st.text(alphabet='ab ,:{}[]"\\\n\u00e9', max_size=6)
    flat = st.dictionaries(st.sampled_from(["role", "content", "name"]), text, max_size=3)
    parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), max_size=2)
    nested = st.fixed_dictionaries({"role": st.just("user"), "content": parts})
    deep = st.recursive(
        st.one_of(text, st.integers()),
        lambda inner: st.lists(inner, max_size=2) | st.dictionaries(text, inner, max_size=2),
        max_leaves=6,
    )
    return st.one_of(flat, nested, text, st.integers(), st.dictionaries(text, deep, max_size=2))


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(_message(), max_size=8),
    most=st.integers(min_value=1, max_value=6),
    spaced=st.booleans(),
    ascii_only=st.booleans(),
    cut=st.integers(min_value=0, max_value=400),
)
def test_the_bounds_agree_with_a_parse(
    messages: list[object], most: int, spaced: bool, ascii_only: bool, cut: int
) -> None:
    """Whatever the messages and their strings hold, and wherever the body is cut: a
    refusal means more than `most` complete messages, and a whole body over the
    limit is refused."""
    separators = (", ", ": ") if spaced else (",", ":")
    body = json.dumps(
        {"messages": messages, "model": "chat"}, separators=separators, ensure_ascii=ascii_only
    ).encode()
    limits = LimitsConfig(max_messages=most)
    prefix = body[: max(len(body) - cut, 0)]
    for raw in (body, prefix):
        for final in (True, False):
            try:
                too_many_messages(raw, limits, final=final)
            except BadRequest:
                assert len(messages) > most
                whole = _complete_prefix_items(raw)
                assert whole > most, (raw, whole)
            else:
                assert not (final and raw is body and len(messages) > most)


def _complete_prefix_items(raw: bytes) -> int:
    """How many messages of `raw` (a prefix of a body) are complete, by parsing."""
    text = raw.decode("utf-8", "ignore")
    start = text.index("[") + 1
    decoder = json.JSONDecoder()
    count, at = 0, start
    while True:
        while text[at : at + 1] in (" ", ","):
            at += 1
        try:
            _, at = decoder.raw_decode(text, at)
        except ValueError:
            return count
        count += 1
