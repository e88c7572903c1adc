"""The Router's lifespan: background tasks that die take the process down, reloaded
upstreams close once their turns are done, litellm's absence is a clear error."""

from __future__ import annotations

import builtins
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from router.config import parse_config
from router.errors import ConfigError
from router.lifespan import guarded
from router.policy.base import RoutingRequest
from router.runtime import Router

pytestmark = pytest.mark.anyio

CONFIG = """
server: {drain_s: 30}
targets:
  - {name: a, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
  - {name: b, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}
routes:
  - {name: chat, targets: [a, b]}
"""


async def test_a_background_task_that_dies_takes_the_process_down() -> None:
    router = Router(parse_config(CONFIG), environ={})
    reasons: list[str] = []
    router.on_fatal = reasons.append

    async def broken() -> None:
        raise RuntimeError("scraper bug")

    router.ready = True
    await guarded(router.die, "engine scraper of a", broken)
    assert router.ready is False
    assert router.fatal is not None and "scraper bug" in router.fatal
    assert reasons == [router.fatal]


async def test_a_reloaded_configs_upstreams_close_when_its_turns_are_done() -> None:
    clock = [0.0]
    router = Router(parse_config(CONFIG), environ={}, clock=lambda: clock[0])
    pools = router.metrics.upstream_pools
    assert pools._value.get() == 2
    old = router.runtime
    old.active = 1  # a turn still streams on the old config
    changed = CONFIG.replace("model: m}\n  - {name: b", "model: m2}\n  - {name: b")
    router.reload(parse_config(changed))
    assert pools._value.get() == 3  # a's old pool and its new one
    await router.retire()
    assert pools._value.get() == 3
    old.active = 0
    await router.retire()
    assert pools._value.get() == 2
    # a turn that never ends does not keep a pool forever: drain_s bounds the wait
    again = router.runtime
    again.active = 1
    router.reload(parse_config(CONFIG))
    clock[0] += 31.0
    await router.retire()
    assert pools._value.get() == 2
    await router.aclose()


def test_a_litellm_target_without_the_extra_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_litellm(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "litellm" or name.startswith("litellm."):
            raise ImportError("No module named 'litellm'", name="litellm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litellm)
    monkeypatch.delitem(__import__("sys").modules, "litellm", raising=False)
    text = CONFIG.replace(
        '{name: b, kind: openai, base_url: "http://127.0.0.1:9/v1", model: m}',
        "{name: b, kind: litellm, model: anthropic/claude-3-5-haiku-20241022}",
    )
    with pytest.raises(ConfigError, match=r"pip install 'firsttoken\[hosted\]'"):
        Router(parse_config(text), environ={})


async def test_a_reload_reads_the_file_off_the_event_loop(tmp_path: Any) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(CONFIG)
    router = Router(parse_config(CONFIG), environ={}, config_path=str(path))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    path.write_text(CONFIG + "# " + "x" * 2_000_000 + "\n")
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await router.reload_from_file()
        tg.cancel_scope.cancel()
    assert ticks > 1  # the loop kept turning while the file was read
    await router.aclose()


def test_a_route_whose_slo_is_on_first_answer_is_planned_on_that_figure() -> None:
    text = CONFIG.replace(
        "  - {name: chat, targets: [a, b]}",
        "  - {name: chat, targets: [a, b], slo: {ttft_ms: 500, on: first_answer}}\n"
        "  - {name: fast, targets: [a, b], slo: {ttft_ms: 500}}",
    )
    router = Router(parse_config(text), environ={})
    runtime = router.runtime
    signals = runtime.signals["a"]
    for _ in range(5):
        with signals.begin(10) as attempt:
            attempt.first_token(answer=False)  # reasoning; no answer yet
            attempt.first_answer()

    def samples(route: str) -> int:
        request = RoutingRequest(route=route, endpoint="chat", prompt_tokens=10)
        _, views = router.plan(runtime, runtime.routes[route], request)
        return views["a"].ttft_samples

    assert signals.answer_sketch.count == signals.ttft_sketch.count == 5
    signals.answer_sketch.observe(1.0)  # one more answer than first tokens
    assert (samples("chat"), samples("fast")) == (6, 5)
