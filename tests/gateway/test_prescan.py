"""The bounded looks admission refuses on: certain for valid JSON, else silent."""

from __future__ import annotations

import json

import pytest

from router.edge import LimitsConfig
from router.errors import BadRequest
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
