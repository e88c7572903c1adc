"""From a client's bytes to a typed turn request: what is read, and the 400s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.edge import LimitsConfig
from router.errors import BadRequest
from router.gateway.request import DEFAULT_LIMITS, MAX_OUTPUT_TOKENS, parse_request
from router.upstream.base import Endpoint

MESSAGES = [{"role": "user", "content": "Hello there, how are you today?"}]


def parse(body: dict[str, Any], endpoint: Endpoint = "chat", session: str | None = None) -> Any:
    return parse_request(endpoint, json.dumps(body).encode(), session)


def test_a_chat_request_is_read_for_routing_and_otherwise_kept_as_sent() -> None:
    body = {
        "model": "chat",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 64,
        "max_tokens": 999,
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    parsed = parse(body)
    assert parsed.endpoint == "chat"
    assert parsed.model == "chat"
    assert parsed.stream is True
    assert parsed.client_wants_usage is True
    assert parsed.max_output_tokens == 64  # max_completion_tokens wins over max_tokens
    assert parsed.prompt_tokens == len(MESSAGES[0]["content"]) // 4 + 4
    # forwarded unchanged but for the model, which each target gets its own of
    assert json.loads(parsed.body.for_target("m").wire) == {**body, "model": "m"}


def test_usage_is_wanted_only_on_a_stream_that_asked_for_it() -> None:
    asked = {"include_usage": True}
    assert not parse({"model": "m", "messages": MESSAGES}).client_wants_usage
    assert not parse({"model": "m", "messages": MESSAGES, "stream": True}).client_wants_usage
    unary = {"model": "m", "messages": MESSAGES, "stream_options": asked}
    assert not parse(unary).client_wants_usage


def test_content_parts_count_their_text() -> None:
    parts = [{"type": "text", "text": "x" * 400}, {"type": "image_url", "image_url": {}}]
    parsed = parse({"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert parsed.prompt_tokens == 400 // 4 + 4


def test_a_completions_request_needs_a_prompt() -> None:
    parsed = parse({"model": "m", "prompt": "y" * 80}, endpoint="completions")
    assert (parsed.endpoint, parsed.prompt_tokens, parsed.session_key) == ("completions", 20, None)
    with pytest.raises(BadRequest, match="'prompt'"):
        parse({"model": "m", "messages": MESSAGES}, endpoint="completions")


def test_the_conversation_key_comes_from_the_header_then_user_then_its_opening() -> None:
    two_turns = [*MESSAGES, {"role": "assistant", "content": "Fine."}]
    base = {"model": "m", "messages": two_turns, "user": "u-17"}
    assert parse(base, session="s-1").session_key == "h:s-1"
    assert parse(base).session_key == "u:u-17"
    opening = parse({"model": "m", "messages": two_turns}).session_key
    later = parse({"model": "m", "messages": [*two_turns, *MESSAGES]}).session_key
    assert opening is not None and opening.startswith("p:")
    assert later == opening  # the same conversation, a later turn: the same key
    assert parse({"model": "m", "messages": MESSAGES}).session_key is None  # a first turn


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "m", "messages": [], "temperature": NaN}', "NaN"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "'model'"),
        (b'{"model": "", "messages": [{"role": "user"}]}', "'model'"),
        (b'{"model": "m", "messages": []}', "'messages'"),
        (b'{"model": "m", "messages": ["hi"]}', "'role'"),
        (b'{"model": "m", "messages": [{"role": "user", "content": [{"text": 5}]}]}', "'text'"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "'stream'"),
        (b'{"model": "m", "messages": [{"role": "user"}], "stream_options": 1}', "stream_options"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": -1}', "'max_tokens'"),
        (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": true}', "'max_tokens'"),
    ],
)
def test_a_malformed_request_is_a_400_that_says_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(BadRequest, match=says) as caught:
        parse_request("chat", raw, None)
    assert caught.value.status == 400


def test_output_tokens_and_nesting_are_bounded() -> None:
    too_many = {"model": "m", "messages": MESSAGES, "max_tokens": MAX_OUTPUT_TOKENS + 1}
    with pytest.raises(BadRequest, match="larger than"):
        parse(too_many)
    nested: Any = "x"
    for _ in range(DEFAULT_LIMITS.max_depth + 1):
        nested = [nested]
    with pytest.raises(BadRequest, match="nests deeper"):
        parse({"model": "m", "messages": MESSAGES, "metadata": nested})
    shallow: Any = "x"
    for _ in range(DEFAULT_LIMITS.max_depth - 3):
        shallow = [shallow]
    assert parse({"model": "m", "messages": MESSAGES, "metadata": shallow}).model == "m"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": 1e999}',
        b'{"model": "m", "messages": [{"role": "user"}], "top_p": -1E400}',
        b'{"model": "m", "messages": [{"role": "user"}], "tools": [{"x": [2.5e308]}]}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": NaN}',
        b'{"model": "m", "messages": [{"role": "user"}], "temperature": -Infinity}',
    ],
    ids=["1e999", "-1E400", "nested", "NaN", "-Infinity"],
)
def test_a_number_json_cannot_carry_is_a_400_not_infinity_sent_upstream(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_request("chat", raw, None)


def test_large_finite_numbers_are_kept_and_go_upstream_as_valid_json() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user"}], "temperature": 1e308, "seed": 1e3}'
    wire = parse_request("chat", raw, None).body.for_target("t").wire
    assert json.loads(wire)["temperature"] == 1e308
    assert b"Infinity" not in wire and b"NaN" not in wire


def test_messages_and_content_parts_are_bounded_by_the_configured_limits() -> None:
    limits = LimitsConfig(max_messages=3, max_content_parts=4, max_depth=8)
    three = [{"role": "user", "content": "x"}] * 3
    assert parse_request("chat", json.dumps({"model": "m", "messages": three}).encode(), None)
    four = json.dumps({"model": "m", "messages": [*three, three[0]]}).encode()
    with pytest.raises(BadRequest, match="limit is 3"):
        parse_request("chat", four, None, limits)
    parts = [{"type": "text", "text": "x"}] * 3
    over = [{"role": "user", "content": parts}, {"role": "user", "content": parts}]
    with pytest.raises(BadRequest, match="over 4 content parts"):
        parse_request("chat", json.dumps({"model": "m", "messages": over}).encode(), None, limits)
    nested: Any = "x"
    for _ in range(8):
        nested = [nested]
    deep = json.dumps({"model": "m", "messages": MESSAGES, "metadata": nested}).encode()
    with pytest.raises(BadRequest, match="deeper than 8"):
        parse_request("chat", deep, None, limits)
