"""Shared fixtures: the anyio backend, the background loop for e2e servers, and one local
speech server (PocketSphinx and eSpeak NG) for every voice test of the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from router.speech.check import missing
from tests.e2e.harness import LoopThread

if TYPE_CHECKING:  # the engines' modules import the voice-local extra
    from router.speech.server import SpeechServer


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
