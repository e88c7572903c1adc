"""FirstToken's own account of a cascade's response, sent in `response.firsttoken`:
what each stage cost and which target served it, and how long each stage took.

    {"cost_usd": 0.00042,
     "stages": {"stt": {"target", "cost_usd"}, "llm": {...},
                "tts": {"target", "cost_usd", "audio_s", "chars"}},
     "latency_ms": {"voice_to_voice": 812.4, "vad_hangover": 520.1, "stt": 180.2,
                    "llm_ttft": 64.0, "tts_first_audio": 41.3, "overhead": 6.8}}

`latency_ms` is the turn's one clock (`router.voice.clock`), in milliseconds, once the
first audio (or text, for a text answer) was sent; clients that do not know the key
ignore it, and the voice playground shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.voice.clock import VoiceClock


@dataclass(slots=True)
class Cost:
    llm_usd: float = 0.0
    tts_usd: float = 0.0
    stt_usd: float = 0.0
    tts_audio_s: float = 0.0
    tts_chars: int = 0
    targets: dict[str, str] = field(default_factory=dict)


def latency_ms(clock: VoiceClock) -> dict[str, float | None] | None:
    """Voice-to-voice latency and its stages in ms; None before the first output."""
    stages = clock.stages()
    if stages is None:
        return None
    total = clock.voice_to_voice()
    out: dict[str, float | None] = {
        "voice_to_voice": None if total is None else round(total * 1000, 1)
    }
    out.update({name: round(seconds * 1000, 1) for name, seconds in stages.items()})
    return out


def account(cost: Cost, clock: VoiceClock) -> dict[str, Any]:
    return {
        "cost_usd": round(cost.stt_usd + cost.llm_usd + cost.tts_usd, 9),
        "stages": {
            "stt": {"target": cost.targets.get("stt"), "cost_usd": cost.stt_usd},
            "llm": {"target": cost.targets.get("llm"), "cost_usd": cost.llm_usd},
            "tts": {
                "target": cost.targets.get("tts"),
                "cost_usd": cost.tts_usd,
                "audio_s": round(cost.tts_audio_s, 3),
                "chars": cost.tts_chars,
            },
        },
        "latency_ms": latency_ms(clock),
    }
