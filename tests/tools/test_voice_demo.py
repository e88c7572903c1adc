"""`firsttoken demo --voice`: callers talk to one realtime route holding a hosted
speech-to-speech simulator and a cascade on the local engines; the summary gives each
session's target and voice-to-voice latency, and `--save-audio` writes playable WAVs."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from router.tools import voice_demo as demo_module
from router.tools.voice_demo import voice_demo
from tests.speech.speaking import needs_engines


def run(tmp_path: Path, seconds: float) -> str:
    out = io.StringIO()
    code = voice_demo(
        duration_s=seconds, sessions=2, live=False, save_audio=str(tmp_path), stream=out
    )
    assert code == 0, out.getvalue()
    return out.getvalue()


def session_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


@pytest.mark.voice
@needs_engines
def test_both_targets_answer_and_the_cascade_reports_its_stages(tmp_path: Path) -> None:
    text = run(tmp_path, 9.0)
    assert "callers speak eSpeak NG sentences" in text
    rows = session_lines(text)
    assert [r.split()[1] for r in rows] == ["hosted-rt", "laptop-voice"]
    for row in rows:
        assert int(row.split()[2]) >= 1, row  # each session got answers ...
        assert row.split()[3].isdigit(), row  # ... with a voice-to-voice latency
    assert "stt " in rows[1] and "overhead " in rows[1]
    assert "laptop-voice: " in text and "stages p50 ms: vad_hangover" in text
    for n in (1, 2):
        for side in ("caller", "answer"):
            with wave.open(str(tmp_path / f"session-{n}-{side}.wav")) as audio:
                assert audio.getframerate() == 24_000
                assert audio.getnframes() > 24_000  # over a second of sound


def test_without_the_engines_the_stages_are_simulated_and_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nothing_installed(*, stt: bool = True, tts: bool = True) -> list[str]:
        return ["Python packages pocketsphinx: pip install 'firsttoken[voice-local]'"] * (
            stt or tts
        )

    monkeypatch.setattr(demo_module, "missing", nothing_installed)
    text = run(tmp_path, 6.0)
    assert "speech-to-text simulated" in text
    assert "text-to-speech simulated" in text
    assert "callers speak tones" in text
    assert "pip install 'firsttoken[voice-local]'" in text
    rows = session_lines(text)
    assert [r.split()[1] for r in rows] == ["hosted-rt", "laptop-voice"]
    assert all(int(r.split()[2]) >= 1 for r in rows), rows


def test_a_hosted_session_that_expires_migrates_and_the_summary_counts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the hosted simulator ends its sessions after 2 s (`session_expired`, the
    # provider's cap): the router moves each live conversation, and the demo says so
    monkeypatch.setattr(demo_module, "HOSTED_SESSION_MAX_S", 2.0)
    monkeypatch.setattr(demo_module, "missing", lambda *, stt=True, tts=True: ["none"])
    out = io.StringIO()
    assert voice_demo(duration_s=6.0, sessions=2, live=False, stream=out) == 0, out.getvalue()
    moved = [
        line for line in out.getvalue().splitlines() if line.endswith(")") and "migrations" in line
    ]
    assert moved, out.getvalue()
    count = int(moved[0].split()[0])
    assert count >= 1 and "session_expired" in moved[0], moved
