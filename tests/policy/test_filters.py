from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import product

import pytest

from router.errors import NoTargetAvailable
from router.policy.base import BreakerState, TargetView
from router.policy.filters import FILTERS, eligible_targets, filter_targets
from router.policy.registry import plan_turn
from router.policy.simple import OrderedPolicy
from tests.policy.views import ctx, hosted, request


def names(views: Sequence[TargetView]) -> list[str]:
    return [v.name for v in views]


def test_rejects_open_breaker_and_taken_half_open_probe() -> None:
    views = [
        hosted("open", 0.3, breaker="open", available=False),
        hosted("probing", 0.3, breaker="half_open", available=False),
        hosted("probe_free", 0.3, breaker="half_open", available=True),
        hosted("ok", 0.3),
    ]
    survivors, rejected = filter_targets(request(), views)
    assert names(survivors) == ["probe_free", "ok"]
    assert rejected == (
        ("open", "breaker open"),
        ("probing", "breaker half-open, probe in use"),
    )


def test_rejects_over_local_limits() -> None:
    survivors, rejected = filter_targets(
        request(), [hosted("a", 0.3, within_local_limits=False), hosted("b", 0.3)]
    )
    assert names(survivors) == ["b"]
    assert rejected == (("a", "over local rpm/tpm limit"),)


def test_rejects_a_request_too_long_for_the_context() -> None:
    small = hosted("small", 0.3, max_context_tokens=8192)
    big = hosted("big", 0.3, max_context_tokens=128_000)
    survivors, rejected = filter_targets(request(8000, 500), [small, big])
    assert names(survivors) == ["big"]
    assert rejected == (("small", "8000 prompt + 500 output tokens > max_context_tokens 8192"),)
    # without max_output_tokens only the prompt counts
    survivors, _ = filter_targets(request(8000, None), [small, big])
    assert names(survivors) == ["small", "big"]


def test_reasons_accumulate_per_target() -> None:
    view = hosted("a", 0.3, breaker="open", available=False, within_local_limits=False)
    _, rejected = filter_targets(request(), [view])
    assert rejected == (("a", "breaker open; over local rpm/tpm limit"),)


def test_nothing_left_raises_with_every_reason() -> None:
    views = [
        hosted("a", 0.3, breaker="open", available=False),
        hosted("b", 0.3, within_local_limits=False),
        hosted("c", 0.3, max_context_tokens=8192),
    ]
    with pytest.raises(NoTargetAvailable) as info:
        plan_turn(OrderedPolicy(), request(9000, 500), views, ctx())
    assert info.value.status == 503
    assert info.value.message == (
        "no target available for route 'chat': a (breaker open), "
        "b (over local rpm/tpm limit), "
        "c (9000 prompt + 500 output tokens > max_context_tokens 8192)"
    )


def test_a_route_without_targets_raises() -> None:
    with pytest.raises(NoTargetAvailable, match="has no targets"):
        eligible_targets(request(), [])


def test_keeps_litellm_targets_out_of_legacy_completions_turns() -> None:
    views = [replace(hosted("claude", 0.3), kind="litellm"), hosted("oai", 0.3)]
    survivors, rejected = filter_targets(replace(request(), endpoint="completions"), views)
    assert names(survivors) == ["oai"]
    assert rejected == (
        (
            "claude",
            "litellm targets serve /v1/chat/completions, /v1/responses and /v1/embeddings, "
            "not /v1/completions",
        ),
    )
    survivors, _ = filter_targets(request(), views)  # chat turns may use both
    assert names(survivors) == ["claude", "oai"]


def test_a_target_with_no_provider_headroom_left_is_filtered() -> None:
    spent = hosted("spent", 0.1, ratelimit_headroom=0.0)
    nearly = hosted("nearly", 0.1, ratelimit_headroom=0.05)
    kept, rejected = filter_targets(request(), [spent, nearly])
    assert [v.name for v in kept] == ["nearly"]  # low headroom only scores worse
    assert rejected == (("spent", "provider rate limit exhausted until its window resets"),)


BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")


def test_the_usual_turns_shortcut_agrees_with_every_filter() -> None:
    # `filter_targets` lets a target that plainly passes FILTERS through without calling
    # them; with a copy of the tuple (not FILTERS itself) every filter runs. The two must
    # agree on every mix of the signals the filters read.
    views = [
        replace(
            hosted("t", 0.3),
            kind=kind,
            available=available,
            breaker=breaker,
            within_local_limits=within,
            ratelimit_headroom=headroom,
            max_context_tokens=context,
        )
        for kind, available, breaker, within, headroom, context in product(
            ("openai", "litellm", "vllm"),
            (True, False),
            BREAKER_STATES,
            (True, False),
            (1.0, 0.2, 0.0, float("nan")),
            (None, 100_000, 500),
        )
    ]
    for endpoint in ("chat", "completions", "embeddings"):
        turn = replace(request(prompt_tokens=1000), endpoint=endpoint)
        for view in views:
            assert filter_targets(turn, [view]) == filter_targets(turn, [view], tuple(FILTERS))
