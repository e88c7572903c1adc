"""What a config compiles to, and what a reload carries over (router/wiring.py): an
unchanged target keeps its upstream (its warm pool) unless a reload is closing it, an
unchanged route keeps its policy and its budgets (live windows), a target's new
capabilities reach an unchanged route, and a missing secret is a ConfigError."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from router.config import Config, TargetConfig, parse_config
from router.errors import ConfigError
from router.signals.registry import SignalsRegistry
from router.upstream.base import Upstream, UpstreamSetup
from router.wiring import Runtime, Wiring, compile_runtime

CONFIG = """
targets:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
  - {name: b, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
routes:
  - {name: chat, targets: [a, b], hedge: {after_ms: adaptive, max_rate: 0.1}}
  - {name: other, targets: [b]}
"""


class FakeUpstream:
    """Stands for an upstream: which target it was made for, and nothing else."""

    def __init__(self, target: TargetConfig) -> None:
        self.target = target.name


def wiring(made: list[str], environ: dict[str, str] | None = None) -> Wiring:
    def factory(target: TargetConfig, setup: UpstreamSetup) -> Upstream:
        made.append(target.name)
        return cast(Upstream, FakeUpstream(target))

    def no_cascade(target: TargetConfig) -> Any:
        raise AssertionError("no cascade target here")

    return Wiring(
        environ=environ or {},
        clock=time.monotonic,
        upstream_factory=factory,
        connections=lambda name: lambda reused: None,
        cascade=no_cascade,
        config_path="policy.yaml",
    )


def compiled(config: Config, wired: Wiring, previous: Runtime | None = None, **kw: Any) -> Runtime:
    signals = (
        previous.signals.rebuilt(config) if previous else SignalsRegistry(config, time.monotonic)
    )
    return compile_runtime(config, signals, previous, wired, **kw)


def test_an_unchanged_target_keeps_its_upstream_and_a_changed_one_gets_a_new_one() -> None:
    made: list[str] = []
    wired = wiring(made)
    first = compiled(parse_config(CONFIG), wired)
    assert made == ["a", "b"]
    changed = parse_config(CONFIG.replace("model: m}\n  - {name: b", "model: m2}\n  - {name: b"))
    second = compiled(changed, wired, first)
    assert made == ["a", "b", "a"]
    assert second.targets["b"].upstream is first.targets["b"].upstream
    assert second.targets["a"].upstream is not first.targets["a"].upstream
    # an upstream a reload is already closing is never kept, even for an unchanged target
    third = compiled(changed, wired, second, closing=[second.targets["b"].upstream])
    assert made == ["a", "b", "a", "b"]
    assert third.targets["b"].upstream is not second.targets["b"].upstream
    assert third.targets["a"].upstream is second.targets["a"].upstream


def test_an_unchanged_route_keeps_its_policy_and_budgets_and_a_changed_one_starts_afresh() -> None:
    wired = wiring([])
    first = compiled(parse_config(CONFIG), wired)
    first.routes["chat"].budget.record_turn()  # a live window the reload must not drop
    changed = parse_config(CONFIG.replace("targets: [b]}", "targets: [b, a]}"))
    second = compiled(changed, wired, first)
    kept, fresh = second.routes["chat"], second.routes["other"]
    assert kept.policy is first.routes["chat"].policy
    assert kept.budget is first.routes["chat"].budget and kept.budget.rate == 0.0
    assert len(kept.budget._slots) == 1
    assert kept.explore is first.routes["chat"].explore
    assert fresh.policy is not first.routes["other"].policy
    assert fresh.budget is not first.routes["other"].budget
    assert fresh.serving["chat"] == ("b", "a")


def test_a_targets_new_capabilities_reach_a_route_that_did_not_change() -> None:
    wired = wiring([])
    first = compiled(parse_config(CONFIG), wired)
    assert first.routes["chat"].serving["embeddings"] == ("a", "b")
    declared = CONFIG.replace(
        "model: m}\n  - {name: b", "model: m, capabilities: [chat]}\n  - {name: b"
    )
    second = compiled(parse_config(declared), wired, first)
    assert second.routes["chat"].policy is first.routes["chat"].policy
    assert second.routes["chat"].serving["embeddings"] == ("b",)
    assert second.routes["chat"].serving["chat"] == ("a", "b")


def test_a_missing_secret_is_a_config_error_naming_the_variable_and_the_file() -> None:
    needs_key = CONFIG.replace(
        "model: m}\n  - {name: b", "model: m, api_key_env: A_KEY}\n  - {name: b"
    )
    with pytest.raises(ConfigError) as err:
        compiled(parse_config(needs_key), wiring([]))
    assert "A_KEY" in err.value.message and "policy.yaml" in err.value.message
    made: list[str] = []
    runtime = compiled(parse_config(needs_key), wiring(made, {"A_KEY": "sk-test"}))
    assert set(runtime.targets) == {"a", "b"} and made == ["a", "b"]
