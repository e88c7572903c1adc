"""A 40-second realtime soak in the test suite (`pytest -m soak`): `benchmarks/realtime_soak.py`,
shortened, as is and with the open cascade second in the route.

A real `firsttoken serve` process, three Realtime simulators in another process (the
first cycling through refusals, closes, deaths mid-response, `session_expired` and
stalls), and sessions of the official `openai` SDK with text and audio turns,
barge-ins, out-of-band responses and clients that leave mid-response: every response
asked for ends in `response.done`, none crosses sessions, none ends twice, and no
session is left open on the router or on any simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.soak
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cascade", [False, True], ids=["realtime", "with-cascade"])
def test_forty_seconds_of_voice_sessions_through_faults_lose_nothing(
    tmp_path: Path, cascade: bool
) -> None:
    # with-cascade: the open cascade second in the route, so sessions fail over and
    # migrate from the Realtime simulator to it
    out = tmp_path / "realtime-soak.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/realtime_soak.py"),
            "--minutes",
            "0.67",
            "--rate",
            "2",
            "--json",
            str(out),
            *(["--cascade"] if cascade else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert out.exists(), done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["lost"] == 0, summary["lost_examples"]
    assert summary["crossed"] == summary["stray"] == 0
    assert summary["still_running"] == 0
    # the faults happened: sessions failed over and migrated, responses were cut
    counted = summary["router_counted"]
    assert counted["attempt_failures"] and counted["migrations"]
    assert summary["endings"].get("failed", 0) > 0
    # stalls before the first audio were moved by the router (`stalled`), and the
    # responses the user heard nothing of asked again there
    assert counted["migrations"].get("stalled", 0) > 0
    assert summary["endings"].get("asked_again", 0) > 0
    # the router booked every response the client saw end, as it ended; beyond them
    # only the last response of a session that left while it ran
    endings, booked = dict(summary["endings"]), counted["responses"]
    # a response failed by a migration and asked again: the client waited on
    endings["failed"] = endings.get("failed", 0) + endings.get("asked_again", 0)
    statuses = ("completed", "cancelled", "failed")
    assert all(booked.get(s, 0) >= endings.get(s, 0) for s in statuses), (booked, endings)
    gone = summary["sessions"].get("left", 0) + summary["sessions"].get("vanished", 0)
    assert sum(booked.get(s, 0) - endings.get(s, 0) for s in statuses) <= gone
    # a commit after a migration finds the audio appended before it (carried over)
    assert "input_audio_buffer_commit_empty" not in summary["error_events"]
    # nothing left open anywhere
    assert summary["router_sessions_open_at_end"] == 0
    assert set(summary["upstream_open_at_end"].values()) == {0}
    assert summary["fds"]["end"] - summary["fds"]["warm"] < 20
    assert done.returncode == 0
