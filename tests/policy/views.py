"""Hand-built target snapshots for policy tests."""

from __future__ import annotations

import random
from typing import Any

from router.config import Price, Slo
from router.policy.base import EngineView, PlanContext, RoutingRequest, TargetView

FREE = Price(input_per_mtok=0.0, output_per_mtok=0.0)
#: $0.15 in, $0.60 out per million tokens (a small hosted model)
CHEAP = Price(input_per_mtok=0.15, output_per_mtok=0.6)
#: $0.30 in, $1.20 out per million tokens
PRICEY = Price(input_per_mtok=0.3, output_per_mtok=1.2)


def hosted(
    name: str,
    p90: float,
    *,
    p50: float | None = None,
    p99: float | None = None,
    price: Price = CHEAP,
    **kw: Any,
) -> TargetView:
    lo = p50 if p50 is not None else p90 * 0.5
    hi = p99 if p99 is not None else p90 * 2.0
    fields: dict[str, Any] = {
        "ttft_quantiles": ((0.5, lo), (0.9, p90), (0.99, hi)),
        "ttft_samples": 100,
        "ttft_ewma_s": lo,
    }
    fields.update(kw)
    return TargetView(name=name, kind="openai", price=price, **fields)


def vllm(
    name: str,
    *,
    waiting: float = 0.0,
    running: float = 2.0,
    stale: bool = False,
    unloaded: float = 0.05,
    rate: float | None = 10.0,
    p50: float = 0.10,
    p90: float = 0.15,
    **kw: Any,
) -> TargetView:
    """A local engine: predicted p90 = unloaded + Erlang(waiting + 1) p90 / rate +
    (p90 - p50), the wait term being 0 with nothing waiting."""
    fields: dict[str, Any] = {
        "ttft_quantiles": ((0.5, p50), (0.9, p90), (0.99, p90 * 2)),
        "ttft_samples": 100,
        "ttft_ewma_s": p50,
        "unloaded_ttft_s": unloaded,
        "completion_rate": rate,
        "engine": EngineView(
            waiting=waiting, running=running, kv_usage=0.3, age_s=0.1, stale=stale
        ),
    }
    fields.update(kw)
    return TargetView(name=name, kind="vllm", price=FREE, **fields)


def request(
    prompt_tokens: int = 1000,
    max_output_tokens: int | None = 100,
    affinity: str | None = None,
) -> RoutingRequest:
    return RoutingRequest(
        route="chat",
        prompt_tokens=prompt_tokens,
        max_output_tokens=max_output_tokens,
        affinity_target=affinity,
    )


def ctx(
    seed: int = 0, slo_ms: float | None = None, quantile: float = 0.9, exploration: float = 0.0
) -> PlanContext:
    slo = Slo(ttft_ms=slo_ms, quantile=quantile) if slo_ms is not None else None
    return PlanContext(rng=random.Random(seed), slo=slo, exploration=exploration)
