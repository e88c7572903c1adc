"""A cascade target at run time: its connector, and its stages over the router's routes.

`CascadeConnector.connect()` opens a `CascadeConnection` (in process: nothing to
dial, so it never fails over) whose stages run on the router's current runtime:
STT and TTS on the cascade's speech routes (`SpeechService`), the LLM on its text
route through `Router.handle`, as any client's chat turn (policy, commit point,
fallback, hedging, affinity on the session's id, metrics).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from router.clock import Clock
from router.config import TargetConfig
from router.gateway.request import parse_request
from router.turn.sink import Sink
from router.voice.cascade import CascadeConnection
from router.voice.clock import VoiceObserver
from router.voice.settings import CascadeSettings
from router.voice.speak import PcmSource
from router.voice.stages import RoutedSpeech, tts_cost

if TYPE_CHECKING:
    from router.runtime import Router


class RouterStages:
    def __init__(self, router: Router, settings: CascadeSettings, session_key: str) -> None:
        self._router = router
        self._settings = settings
        self._session_key = session_key

    async def transcribe(
        self, audio: bytes, fields: Mapping[str, str] | None = None
    ) -> tuple[str, str, float, float | None]:
        router = self._router
        runtime = router.runtime
        route = runtime.routes[self._settings.stt]
        heard = await runtime.speech.transcribe(
            route.config, route.policy, router.rng, audio, fields, budget=route.budget
        )
        return heard.transcript.text, heard.target, heard.cost_usd, heard.transcript.audio_s

    async def chat(self, body: dict[str, Any], sink: Sink) -> tuple[str | None, float]:
        router = self._router
        parsed = parse_request("chat", json.dumps(body).encode(), self._session_key)
        result = await router.handle(parsed, sink, {}, router.clock())
        return result.target, result.cost_usd

    async def speak(self, text: str, voice: str, speed: float | None = None) -> PcmSource:
        router = self._router
        runtime = router.runtime
        route = runtime.routes[self._settings.tts]
        return await runtime.speech.speak(
            route.config,
            route.policy,
            router.rng,
            text,
            voice=voice,
            speed=speed,
            budget=route.budget,
        )

    def speech_cost(self, source: PcmSource, text: str) -> tuple[str, float, float]:
        assert isinstance(source, RoutedSpeech)
        return source.target, tts_cost(source.config, text, source.audio_s), source.audio_s


class CascadeConnector:
    """A realtime target's `Connector` for a cascade."""

    def __init__(
        self,
        name: str,
        settings: CascadeSettings,
        router: Router,
        clock: Clock,
        observer: VoiceObserver | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._router = router
        self._clock = clock
        self._observer = observer
        self._sessions = itertools.count(1)

    async def connect(self, transcription: bool = False) -> CascadeConnection:
        session_id = f"sess_ft_{self.name}_{next(self._sessions)}"
        return CascadeConnection(
            target=self.name,
            settings=self.settings,
            stages=RouterStages(self._router, self.settings, session_id),
            clock=self._clock,
            session_id=session_id,
            observer=self._observer,
            transcription=transcription,
        )

    async def aclose(self) -> None:
        return None


def cascades(router: Router) -> Callable[[TargetConfig], CascadeConnector]:
    """The `RealtimeService`'s factory of cascade connectors for this router."""

    def connector(config: TargetConfig) -> CascadeConnector:
        assert config.cascade is not None  # checked when the config was loaded
        return CascadeConnector(
            config.name, config.cascade, router, router.clock, router.voice_metrics
        )

    return connector
