"""The YAML side of policies: one small frozen model per `type:`.

`PolicySpec` is a pydantic discriminated union on `type`; `policy/registry.py`
maps each spec to the implementation that plans with it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderedSpec(_Spec):
    """Try the route's targets in the order listed."""

    type: Literal["ordered"] = "ordered"


class RoundRobinSpec(_Spec):
    type: Literal["round_robin"] = "round_robin"


class RandomSpec(_Spec):
    type: Literal["random"] = "random"


class LatencySpec(_Spec):
    """Lowest predicted TTFT at `quantile`."""

    type: Literal["latency"] = "latency"
    quantile: float = Field(0.9, gt=0.0, lt=1.0)


class P2CSpec(_Spec):
    """Power of two choices over peak-EWMA TTFT x (in-flight + 1)."""

    type: Literal["p2c"] = "p2c"


class SloCostSpec(_Spec):
    """Cheapest target whose predicted TTFT meets the route's SLO; else the fastest."""

    type: Literal["slo_cost"] = "slo_cost"


class Weights(_Spec):
    ttft: float = Field(1.0, ge=0.0)
    cost: float = Field(0.0, ge=0.0)
    load: float = Field(0.0, ge=0.0)
    affinity: float = Field(0.0, ge=0.0)


class WeightedSpec(_Spec):
    """Sum of scorers in [0, 1] times their weights; highest wins."""

    type: Literal["weighted"] = "weighted"
    weights: Weights = Weights()
    quantile: float = Field(0.9, gt=0.0, lt=1.0)


PolicySpec = Annotated[
    OrderedSpec | RoundRobinSpec | RandomSpec | LatencySpec | P2CSpec | SloCostSpec | WeightedSpec,
    Field(discriminator="type"),
]
