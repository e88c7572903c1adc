"""Scenario files: which simulated servers to start and what load to offer them.

    name: hybrid
    seed: 7
    servers:
      - {name: local-a, kind: vllm, model: llama-3-8b, engine: {max_num_seqs: 16}}
      - {name: hosted-a, kind: hosted, model: gpt-4o-mini,
         price: {input_per_mtok: 0.15, output_per_mtok: 0.6},
         hosted: {ttft_median_s: 0.55, rpm: 600}}
      - {name: plain, kind: openai, ttft_ms: 50, itl_ms: 10}
    workload:
      duration_s: 60
      arrivals: {rate_per_s: 2, ramp: {start_rate_per_s: 0.5, duration_s: 20},
                 bursts: [{at_s: 30, duration_s: 5, multiplier: 4}]}
      turns_per_session: {median: 4, sigma: 0.5, max: 12}
      think_time_s: {median: 4, sigma: 0.5}
      prompt_tokens: {median: 60, sigma: 0.6, max: 600}
      output_tokens: {median: 120, sigma: 0.5, max: 400}

Models are frozen pydantic models with `extra="forbid"`; `load_scenario` reports
every problem as a `ConfigError` naming the file and field. The server kinds
map to `VllmSim` (engine parameters), `HostedSim` (TTFT distribution, limits,
error bursts) and `OpenAISim` (fixed timing). `tokens` is each server's natural
answer length (`Behaviour.tokens`).
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.config import Price, parse_yaml_model, read_text
from router.sim.engine import EngineParams
from router.sim.hosted import HostedParams


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Server(_Model):
    name: str = Field(min_length=1)
    model: str = Field(default="sim-model", min_length=1)
    price: Price = Price()
    tokens: int = Field(default=200, ge=1)


class VllmServerSpec(_Server):
    kind: Literal["vllm"]
    engine: EngineParams = EngineParams()


class HostedServerSpec(_Server):
    kind: Literal["hosted"]
    hosted: HostedParams = HostedParams()


class OpenAIServerSpec(_Server):
    kind: Literal["openai"]
    ttft_ms: float = Field(default=50.0, ge=0.0)
    itl_ms: float = Field(default=10.0, ge=0.0)


ServerSpec = Annotated[
    VllmServerSpec | HostedServerSpec | OpenAIServerSpec, Field(discriminator="kind")
]


class Dist(_Model):
    """A lognormal with this median and shape, clipped to [min, max]; sigma 0 is fixed."""

    median: float = Field(gt=0.0)
    sigma: float = Field(default=0.0, ge=0.0)
    min: float = Field(default=0.0, ge=0.0)
    max: float | None = Field(default=None, gt=0.0)


class Ramp(_Model):
    """The session rate grows linearly from `start_rate_per_s` over `duration_s`."""

    start_rate_per_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0)


class Burst(_Model):
    """The rate is multiplied by `multiplier` during [at_s, at_s + duration_s)."""

    at_s: float = Field(ge=0.0)
    duration_s: float = Field(gt=0.0)
    multiplier: float = Field(gt=0.0)


class Arrivals(_Model):
    """Open-loop Poisson arrivals of new sessions."""

    rate_per_s: float = Field(gt=0.0)
    ramp: Ramp | None = None
    bursts: tuple[Burst, ...] = ()


class Workload(_Model):
    #: new sessions start during [0, duration_s); their later turns may run past it
    duration_s: float = Field(gt=0.0)
    #: the model (route alias) every turn asks for
    model: str = Field(default="chat", min_length=1)
    arrivals: Arrivals
    turns_per_session: Dist = Dist(median=1.0)
    #: user think time between the assumed end of an answer and the next turn
    think_time_s: Dist = Dist(median=5.0)
    #: the answer's assumed duration, added before think time (the generator is open-loop)
    assumed_response_s: float = Field(default=1.0, ge=0.0)
    #: a system prompt shared by every session (a prefix cache hit on every server)
    system_prompt_tokens: int = Field(default=100, ge=0)
    #: tokens of each new user message
    prompt_tokens: Dist = Dist(median=50.0)
    #: max_tokens of each turn
    output_tokens: Dist = Dist(median=100.0)


class Scenario(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    servers: tuple[ServerSpec, ...] = Field(min_length=1)
    workload: Workload | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Scenario:
        names = [s.name for s in self.servers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate server names: {', '.join(duplicates)}")
        return self


def parse_scenario(text: str, file: str = "<scenario>") -> Scenario:
    """Validate a scenario's text; problems come back as file:line ConfigIssues."""
    return parse_yaml_model(Scenario, text, file)[0]


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    return parse_scenario(read_text(path), str(path))
