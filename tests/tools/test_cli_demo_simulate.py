"""The `firsttoken` command: what it offers, and demo, simulate and sim run as a user would."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from router.sim.scenario import load_scenario
from router.tools.cli import build_parser, main
from router.tools.simulate import bind_policy, builtin_scenario

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
SMOKE = ROOT / "benchmarks" / "scenarios" / "policies-smoke.yaml"
TARGETS = ("local-a", "local-b", "hosted-a", "hosted-b")


def test_the_help_names_exactly_the_commands_that_exist(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    offered = re.search(r"^\s*\{([a-z,]+)\}", out, re.MULTILINE)
    assert offered is not None, out
    names = offered.group(1).split(",")
    assert names == ["serve", "check", "demo", "simulate", "sim", "speech"]
    # The description names the same commands, and nothing else.
    description = build_parser().description or ""
    said = re.findall(r"\b(serve|check|demo|simulate|sim|speech|bench)\b", description)
    assert said == names
    for name in names:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0


def test_demo_no_live_runs_green(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-live", "--duration", "10"]) == 0
    out = capsys.readouterr().out
    base_url = re.search(r"router listening on (http://127\.0\.0\.1:\d+/v1)", out)
    assert base_url is not None
    assert f"curl -N {base_url.group(1)}/chat/completions" in out
    assert "openai.OpenAI(base_url=" in out
    summary = out.split("demo summary:", 1)[1]
    for name in TARGETS:
        assert re.search(rf"^{name}\s+(vllm|openai)\s+\d+", summary, re.MULTILINE), name
    offered = re.search(r"(\d+) turns offered, (\d+) ok", summary)
    assert offered is not None
    assert int(offered.group(1)) > 0
    assert int(offered.group(2)) > 0


def test_simulate_writes_table_png_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([
        "simulate",
        "--policy", str(POLICIES / "hybrid.yaml"),
        "--policy", str(POLICIES / "latency-first.yaml"),
        "--scenario", str(SMOKE),
        "--duration", "2",
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    for row in ("TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms", "SLO <= 400 ms", "cost / 1k turns",
                "fallbacks", "hedges", "share local-a", "wall time s"):  # fmt: skip
        assert row in out, row
    assert re.search(r"^\s+hybrid\s+latency-first$", out, re.MULTILINE)

    assert (tmp_path / "simulate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "simulate.json").read_text(encoding="utf-8"))
    assert data["scenario"] == "policies-smoke"
    assert data["duration_s"] == 2
    runs = data["policies"]
    assert [r["name"] for r in runs] == ["hybrid", "latency-first"]
    # Same seed, fresh fleet: both policies were offered the very same turns.
    assert runs[0]["summary"]["turns"] == runs[1]["summary"]["turns"] > 0
    for run in runs:
        s = run["summary"]
        assert s["ok"] > 0
        assert 0 < s["ttft_p50_ms"] <= s["ttft_p90_ms"] <= s["ttft_p99_ms"]
        assert 0.0 <= s["slo_attainment"] <= 1.0
        assert s["cost_per_1k_turns_usd"] >= 0.0
        assert set(s["targets"]) == set(TARGETS)
        assert sum(t["share"] for t in s["targets"].values()) == pytest.approx(1, abs=0.01)
        assert run["wall_s"] > 0
        assert len(run["ttft_ms"]) >= s["ok"]  # every turn that got a first token
        shares = run["share_over_time"]["share"]
        assert set(shares) == set(TARGETS)


def test_simulate_rejects_a_policy_whose_targets_the_scenario_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = ROOT / "benchmarks" / "scenarios" / "smoke.yaml"  # servers: local, hosted, plain
    code = main(["simulate", "--policy", str(POLICIES / "hybrid.yaml"), "--scenario",
                 str(scenario), "--out", str(tmp_path)])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "target 'local-a' has no server 'local-a' in scenario 'smoke'" in err
    assert "--map local-a=SERVER" in err


def test_simulate_maps_targets_onto_servers_of_other_names_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = ROOT / "benchmarks" / "scenarios" / "smoke.yaml"  # servers: local, hosted, plain
    code = main([
        "simulate", "--policy", str(POLICIES / "cost-first.yaml"), "--scenario", str(scenario),
        "--map", "local-a=local,local-b=plain", "--map", "hosted-a=hosted",
        "--map", "hosted-b=plain", "--duration", "1", "--out", str(tmp_path),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert (
        "policy targets mapped onto scenario servers (--map): local-a -> local, "
        "local-b -> plain, hosted-a -> hosted, hosted-b -> plain"
    ) in out
    data = json.loads((tmp_path / "simulate.json").read_text(encoding="utf-8"))
    assert data["policies"][0]["summary"]["ok"] > 0
    # A map naming a server the scenario lacks is refused before anything runs.
    code = main(["simulate", "--policy", str(POLICIES / "cost-first.yaml"), "--scenario",
                 str(scenario), "--map", "local-a=gpu9", "--out", str(tmp_path)])  # fmt: skip
    assert code == 1
    assert "target 'local-a' has no server 'gpu9' in scenario 'smoke'" in capsys.readouterr().err


# Every shipped scenario but smoke.yaml, the tests' own three-server fleet (local,
# hosted, plain) that the --map test above uses.
SCENARIOS = sorted(
    p for p in (ROOT / "benchmarks" / "scenarios").glob("*.yaml") if p.stem != "smoke"
)
SHIPPED = sorted(POLICIES.glob("*.yaml")) + sorted(
    (ROOT / "benchmarks" / "policies").glob("*.yaml")
)


@pytest.mark.parametrize("scenario", [*SCENARIOS, builtin_scenario("demo")], ids=lambda p: p.stem)
def test_shipped_policies_run_on_shipped_scenarios_without_a_map(scenario: Path) -> None:
    loaded = load_scenario(scenario)
    urls = {spec.name: "http://127.0.0.1:9/v1" for spec in loaded.servers}
    for policy in SHIPPED:
        config = bind_policy(policy, loaded, urls)  # raises if a target has no server
        assert {t.base_url for t in config.targets} == {"http://127.0.0.1:9/v1"}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_sim_serve_prints_the_fleet_and_stops_on_ctrl_c(stop: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.tools.cli", "sim", "--scenario", "demo", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        seen = {}
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[2].startswith("http://127.0.0.1:"):
                seen[parts[0]] = parts[2]
            if len(seen) == 4:
                break
        assert set(seen) == set(TARGETS)
        proc.send_signal(stop)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
