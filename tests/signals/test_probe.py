"""Active probes: a one-token request off the turn's path feeds the target's signals."""

from __future__ import annotations

import asyncio
import math
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
from router.upstream.base import UpstreamRequest, UpstreamResponse

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


class _Changes:
    """An upstream that, from `slow_from` (virtual seconds) on, answers 0.2 s later, and
    from `hang_from` on never answers (each probe then times out: a censored sample)."""

    def __init__(
        self, inner: InProcessUpstream, clock: Any, slow_from: float, hang_from: float
    ) -> None:
        self.name = inner.name
        self._inner, self._clock = inner, clock
        self._slow_from, self._hang_from = slow_from, hang_from
        self.hung: list[float] = []

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        now = self._clock()
        if now >= self._hang_from:
            self.hung.append(now)
            await anyio.sleep_forever()
        if now >= self._slow_from:
            await anyio.sleep(0.2)
        return await self._inner.send(request)

    async def warm_up(self) -> None:
        await self._inner.warm_up()

    async def aclose(self) -> None:
        await self._inner.aclose()


def _probe_times(
    settings: Probe,
    horizon_s: float,
    turns_at: tuple[float, ...] = (),
    *,
    down: bool = False,
    slow_from: float = math.inf,
    hang_from: float = math.inf,
) -> list[int]:
    """When probes went out (rounded seconds) over `horizon_s` of virtual time, with a
    turn measuring the target at each of `turns_at`; `down`: every probe is refused;
    `slow_from`, `hang_from`: as `_Changes`."""

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        backend: VllmBackend | HostedBackend
        if down:
            params = HostedParams(error_burst_probability=1.0, error_burst_length=10**6)
            backend = HostedBackend(params, random.Random(0), loop.time)
        else:
            backend = VllmBackend(EngineParams(step_s=0.01), "m", loop.time)
            await backend.start()
        records: list[AttemptRecord] = []
        inner = InProcessUpstream("gpu", backend, clock=loop.time, on_attempt=records.append)
        up = _Changes(inner, loop.time, slow_from, hang_from)
        # breaker_failures high: a failing target stays closed, so every probe is sent
        signals = TargetSignals(GPU, SignalsConfig(breaker_failures=10**6), loop.time)

        async def turns() -> None:
            for at in turns_at:
                await anyio.sleep(at - loop.time())
                attempt = signals.begin(100)
                attempt.first_token()
                attempt.finished()
                attempt.release()

        with anyio.move_on_after(horizon_s):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: probe.run(up, signals, GPU, settings, clock=loop.time))
                tg.start_soon(turns)
                await anyio.sleep_forever()
        if isinstance(backend, VllmBackend):
            await backend.stop()
        return sorted([round(r.started_at) for r in records] + [round(t) for t in up.hung])

    times: list[int] = run(main())
    return times


def test_probes_back_off_while_they_answer_as_the_last_one_did() -> None:
    # At once, then after 30 s; each probe that answers as the last one did doubles
    # the wait (60, 120), up to 8 x 30 s.
    assert _probe_times(Probe(interval_s=30), 1000.0) == [0, 30, 90, 210, 450, 690, 930]
    assert _probe_times(Probe(interval_s=30, max_interval_s=60), 300.0) == [
        0,
        30,
        90,
        150,
        210,
        270,
    ]
    # a steady pace when asked for one
    assert _probe_times(Probe(interval_s=30, max_interval_s=30), 100.0) == [0, 30, 60, 90]


def test_a_probe_that_finds_the_target_changed_brings_the_wait_back_to_the_interval() -> None:
    # From 200 s the target answers 0.2 s later: the probe at 210 finds it changed (the
    # next one 30 s later), and the wait grows again from there while it stays so (each
    # wait counts from the last answer, now 0.2 s after its probe went out).
    assert _probe_times(Probe(interval_s=30), 700.0, slow_from=200.0) == [
        0,
        30,
        90,
        210,
        240,
        301,
        421,
        661,
    ]


def test_turns_that_measure_the_target_put_the_probes_off() -> None:
    # turns within every interval: no probe after the first
    every_10 = tuple(float(t) for t in range(10, 100, 10))
    assert _probe_times(Probe(interval_s=30), 100.0, turns_at=every_10) == [0]
    # a turn now and then pushes the next probe a wait past it, and leaves the wait as
    # it was (240 s after the probe at 210): a target reached minutes apart is not
    # probed at the base pace after each turn
    assert _probe_times(Probe(interval_s=30), 800.0, turns_at=(300.0,)) == [
        0,
        30,
        90,
        210,
        540,
        780,
    ]


def test_a_failing_target_is_probed_at_the_interval() -> None:
    # no answer is no verdict: a failing target is watched at the base pace, so its
    # recovery is seen within one interval
    assert _probe_times(Probe(interval_s=30), 200.0, down=True) == [0, 30, 60, 90, 120, 150, 180]
    # one that answered alike (the wait grew to 240 s) and then hangs is back at the
    # interval after its first probe timed out (at 210 + 5 s, the default first-token
    # deadline)
    assert _probe_times(Probe(interval_s=30), 400.0, hang_from=200.0) == [
        0,
        30,
        90,
        210,
        245,
        280,
        315,
        350,
        385,
    ]


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
