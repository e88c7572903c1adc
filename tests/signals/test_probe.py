"""Active probes: a one-token request off the turn's path feeds the target's signals."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import anyio
import pytest

from router.config import Probe, SignalsConfig, TargetConfig, parse_config
from router.errors import ConfigError
from router.signals import probe
from router.signals.probe import probe_for
from router.signals.target import TargetSignals
from router.sim.engine import EngineParams
from router.sim.hosted import HostedBackend, HostedParams
from router.sim.inproc import AttemptRecord, InProcessUpstream
from router.sim.virtual import VirtualTimeLoop
from router.sim.vllm import VllmBackend

VALID = """\
targets:
  - name: local-a
    kind: vllm
    base_url: http://127.0.0.1:8001/v1
    model: tiny-llama
  - name: hosted-a
    kind: openai
    base_url: https://api.example.com/v1
    model: gpt-4o-mini
    price: {input_per_mtok: 0.15, output_per_mtok: 0.60}
routes:
  - name: chat
    targets: [local-a, hosted-a]
    policy: {type: ordered}
"""
GPU = TargetConfig(name="gpu", kind="vllm", base_url="http://gpu/v1", model="m")
API = TargetConfig(name="api", kind="openai", base_url="http://api/v1", model="m")


def run(main: Any) -> Any:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main)


def test_a_probe_measures_an_engine_no_turn_has_reached() -> None:
    async def main() -> tuple[float | None, TargetSignals, list[AttemptRecord]]:
        loop = asyncio.get_running_loop()
        backend = VllmBackend(EngineParams(step_s=0.03, prefill_s_per_token=0.0), "m", loop.time)
        await backend.start()
        records: list[AttemptRecord] = []
        up = InProcessUpstream("gpu", backend, clock=loop.time, on_attempt=records.append)
        signals = TargetSignals(GPU, SignalsConfig(), loop.time)
        ttft = await probe.probe_once(up, signals, GPU, Probe())
        await backend.stop()
        return ttft, signals, records

    ttft, signals, records = run(main())
    assert ttft == pytest.approx(0.03)
    view = signals.view()
    assert view.ttft_samples == 1
    assert view.ttft_quantile(0.5) == pytest.approx(0.03)
    assert view.in_flight == 0
    # one word of prompt says nothing of a real turn's prefill: not an unloaded sample
    assert signals.unloaded_ttft.value is None
    (record,) = records
    assert record.prompt_tokens <= 2 and record.tokens_sent == 1 and record.key is None


def test_failing_probes_open_the_breaker_and_then_stop_asking() -> None:
    async def main() -> tuple[list[float | None], TargetSignals, int]:
        loop = asyncio.get_running_loop()
        down = HostedParams(error_burst_probability=1.0, error_burst_length=1000)
        records: list[AttemptRecord] = []
        up = InProcessUpstream(
            "api",
            HostedBackend(down, random.Random(0), loop.time),
            clock=loop.time,
            on_attempt=records.append,
        )
        signals = TargetSignals(API, SignalsConfig(breaker_failures=3), loop.time)
        results = [await probe.probe_once(up, signals, API, Probe()) for _ in range(5)]
        return results, signals, len(records)

    results, signals, sent = run(main())
    assert results == [None] * 5
    assert signals.view().breaker == "open"
    assert sent == 3  # the breaker refused the last two before they were sent


def test_probes_run_every_interval_unless_turns_measure_the_target() -> None:
    async def main(turn_every_s: float | None) -> list[float]:
        loop = asyncio.get_running_loop()
        backend = VllmBackend(EngineParams(step_s=0.01), "m", loop.time)
        await backend.start()
        records: list[AttemptRecord] = []
        up = InProcessUpstream("gpu", backend, clock=loop.time, on_attempt=records.append)
        signals = TargetSignals(GPU, SignalsConfig(), loop.time)

        async def turns() -> None:
            assert turn_every_s is not None
            while True:
                await anyio.sleep(turn_every_s)
                attempt = signals.begin(100)
                attempt.first_token()
                attempt.finished()
                attempt.release()

        with anyio.move_on_after(100.0):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: probe.run(up, signals, GPU, Probe(interval_s=30), clock=loop.time)
                )
                if turn_every_s is not None:
                    tg.start_soon(turns)
        await backend.stop()
        return [round(r.started_at) for r in records]

    assert run(main(None)) == [0, 30, 60, 90]
    assert run(main(10.0)) == [0]  # real turns measure it: no probe needed


def test_probes_are_on_for_local_engines_off_for_apis_unless_a_route_or_target_says() -> None:
    cfg = parse_config(VALID)
    assert probe_for(cfg, cfg.target("local-a")) is not None  # a local engine (vllm)
    assert probe_for(cfg, cfg.target("hosted-a")) is None  # a priced API
    routed = parse_config(
        VALID.replace(
            "    policy: {type: ordered}\n",
            "    policy: {type: ordered}\n    probe: {interval_s: 10, max_tokens: 2}\n",
        )
    )
    settings = probe_for(routed, routed.target("hosted-a"))
    assert settings is not None and (settings.interval_s, settings.max_tokens) == (10.0, 2)
    own = parse_config(
        VALID.replace(
            "    model: tiny-llama\n", "    model: tiny-llama\n    probe: false\n"
        ).replace("    policy: {type: ordered}\n", "    policy: {type: ordered}\n    probe: true\n")
    )
    assert probe_for(own, own.target("local-a")) is None  # the target's own word wins
    assert probe_for(own, own.target("hosted-a")) is not None
    with pytest.raises(ConfigError):
        parse_config(
            VALID.replace("    model: tiny-llama\n", "    model: m\n    probe: {interval_s: 0}\n")
        )


def test_an_embedding_engine_is_never_probed_with_a_chat_completion() -> None:
    embedder = VALID.replace(
        "    model: tiny-llama\n", "    model: bge-small\n    capabilities: [embeddings]\n"
    )
    cfg = parse_config(embedder)
    assert probe_for(cfg, cfg.target("local-a")) is None  # a vllm target, but not of chat
    asked = parse_config(
        embedder.replace(
            "capabilities: [embeddings]\n", "capabilities: [embeddings]\n    probe: true\n"
        )
    )
    assert probe_for(asked, asked.target("local-a")) is None
