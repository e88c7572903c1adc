from __future__ import annotations

from router.config import Config, parse_config
from router.errors import UpstreamConnectError
from router.signals.registry import SignalsRegistry
from tests.signals.conftest import FakeClock

BASE = """
targets:
  - {name: gpu-a, kind: vllm, base_url: "http://gpu-a:8000/v1", model: llama, expected_ttft_ms: 100}
  - {name: hosted, kind: openai, base_url: "https://api.example.com/v1", model: mini}
routes:
  - {name: chat-fast, targets: [gpu-a, hosted]}
"""

RELOADED = """
signals: {breaker_failures: 1}
targets:
  - {name: gpu-a, kind: vllm, base_url: "http://gpu-a:8000/v1", model: llama, expected_ttft_ms: 250}
  - {name: gpu-b, kind: vllm, base_url: "http://gpu-b:8000/v1", model: llama}
routes:
  - {name: chat-fast, targets: [gpu-a, gpu-b]}
"""


def config(text: str) -> Config:
    return parse_config(text, "policy.yaml")


def test_built_from_the_config(clock: FakeClock) -> None:
    registry = SignalsRegistry(config(BASE), clock)
    assert list(registry) == ["gpu-a", "hosted"]
    assert len(registry) == 2
    views = registry.views()
    assert [(v.name, v.kind, v.prior_ttft_s) for v in views] == [
        ("gpu-a", "vllm", 0.1),
        ("hosted", "openai", 0.5),
    ]
    assert [v.name for v in registry.views(["hosted"])] == ["hosted"]
    assert registry.fresh == ("gpu-a", "hosted")
    assert registry.removed == ()


def test_a_reload_keeps_the_live_signals_of_surviving_targets(clock: FakeClock) -> None:
    old = SignalsRegistry(config(BASE), clock)
    gpu_a = old["gpu-a"]
    streaming = gpu_a.begin(10)
    with gpu_a.begin(10) as a:
        clock.advance(0.5)
        a.first_token()
        a.finished()
    old.affinity.put("conv-1", "gpu-a")
    old.affinity.put("conv-2", "hosted")

    new = old.rebuilt(config(RELOADED))
    assert new["gpu-a"] is gpu_a
    assert new.fresh == ("gpu-b",)
    assert new.removed == ("hosted",)
    view = new["gpu-a"].view()
    assert (view.in_flight, view.ttft_ewma_s, view.prior_ttft_s) == (1, 0.5, 0.25)
    assert new.affinity is old.affinity
    assert (new.affinity.get("conv-1"), new.affinity.get("conv-2")) == ("gpu-a", None)
    streaming.release()  # an attempt begun before the reload releases into the same signals
    assert new["gpu-a"].view().in_flight == 0
    assert new["gpu-a"].breaker.next_backoff_s() == 1.0
    with new["gpu-a"].begin(10) as attempt:
        attempt.failed(UpstreamConnectError("refused"))
    assert new["gpu-a"].view().breaker == "open"  # breaker_failures: 1 applies now


def test_a_target_that_now_points_elsewhere_starts_fresh(clock: FakeClock) -> None:
    old = SignalsRegistry(config(BASE), clock)
    old.affinity.put("conv-1", "gpu-a")
    moved = BASE.replace("http://gpu-a:8000/v1", "http://gpu-z:8000/v1")
    new = old.rebuilt(config(moved))
    assert new["gpu-a"] is not old["gpu-a"]
    assert new["hosted"] is old["hosted"]
    assert new.fresh == ("gpu-a",)
    assert new.affinity.get("conv-1") is None
