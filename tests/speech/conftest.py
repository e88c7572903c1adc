"""One local speech server for the module's tests (its PocketSphinx pool starts once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from router.speech.check import missing
from tests.e2e.harness import LoopThread

if TYPE_CHECKING:  # the engines' modules import the voice-local extra
    from router.speech.server import SpeechServer


@pytest.fixture(scope="session")
def speech_server(loop_thread: LoopThread) -> Iterator[SpeechServer]:
    if missing():
        pytest.skip("local speech engines missing: " + "; ".join(missing()))
    from router.speech.espeak import Espeak
    from router.speech.server import SpeechServer
    from router.speech.sphinx import Sphinx

    server = SpeechServer(stt=Sphinx(workers=1, max_queued=4), tts=Espeak())
    loop_thread.run(server.start())
    yield server
    loop_thread.run(server.stop())
