"""The shipped policies: each one is valid, and each one routes a real (simulated) fleet."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from router.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "policies").glob("*.yaml"))
SMOKE = ROOT / "benchmarks" / "scenarios" / "policies-smoke.yaml"
TARGETS = ("local-a", "local-b", "hosted-a", "hosted-b")


def test_the_four_documented_policies_ship() -> None:
    assert {p.name for p in POLICIES} >= {
        "hybrid.yaml",
        "latency-first.yaml",
        "cost-first.yaml",
        "voice-agent.yaml",
    }


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_check_accepts_the_policy(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: valid" in out
    for name in TARGETS:
        assert re.search(rf"^  {name}\s", out, re.MULTILINE), name
    assert "routes" in out
    assert "slo p90<=" in out  # every shipped route states its TTFT SLO


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_every_knob_is_explained(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if "#" in line]
    assert len(comments) >= 15, "an SRE should be able to follow each knob"


def test_a_broken_copy_reports_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (ROOT / "policies" / "hybrid.yaml").read_text(encoding="utf-8")
    broken = original.replace(
        "slo: {ttft_ms: 400, quantile: 0.9}", "slo: {ttft_ms: -400, quantile: 0.9}"
    ).replace("policy: {type: slo_cost}", "policy: {type: slo_cheapest}")
    assert broken.count("\n") == original.count("\n")
    path = tmp_path / "hybrid.yaml"
    path.write_text(broken, encoding="utf-8")

    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    lines = broken.splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if fragment in line)

    assert f"{path}:{line_of('ttft_ms: -400')} routes[0].slo.ttft_ms" in err
    assert f"{path}:{line_of('slo_cheapest')} routes[0].policy" in err
    assert "error(s)" in err


def test_an_unknown_target_is_reported_on_its_route_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (ROOT / "policies" / "hybrid.yaml").read_text(encoding="utf-8")
    broken = original.replace(
        "targets: [local-a, local-b, hosted-a, hosted-b]", "targets: [local-a, local-c]"
    )
    path = tmp_path / "hybrid.yaml"
    path.write_text(broken, encoding="utf-8")
    assert main(["check", str(path)]) == 1
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "local-c" in text)
    assert (
        f"{path}:{line} routes[0].targets[1]: unknown target 'local-c'" in capsys.readouterr().err
    )


def test_every_policy_routes_a_simulated_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--scenario", str(SMOKE), "--duration", "2", "--out", str(tmp_path)]
    for path in POLICIES:
        args += ["--policy", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "hybrid" in line and "voice-agent" in line)
    assert "cost-first" in header and "latency-first" in header
    data = json.loads((tmp_path / "simulate.json").read_text(encoding="utf-8"))
    for run in data["policies"]:
        summary = run["summary"]
        assert summary["turns"] > 0, run["name"]
        assert summary["ok"] == summary["turns"], (run["name"], summary)
        assert sum(t["share"] for t in summary["targets"].values()) == pytest.approx(1, abs=0.01)
