"""The routed fields of embeddings bodies: what is accepted, what is a 400, and the
estimate routing reads."""

from __future__ import annotations

from typing import Any

import pytest

from router.edge import LimitsConfig
from router.errors import BadRequest
from router.gateway.shapes import embeddings_tokens

LIMITS = LimitsConfig()


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("x" * 40, 10),
        (["x" * 40, "y" * 40], 20),
        ([1, 2, 3], 3),  # one input as token ids
        ([[1, 2, 3], [4, 5]], 5),  # a batch of token lists
        ([list(range(8192))] * 8, 8 * 8192),
        (["x" * 40, [1, 2]], 12),
    ],
)
def test_inputs_are_estimated_from_their_characters_or_token_ids(value: Any, tokens: int) -> None:
    assert embeddings_tokens({"input": value}, LIMITS) == tokens


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        [{"text": "x"}],
        [[1, 2.5]],  # a float is no token id
        [[1, True]],  # nor is a boolean (an int to Python)
        [[1, "2"]],
        [1, None],
        ["x", [1, False]],
    ],
)
def test_what_is_neither_text_nor_token_ids_is_a_400(value: Any) -> None:
    with pytest.raises(BadRequest, match="'input'"):
        embeddings_tokens({"input": value}, LIMITS)


def test_a_batch_over_the_limit_and_a_stream_are_400s() -> None:
    with pytest.raises(BadRequest, match="the limit is 2"):
        embeddings_tokens({"input": ["a", "b", "c"]}, LimitsConfig(max_inputs=2))
    with pytest.raises(BadRequest, match="not streamed"):
        embeddings_tokens({"input": "x", "stream": True}, LIMITS)
