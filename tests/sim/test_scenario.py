from __future__ import annotations

import asyncio
import io
import itertools
import os
import random
import signal
from pathlib import Path

import httpx
import pytest
import yaml

from router.config import parse_config
from router.errors import ConfigError
from router.sim.fleet import Fleet, serve_scenario
from router.sim.scenario import Arrivals, Burst, Ramp, Workload, load_scenario, parse_scenario
from router.sim.workload import rate_at, session_starts, turns

SCENARIOS = Path(__file__).parents[2] / "benchmarks" / "scenarios"
SMOKE = SCENARIOS / "smoke.yaml"


@pytest.mark.parametrize("name", ["smoke", "hybrid", "voice"])
def test_shipped_scenarios_load(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert scenario.name == name
    assert scenario.workload is not None


def test_hybrid_has_two_local_and_two_hosted() -> None:
    kinds = [s.kind for s in load_scenario(SCENARIOS / "hybrid.yaml").servers]
    assert sorted(kinds) == ["hosted", "hosted", "vllm", "vllm"]


def test_unknown_keys_and_duplicate_names_are_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario("name: x\nservers: [{name: a, kind: vllm, engine: {max_seqs: 3}}]\n")
    assert "<scenario>:2 servers[0].engine.max_seqs: unknown key" in str(info.value)
    with pytest.raises(ConfigError, match="duplicate server names: a"):
        parse_scenario("name: x\nservers: [{name: a, kind: openai}, {name: a, kind: vllm}]\n")


def test_workload_is_seeded_ordered_and_prefix_stable() -> None:
    workload = load_scenario(SCENARIOS / "voice.yaml").workload
    assert workload is not None
    first = list(turns(workload, random.Random(5)))
    assert first == list(turns(workload, random.Random(5)))
    assert first != list(turns(workload, random.Random(6)))
    times = [t.arrival_time_s for t in first]
    assert times == sorted(times)
    by_session: dict[int, list[tuple[dict[str, str], ...]]] = {}
    for turn in first:
        assert turn.turn_index == len(by_session.setdefault(turn.session_id, []))
        by_session[turn.session_id].append(turn.messages)
        assert turn.messages[-1]["role"] == "user"
        assert 10 <= turn.max_tokens <= 80
    for history in by_session.values():
        for earlier, later in itertools.pairwise(history):
            assert later[: len(earlier)] == earlier  # a prefix cache can hit
            assert later[len(earlier)]["role"] == "assistant"


def test_ramp_and_bursts_shape_the_rate() -> None:
    arrivals = Arrivals(
        rate_per_s=10,
        ramp=Ramp(start_rate_per_s=0, duration_s=10),
        bursts=(Burst(at_s=20, duration_s=5, multiplier=3),),
    )
    assert rate_at(arrivals, 0) == 0
    assert rate_at(arrivals, 5) == 5
    assert rate_at(arrivals, 15) == 10
    assert rate_at(arrivals, 22) == 30
    starts = list(session_starts(arrivals, 30, random.Random(1)))
    in_burst = sum(20 <= t < 25 for t in starts)
    steady = sum(10 <= t < 20 for t in starts)
    assert in_burst > steady  # 150 expected vs 100
    assert sum(t < 5 for t in starts) < sum(5 <= t < 10 for t in starts)


def test_workload_defaults() -> None:
    w = Workload(duration_s=2, arrivals=Arrivals(rate_per_s=5))
    assert all(len(t.messages) == 2 for t in turns(w, random.Random(0)))


@pytest.mark.anyio
async def test_fleet_serves_every_server_and_describes_targets(tmp_path: Path) -> None:
    scenario = load_scenario(SMOKE)
    async with Fleet(scenario) as fleet, httpx.AsyncClient() as client:
        assert set(fleet.base_urls) == {"local", "hosted", "plain"}
        assert len({url for url in fleet.base_urls.values()}) == 3
        for name, url in fleet.base_urls.items():
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
            r = await client.post(f"{url}/chat/completions", json=body)
            assert r.status_code == 200, name
            assert r.json()["choices"][0]["message"]["content"] == "t0 t1 t2 t3 t4 t5 t6 t7 "
        targets = fleet.targets()
        policy = {"targets": targets, "routes": [{"name": "chat", "targets": ["local", "hosted"]}]}
        config = parse_config(yaml.safe_dump(policy))
        local = config.target("local")
        assert local.kind == "vllm"
        metrics_url = local.engine_metrics_url()
        assert metrics_url is not None
        assert (await client.get(metrics_url)).status_code == 200
        assert config.target("hosted").price.output_per_mtok == 0.6
        out = tmp_path / "targets.yaml"
        fleet.write_targets(out)
        assert yaml.safe_load(out.read_text())["targets"] == targets


@pytest.mark.anyio
async def test_serve_scenario_prints_urls_and_runs_until_cancelled() -> None:
    ready: asyncio.Future[Fleet] = asyncio.get_running_loop().create_future()
    out = io.StringIO()
    task = asyncio.create_task(serve_scenario(SMOKE, out=out, on_ready=ready.set_result))
    fleet = await ready
    assert fleet.base_url("plain") in out.getvalue()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{fleet.servers['local'].url}/health")).status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.anyio
async def test_serve_scenario_leaves_on_its_signal_even_when_a_server_will_not_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stuck = asyncio.Event()

    async def hang(self: Fleet) -> None:
        stuck.set()
        await asyncio.Event().wait()

    ready: asyncio.Future[Fleet] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_scenario(
            SMOKE,
            out=io.StringIO(),
            on_ready=ready.set_result,
            stop_signals=(signal.SIGUSR1,),
            stop_s=0.2,
        )
    )
    fleet = await ready
    monkeypatch.setattr(Fleet, "stop", hang)
    os.kill(os.getpid(), signal.SIGUSR1)
    await asyncio.wait_for(task, 10)  # returns, not cancelled, though stop() never does
    assert stuck.is_set()
    assert "did not stop within 0.2 s" in capsys.readouterr().err
    monkeypatch.undo()
    await fleet.stop()
