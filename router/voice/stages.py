"""Speech routes: `stt` and `tts` targets routed like text turns.

`SpeechService` is built with every `Runtime` (it keeps the connection pool of a
target whose config did not change). A speech route is planned by its own policy
on its targets' live signals, as a turn is (time to the transcript, or to the
first audio bytes, is what goes where TTFT goes), then its targets are tried in
the plan's order: a failure before the first byte (connect error, 408/429/5xx, a
401/403 with our key, a malformed answer, the target's `first_token_s`) moves to
the next target, invisibly to the caller; a 400 that says the request itself is
bad does not. With the route's `hedge:`, a target late with its answer gets the
next one started beside it (`router.voice.race`). Every attempt feeds the target's
breaker and estimators.

Cost: STT `price.per_minute` of audio in; TTS `per_minute` of audio out plus
`per_mchar` of text in.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import anyio

from router.clock import Clock
from router.config import Config, RouteConfig, TargetConfig
from router.errors import AllTargetsFailed, NoTargetAvailable, UpstreamError, UpstreamTimeout
from router.policy.base import PlanContext, Policy, RoutingRequest
from router.policy.registry import plan_turn
from router.signals.target import Attempt, TargetSignals
from router.turn.hedge import HedgeBudget, hedge_delay_s
from router.upstream.audio import SpeechStream, SttUpstream, Transcript, TtsUpstream
from router.upstream.base import UpstreamSetup
from router.upstream.factory import setup_for
from router.voice.codec import pcm_ms
from router.voice.race import Hedging, race


@dataclass(frozen=True, slots=True)
class RoutedTranscript:
    transcript: Transcript
    target: str
    cost_usd: float
    attempts: int


class RoutedSpeech:
    """A TTS answer that reached its first audio bytes; a `speak.PcmSource`."""

    def __init__(
        self, stream: SpeechStream, first: bytes, attempt: Attempt, config: TargetConfig
    ) -> None:
        self._stream = stream
        self._first = first
        self._attempt = attempt
        self.config = config
        self.target = config.name
        self.sample_rate = stream.sample_rate
        self.audio_bytes = 0

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        self.audio_bytes += len(self._first)
        yield self._first
        try:
            async for chunk in self._stream.aiter_bytes():
                self.audio_bytes += len(chunk)
                yield chunk
        except UpstreamError as err:
            self._attempt.failed(err)
            raise
        self._attempt.finished()

    @property
    def audio_s(self) -> float:
        return pcm_ms(self.audio_bytes, self.sample_rate) / 1000.0

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._attempt.cancelled()  # a no-op once it finished or failed
            self._attempt.release()


def _upstream(config: TargetConfig, setup: UpstreamSetup) -> SttUpstream | TtsUpstream:
    assert config.base_url is not None  # checked when the config was loaded
    common = {
        "name": config.name,
        "base_url": config.base_url,
        "model": config.model,
        "api_key": setup.api_key,
        "headers": setup.headers,
        "auth_header": config.auth_header,
        "timeouts": config.timeouts,
        "max_connections": config.max_connections,
        "keepalive_s": setup.keepalive_s,
        "ca_file": config.ca_file,
        "on_connection": setup.on_connection,
    }
    if config.kind == "stt":
        return SttUpstream(**common)  # type: ignore[arg-type]
    return TtsUpstream(sample_rate=config.sample_rate, **common)


class SpeechService:
    def __init__(
        self,
        config: Config,
        signals: Mapping[str, TargetSignals],
        environ: Mapping[str, str],
        clock: Clock,
        previous: SpeechService | None = None,
        *,
        connections: Callable[[str], Callable[[bool], None]] | None = None,
    ) -> None:
        """`connections(target)` counts the connections a target's requests get."""
        self.clock = clock
        self.configs: dict[str, TargetConfig] = {}
        self.upstreams: dict[str, SttUpstream | TtsUpstream] = {}
        self.signals = signals
        old = previous.upstreams if previous is not None else {}
        for t in config.targets:
            if t.kind not in ("stt", "tts"):
                continue
            if previous is not None and previous.configs.get(t.name) == t:
                self.upstreams[t.name] = old[t.name]
            else:
                counter = connections(t.name) if connections is not None else None
                self.upstreams[t.name] = _upstream(t, setup_for(config, t, environ, counter))
            self.configs[t.name] = t
        #: pools of earlier generations no longer used: a request may still run on one,
        #: so they are closed with this service (at shutdown)
        self.retired = [u for n, u in old.items() if self.upstreams.get(n) is not u]
        if previous is not None:
            self.retired += previous.retired

    def _order(self, route: RouteConfig, policy: Policy, rng: random.Random) -> list[str]:
        views = [self.signals[name].view() for name in route.targets]
        ctx = PlanContext(rng=rng, slo=route.slo, exploration=route.exploration)
        plan = plan_turn(policy, RoutingRequest(route=route.name, prompt_tokens=0), views, ctx)
        return list(plan.order)

    def _hedging(self, route: RouteConfig, budget: HedgeBudget | None) -> Hedging | None:
        hedge = route.hedge
        if hedge is None or budget is None:
            return None

        def delay_s(primary: str, backup: str) -> float:
            views = self.signals[primary].view(), self.signals[backup].view()
            return hedge_delay_s(hedge, *views, slo=route.slo)

        return Hedging(delay_s, hedge.max_extra, budget)

    async def transcribe(
        self,
        route: RouteConfig,
        policy: Policy,
        rng: random.Random,
        audio: bytes,
        fields: Mapping[str, str] | None = None,
        *,
        filename: str = "audio.wav",
        content_type: str = "audio/wav",
        budget: HedgeBudget | None = None,
        translation: bool = False,
    ) -> RoutedTranscript:
        """The first transcript among the route's targets (fallback, and hedging with the
        route's `hedge:` and `budget`); with `translation`, its English translation."""

        async def at(name: str) -> RoutedTranscript | None:
            cfg, upstream = self.configs[name], self.upstreams[name]
            assert isinstance(upstream, SttUpstream)
            with self.signals[name].begin(0) as attempt:
                if not attempt.admitted:
                    return None
                try:
                    with anyio.fail_after(cfg.timeouts.first_token_s):
                        transcript = await upstream.transcribe(
                            audio,
                            filename=filename,
                            content_type=content_type,
                            fields=fields,
                            translation=translation,
                        )
                except (TimeoutError, UpstreamError) as exc:
                    err = exc if isinstance(exc, UpstreamError) else _late(cfg)
                    attempt.failed(err)
                    raise err from exc
                attempt.first_token()
                attempt.finished()
            minutes = (transcript.audio_s or 0.0) / 60.0
            return RoutedTranscript(transcript, name, minutes * cfg.price.per_minute, 1)

        failures: list[UpstreamError] = []
        won = await race(
            self._order(route, policy, rng),
            at,
            hedging=self._hedging(route, budget),
            failures=failures,
            discard=_nothing,
        )
        if won is None:
            raise _all_failed(route, failures)
        return dataclasses.replace(won.answer, attempts=won.attempts)

    async def speak(
        self,
        route: RouteConfig,
        policy: Policy,
        rng: random.Random,
        text: str,
        *,
        voice: str,
        speed: float | None = None,
        budget: HedgeBudget | None = None,
    ) -> RoutedSpeech:
        """Open speech at the first target that produces audio bytes (fallback, and
        hedging with the route's `hedge:` and `budget`)."""

        async def at(name: str) -> RoutedSpeech | None:
            cfg, upstream = self.configs[name], self.upstreams[name]
            assert isinstance(upstream, TtsUpstream)
            attempt = self.signals[name].begin(0)
            if not attempt.admitted:
                attempt.release()
                return None
            stream: SpeechStream | None = None
            try:
                with anyio.fail_after(cfg.timeouts.first_token_s):
                    stream = await upstream.speak(text, voice=voice, speed=speed)
                    first = b""
                    async for first in stream.aiter_bytes():
                        if first:
                            break
                if not first:
                    raise UpstreamTimeout(f"{name}: no audio at all", target=name)
            except (TimeoutError, UpstreamError) as exc:
                err = exc if isinstance(exc, UpstreamError) else _late(cfg)
                attempt.failed(err)
                attempt.release()
                if stream is not None:
                    await stream.aclose()
                raise err from exc
            except BaseException:
                attempt.cancelled()
                attempt.release()
                if stream is not None:
                    await stream.aclose()
                raise
            attempt.first_token()
            return RoutedSpeech(stream, first, attempt, cfg)

        failures: list[UpstreamError] = []
        won = await race(
            self._order(route, policy, rng),
            at,
            hedging=self._hedging(route, budget),
            failures=failures,
            discard=_close,
        )
        if won is None:
            raise _all_failed(route, failures)
        return won.answer

    async def aclose(self) -> None:
        for upstream in [*self.upstreams.values(), *self.retired]:
            await upstream.aclose()


async def _nothing(_: RoutedTranscript) -> None:
    """A transcript that lost a tie holds nothing open."""


async def _close(speech: RoutedSpeech) -> None:
    await speech.aclose()


def tts_cost(config: TargetConfig, text: str, audio_s: float) -> float:
    return len(text) * config.price.per_mchar / 1e6 + audio_s / 60.0 * config.price.per_minute


def _late(cfg: TargetConfig) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"{cfg.name}: nothing within {cfg.timeouts.first_token_s:g}s", target=cfg.name
    )


def _all_failed(route: RouteConfig, failures: list[UpstreamError]) -> Exception:
    if not failures:
        return NoTargetAvailable(f"route '{route.name}': no target is available")
    return AllTargetsFailed(f"route '{route.name}': every target failed", failures)
