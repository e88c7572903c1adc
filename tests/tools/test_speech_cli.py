"""`firsttoken speech serve`: says what is missing and how to install it, or serves both
endpoints and prints the targets a policy names them by."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from router.speech.check import APT_FIX, missing
from router.tools.cli import main
from tests.speech.speaking import needs_engines


def test_a_missing_program_is_named_with_its_install_command(tmp_path: Path) -> None:
    """PATH without espeak-ng: a clear message and exit 1, never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "router.tools.cli", "speech", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot start the local speech engines; missing:" in done.stderr
    assert APT_FIX in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_packages_are_named_with_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "router.tools.speech.missing",
        lambda **kw: missing(
            **kw, which=lambda _: "/bin/x", has_module=lambda n: n != "pocketsphinx"
        ),
    )
    assert main(["speech", "serve"]) == 1
    assert "pip install 'firsttoken[voice-local]'" in capsys.readouterr().err


def test_no_stt_and_no_tts_is_nothing_to_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["speech", "serve", "--no-stt", "--no-tts"]) == 2
    assert "nothing to serve" in capsys.readouterr().err


@pytest.mark.voice
@needs_engines
def test_serve_prints_the_targets_and_answers_until_interrupted(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "router.tools.cli", "speech", "serve", "--port", "0", "--no-stt"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("local speech engines on http://127.0.0.1:")
        base = first.split()[-1]
        assert "kind: tts" in process.stdout.readline() + process.stdout.readline()
        answer = httpx.post(
            f"{base}/audio/speech",
            json={"model": "espeak-ng", "voice": "alloy", "input": "Hi.", "response_format": "pcm"},
            timeout=30,
        )
        assert answer.status_code == 200
        assert len(answer.content) > 24_000  # some speech, at 24 kHz
    finally:
        process.send_signal(2)  # Ctrl-C
        deadline = time.monotonic() + 20
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        _, err = process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
