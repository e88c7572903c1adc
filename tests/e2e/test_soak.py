"""A 30-second soak in the test suite (`pytest -m soak`): `benchmarks/soak.py`, shortened.

A real `firsttoken serve` process and the simulators in another process, mixed
traffic with faults, cancels and reloads: no turn is lost, the router's count of
turns matches the client's, and RSS and file descriptors end where warm-up left them
(within a margin for allocator noise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.soak
@pytest.mark.timeout(180)
def test_half_a_minute_of_mixed_traffic_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/soak.py"),
            "--minutes",
            "0.5",
            "--rate",
            "15",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert out.exists(), done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["lost"] == 0, summary["lost_examples"]
    assert summary["crossed"] == 0
    # every reload replaced every pool; the old ones closed once their turns were done
    pools = summary["upstream_pools"]
    assert pools["end"] == pools["targets"] < pools["max"]
    assert summary["turns_finished"] == summary["turns_sent"]
    assert summary["router_counted_total"] == summary["turns_sent"]
    # A cancel can land after the router relayed the last byte: it then books the turn
    # as answered, never the other way round.
    counted = summary["router_counted"]
    assert counted.get("client_cancelled", 0) <= summary["endings"].get("cancelled", 0)
    client_errors = sum(
        n for e, n in summary["endings"].items() if e.startswith(("http_", "error"))
    )
    assert counted.get("error", 0) >= client_errors
    assert set(summary["reloads"]) == {"200"}
    assert summary["rss_mb"]["end"] - summary["rss_mb"]["warm"] < 30
    assert summary["fds"]["end"] - summary["fds"]["warm"] < 20
    assert done.returncode == 0
