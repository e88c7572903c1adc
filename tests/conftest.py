"""Shared fixtures: the anyio backend, the background loop for e2e servers, and one local
speech server (PocketSphinx and eSpeak NG) for every voice test of the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from router import build
from router.errors import StaleBuild
from router.speech.check import missing
from tests.e2e.harness import LoopThread

if TYPE_CHECKING:  # the engines' modules import the voice-local extra
    from router.speech.server import SpeechServer


#: the modules a compiled build (make compile) runs compiled, for the report header
COMPILED = pytest.StashKey[tuple[str, ...]]()


def pytest_configure(config: pytest.Config) -> None:
    """A compiled build (make compile) older than its sources would test the old code."""
    try:
        built = build.check()
    except StaleBuild as err:
        pytest.exit(err.message, returncode=pytest.ExitCode.USAGE_ERROR)
    if built.compiled:
        config.stash[COMPILED] = built.compiled


def pytest_report_header(config: pytest.Config) -> str:
    compiled = config.stash.get(COMPILED, ())
    return f"router: {len(compiled)} modules compiled (mypyc)" if compiled else "router: source"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def speech_server(loop_thread: LoopThread) -> Iterator[SpeechServer]:
    """The local engines on loopback, their PocketSphinx pool started once."""
    if missing():
        pytest.skip("local speech engines missing: " + "; ".join(missing()))
    from router.speech.espeak import Espeak
    from router.speech.server import SpeechServer
    from router.speech.sphinx import Sphinx

    server = SpeechServer(stt=Sphinx(workers=1, max_queued=4), tts=Espeak())
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop())
