"""Chat and embeddings dialects: the usage they read (cached and reasoning tokens too),
and an embeddings body checked without parsing its vectors."""

from __future__ import annotations

import json

import pytest

from router.config import Price
from router.turn.dialect import CHAT, EMBEDDINGS
from router.turn.sse import MalformedFrame


def test_chat_usage_details_are_read() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "prompt_tokens_details": {"cached_tokens": 80},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    tokens = CHAT.tokens(usage)
    assert (tokens.prompt, tokens.completion, tokens.cached, tokens.reasoning) == (100, 50, 80, 30)
    assert CHAT.tokens({"prompt_tokens": 3}).completion is None


def test_cached_input_is_priced_at_its_own_rate_when_one_is_given() -> None:
    price = Price(input_per_mtok=1.0, output_per_mtok=2.0)
    assert price.cost(100, 50, cached_tokens=80) == pytest.approx(200e-6)
    cheap = Price(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.1)
    assert cheap.cost(100, 50, cached_tokens=80) == pytest.approx((20 + 8 + 100) / 1e6)


def _embeddings(n: int, dims: int) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": [0.125] * dims} for i in range(n)]
    usage = {"prompt_tokens": 7 * n, "total_tokens": 7 * n}
    return json.dumps({"object": "list", "data": data, "model": "m", "usage": usage}).encode()


def test_an_embeddings_body_gives_its_usage() -> None:
    assert EMBEDDINGS.whole("a", _embeddings(64, 1536)).usage == {
        "prompt_tokens": 448,
        "total_tokens": 448,
    }
    no_usage = b'{"object": "list", "data": []}'
    assert EMBEDDINGS.whole("a", no_usage).usage is None


def test_an_embeddings_usage_is_found_wherever_and_however_the_target_writes_it() -> None:
    usage = {"prompt_tokens": 9, "total_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}}
    base64 = [{"object": "embedding", "index": 0, "embedding": "AAAAPwAAgD8="}]
    floats = [{"object": "embedding", "index": 0, "embedding": [0.5, -1.25e-05]}]
    for data in (base64, floats):
        compact = json.dumps(
            {"object": "list", "data": data, "model": "m", "usage": usage}, separators=(",", ":")
        )
        first = json.dumps({"usage": usage, "object": "list", "data": data})  # usage first
        for body in (compact.encode(), first.encode(), b"\n " + compact.encode() + b"\n"):
            assert EMBEDDINGS.whole("a", body).usage == usage
    # a usage that is not an object is no usage (the turn falls back on its estimate)
    assert EMBEDDINGS.whole("a", b'{"data": [], "usage": null}').usage is None
    assert EMBEDDINGS.whole("a", b'{"data": [], "usage": {"prompt_tokens": }').usage is None


@pytest.mark.parametrize("bad", [b"<html></html>", b'{"error": {"message": "x"}}', b""])
def test_what_is_not_an_embeddings_list_fails_over(bad: bytes) -> None:
    with pytest.raises(MalformedFrame):
        EMBEDDINGS.whole("a", bad)
