"""Filters: which targets may take this turn at all, and why the others may not.

A filter never ranks. Survivors keep the route's listed order; every rejected
target carries a short reason, so an empty set becomes a `NoTargetAvailable` that
says exactly why each target was left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from router.errors import NoTargetAvailable
from router.policy.base import RoutingRequest, TargetView

Rejected = tuple[tuple[str, str], ...]
#: a filter returns why the target cannot take the turn, or None if it can
Filter = Callable[[RoutingRequest, TargetView], str | None]


def breaker_filter(request: RoutingRequest, view: TargetView) -> str | None:
    del request
    if view.available:
        return None
    if view.breaker == "open":
        return "breaker open"
    if view.breaker == "half_open":
        return "breaker half-open, probe in use"
    return "breaker not available"


def local_limits_filter(request: RoutingRequest, view: TargetView) -> str | None:
    del request
    return None if view.within_local_limits else "over local rpm/tpm limit"


def context_filter(request: RoutingRequest, view: TargetView) -> str | None:
    limit = view.max_context_tokens
    if limit is None:
        return None
    out = request.max_output_tokens or 0
    if request.prompt_tokens + out <= limit:
        return None
    asked = f"{request.prompt_tokens} prompt"
    if out:
        asked += f" + {out} output"
    return f"{asked} tokens > max_context_tokens {limit}"


def endpoint_filter(request: RoutingRequest, view: TargetView) -> str | None:
    # litellm serves chat, Responses and embeddings (router/capabilities.py), never
    # legacy completions: such a turn would come back as a 400 and, being the client's
    # fault, would not fall back to a target that serves it.
    if request.endpoint == "completions" and view.kind == "litellm":
        return (
            "litellm targets serve /v1/chat/completions, /v1/responses and /v1/embeddings, "
            "not /v1/completions"
        )
    return None


def ratelimit_filter(request: RoutingRequest, view: TargetView) -> str | None:
    # Headroom inflates predicted TTFT as it shrinks; at zero the provider would
    # answer 429 until its window resets, however slow the alternatives are.
    if view.ratelimit_headroom <= 0.0:
        return "provider rate limit exhausted until its window resets"
    return None


FILTERS: tuple[Filter, ...] = (
    endpoint_filter,
    breaker_filter,
    local_limits_filter,
    ratelimit_filter,
    context_filter,
)


def filter_targets(
    request: RoutingRequest,
    targets: Sequence[TargetView],
    filters: Sequence[Filter] = FILTERS,
) -> tuple[tuple[TargetView, ...], Rejected]:
    """Split targets into survivors (in listed order) and (name, reason) rejections."""
    survivors: list[TargetView] = []
    rejected: list[tuple[str, str]] = []
    usual = filters is FILTERS
    for view in targets:
        if (
            usual
            and view.available
            and view.within_local_limits
            and view.ratelimit_headroom > 0.0
            and view.max_context_tokens is None
            and view.kind != "litellm"
        ):
            # What passes every one of FILTERS at a glance (the usual turn): no calls.
            survivors.append(view)
            continue
        reasons = [r for f in filters if (r := f(request, view)) is not None]
        if reasons:
            rejected.append((view.name, "; ".join(reasons)))
        else:
            survivors.append(view)
    return tuple(survivors), tuple(rejected)


def no_target_error(route: str, rejected: Rejected) -> NoTargetAvailable:
    if not rejected:
        return NoTargetAvailable(f"no target available for route '{route}': it has no targets")
    why = ", ".join(f"{name} ({reason})" for name, reason in rejected)
    return NoTargetAvailable(f"no target available for route '{route}': {why}")


def eligible_targets(
    request: RoutingRequest, targets: Sequence[TargetView]
) -> tuple[tuple[TargetView, ...], Rejected]:
    """`filter_targets`, raising NoTargetAvailable when nothing survives."""
    survivors, rejected = filter_targets(request, targets)
    if not survivors:
        raise no_target_error(request.route, rejected)
    return survivors, rejected
