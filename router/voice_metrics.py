"""A cascade's voice turns in Prometheus: where the time between the caller's last word
and the first audio frame went.

    firsttoken_voice_stage_seconds{target, stage}   vad_hangover | stt | llm_ttft |
                                                    tts_first_audio | overhead
    firsttoken_voice_to_voice_seconds{target}       end of speech -> first audio sent
    firsttoken_voice_barge_in_seconds{target}       barge-in decision -> every upstream
                                                    request of the response closed
    firsttoken_voice_turn_readings_total{target, outcome}
                                                    semantic VAD's readings of the words
                                                    at a pause: ended | talked_over | failed

It lives beside `router/metrics.py`, on the same registry; `router/voice/` never
imports it (a cascade reports each answered turn's `VoiceClock` to `observe`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from router.voice.clock import STAGES, Reading, VoiceClock

VOICE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
)  # fmt: skip


class VoiceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage = Histogram(
            "firsttoken_voice_stage_seconds",
            "A cascade's voice turn by stage: the VAD's hangover, the STT, the LLM to its "
            "first speakable clause, the TTS to its first audio, and FirstToken's own overhead",
            ["target", "stage"],
            buckets=VOICE_BUCKETS,
            registry=registry,
        )
        self.voice_to_voice = Histogram(
            "firsttoken_voice_to_voice_seconds",
            "End of the caller's speech to the first audio frame sent back",
            ["target"],
            buckets=VOICE_BUCKETS,
            registry=registry,
        )

        self.barge_in_seconds = Histogram(
            "firsttoken_voice_barge_in_seconds",
            "A barge-in (speech_started with interrupt_response, or response.cancel): from "
            "the decision to the LLM and every TTS request of the response closed",
            ["target"],
            buckets=VOICE_BUCKETS,
            registry=registry,
        )
        self.readings = Counter(
            "firsttoken_voice_turn_readings",
            "Semantic VAD's readings of the words at a pause (a speech-to-text request each): "
            "ended the turn (its transcript), talked over by the caller, or failed",
            ["target", "outcome"],
            registry=registry,
        )

    def reading(self, target: str, outcome: Reading) -> None:
        self.readings.labels(target, outcome).inc()

    def barge_in(self, target: str, seconds: float) -> None:
        self.barge_in_seconds.labels(target).observe(seconds)

    def observe(self, target: str, clock: VoiceClock) -> None:
        stages = clock.stages()
        v2v = clock.voice_to_voice()
        if stages is None or v2v is None:
            return  # a text answer: no audio to time
        for stage in STAGES:
            self.stage.labels(target, stage).observe(stages[stage])
        self.voice_to_voice.labels(target).observe(v2v)
