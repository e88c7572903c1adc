"""A fleet: every server of a scenario running in this process, on 127.0.0.1.

    async with Fleet(load_scenario("benchmarks/scenarios/hybrid.yaml")) as fleet:
        fleet.base_urls            # {"local-a": "http://127.0.0.1:41233/v1", ...}
        fleet.servers["hosted-a"]  # the SimServer, to read records or inject faults
        fleet.targets()            # a policy file's `targets:` list for them

Each server listens on its own ephemeral port. Hosted servers draw from
`random.Random(f"{scenario.seed}:{name}")`, so a fleet's randomness is
reproducible and independent of the order servers start in.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self, TextIO

import yaml

from router.sim.behaviour import Behaviour
from router.sim.hosted import HostedSim
from router.sim.openai_server import OpenAISim
from router.sim.scenario import (
    HostedServerSpec,
    OpenAIServerSpec,
    Scenario,
    ServerSpec,
    VllmServerSpec,
    load_scenario,
)
from router.sim.server import SimServer
from router.sim.vllm import VllmSim


def build_server(spec: ServerSpec, seed: int, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    if isinstance(spec, VllmServerSpec):
        behaviour = Behaviour(tokens=spec.tokens)
        return VllmSim(spec.engine, behaviour, model=spec.model, host=host, port=port)
    if isinstance(spec, HostedServerSpec):
        rng = random.Random(f"{seed}:{spec.name}")
        return HostedSim(
            spec.hosted,
            Behaviour(tokens=spec.tokens),
            rng=rng,
            model=spec.model,
            host=host,
            port=port,
        )
    behaviour = Behaviour(spec.ttft_ms / 1000.0, spec.itl_ms / 1000.0, spec.tokens)
    return OpenAISim(behaviour, model=spec.model, host=host, port=port)


def _expected_ttft_ms(spec: ServerSpec) -> float:
    if isinstance(spec, VllmServerSpec):
        return max(1.0, 1000.0 * (spec.engine.step_s + 500 * spec.engine.prefill_s_per_token))
    if isinstance(spec, HostedServerSpec):
        return 1000.0 * spec.hosted.ttft_median_s
    assert isinstance(spec, OpenAIServerSpec)
    return max(1.0, spec.ttft_ms)


def fleet_targets(scenario: Scenario, base_urls: dict[str, str]) -> list[dict[str, Any]]:
    """Entries for a policy file's `targets:` (router.config.TargetConfig's fields)."""
    out: list[dict[str, Any]] = []
    for spec in scenario.servers:
        out.append(
            {
                "name": spec.name,
                "kind": "vllm" if isinstance(spec, VllmServerSpec) else "openai",
                "base_url": base_urls[spec.name],
                "model": spec.model,
                "price": spec.price.model_dump(),
                "expected_ttft_ms": round(_expected_ttft_ms(spec), 1),
            }
        )
    return out


class Fleet:
    """A scenario's servers. With `base_port`, server i listens on base_port + i (in
    scenario order), for setups that need fixed ports (compose); else on any free one."""

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", base_port: int = 0) -> None:
        self.scenario = scenario
        self.servers: dict[str, SimServer] = {
            spec.name: build_server(spec, scenario.seed, host, base_port + i if base_port else 0)
            for i, spec in enumerate(scenario.servers)
        }

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: server.base_url for name, server in self.servers.items()}

    def base_url(self, name: str) -> str:
        return self.servers[name].base_url

    def targets(self) -> list[dict[str, Any]]:
        return fleet_targets(self.scenario, self.base_urls)

    def write_targets(self, path: str | os.PathLike[str]) -> None:
        """Write `targets:` for these servers as YAML (to paste or merge into a policy)."""
        text = yaml.safe_dump({"targets": self.targets()}, sort_keys=False)
        Path(path).write_text(text, encoding="utf-8")

    async def start(self) -> None:
        started: list[SimServer] = []
        try:
            for server in self.servers.values():
                await server.start()
                started.append(server)
        except BaseException:
            for server in reversed(started):
                await server.stop()
            raise

    async def stop(self) -> None:
        for server in reversed(self.servers.values()):
            await server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve_scenario(
    path: str | os.PathLike[str],
    *,
    out: TextIO | None = None,
    on_ready: Callable[[Fleet], None] | None = None,
    host: str = "127.0.0.1",
    base_port: int = 0,
    stop_signals: tuple[signal.Signals, ...] = (),
    stop_s: float = 5.0,
) -> None:
    """`firsttoken sim --scenario S --serve`: start the fleet, print its URLs, run
    until cancelled or until one of `stop_signals` arrives (SIGINT and SIGTERM from
    the command line), then stop the servers within `stop_s`: a stop that hangs (a
    stalled stream, a busy machine) must not keep the ports or the process alive."""
    stream = out if out is not None else sys.stdout
    fleet = Fleet(load_scenario(path), host=host, base_port=base_port)
    await fleet.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        for spec in fleet.scenario.servers:
            print(f"{spec.name:<16} {spec.kind:<7} {fleet.base_url(spec.name)}", file=stream)
        print(yaml.safe_dump({"targets": fleet.targets()}, sort_keys=False), file=stream)
        stream.flush()
        if on_ready is not None:
            on_ready(fleet)
        await stopping.wait()
    finally:
        for sig in stop_signals:
            loop.remove_signal_handler(sig)
        try:
            async with asyncio.timeout(stop_s):
                await fleet.stop()
        except TimeoutError:
            print(f"the fleet did not stop within {stop_s:g} s; leaving anyway", file=sys.stderr)
