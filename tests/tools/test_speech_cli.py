"""`firsttoken speech serve`: says what is missing and how to install it, or serves both
endpoints and prints the targets a policy names them by."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from router.speech.check import APT_FIX, missing
from router.tools.cli import main
from tests.speech.speaking import SENTENCES, needs_engines, say


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


@pytest.mark.voice
@needs_engines
@pytest.mark.parametrize(
    ("stop", "background"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "kill-int-in-the-background"],
)
def test_a_signal_stops_the_server_without_waiting_for_a_decode(
    stop: signal.Signals, background: bool
) -> None:
    """A minute of speech takes PocketSphinx ~25 s of CPU (more on a loaded machine): Ctrl-C
    and SIGTERM (`kill`, Kubernetes) stop the server within seconds all the same, exit 0.
    `kill -INT` too when a script started it in the background, which leaves SIGINT
    ignored in the process (POSIX; CI once saw the server outlive its stop that way)."""
    speech = say(" ".join(SENTENCES * 7))  # about 57 s at 130 words a minute
    assert 40 < (len(speech) - 44) / 2 / 22050 < 60  # under the engine's 60 s limit
    serve = [sys.executable, "-m", "router.tools.cli", "speech", "serve", "--port", "0", "--no-tts"]
    if background:  # what `cmd &` in a non-interactive shell does to the process
        ignore = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        serve = [sys.executable, "-c", ignore + "os.execv(sys.argv[1], sys.argv[1:])", *serve]
    process = subprocess.Popen(
        serve,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base = process.stdout.readline().split()[-1]
        process.stdout.readline()  # "as policy targets:"
        process.stdout.readline()

        def transcribe() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server goes away mid-decode
                httpx.post(
                    f"{base}/audio/transcriptions",
                    files={"file": ("a.wav", speech, "audio/wav")},
                    data={"model": "pocketsphinx-en-us"},
                    timeout=120,
                )

        client = threading.Thread(target=transcribe)
        client.start()
        time.sleep(2.0)  # the upload is in, the worker decoding
        process.send_signal(stop)
        stopped_at = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
        waited = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate()
    client.join(30)
    assert waited < 15, f"still running {waited:.0f} s after {stop.name}"
    assert process.returncode == 0, err
    assert "Traceback" not in err
