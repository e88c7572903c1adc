"""Cascade and speech targets in a policy file: what `firsttoken check` says."""

from __future__ import annotations

import pytest

from router.config import parse_config
from router.errors import ConfigError

POLICY = """
targets:
  - {name: whisper, kind: stt, base_url: 'http://127.0.0.1:1/v1', model: whisper-1}
  - {name: kokoro, kind: tts, base_url: 'http://127.0.0.1:2/v1', model: kokoro, sample_rate: 22050}
  - {name: llm, kind: openai, base_url: 'http://127.0.0.1:3/v1', model: m}
  - {name: rt, kind: realtime, base_url: 'ws://127.0.0.1:4/v1', model: gpt-realtime}
  - name: local-voice
    kind: cascade
    cascade: {stt: stt, llm: chat, tts: tts, vad: {silence_duration_ms: 400}}
routes:
  - {name: stt, targets: [whisper]}
  - {name: tts, targets: [kokoro]}
  - {name: chat, targets: [llm]}
  - {name: voice, targets: [rt, local-voice]}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml")
    return [str(i) for i in info.value.issues]


def test_a_cascade_beside_a_realtime_target() -> None:
    cfg = parse_config(POLICY, "p.yaml")
    cascade = cfg.target("local-voice").cascade
    assert cascade is not None
    assert cascade.vad.settings().silence_duration_ms == 400
    assert cascade.vad.settings().threshold == 0.5  # OpenAI's default
    assert cfg.target("kokoro").sample_rate == 22_050


def test_a_cascade_names_routes_of_the_right_kinds() -> None:
    text = POLICY.replace("{stt: stt, llm: chat, tts: tts", "{stt: chat, llm: nope, tts: tts")
    assert _errors(text) == [
        "p.yaml:9 targets[4].cascade.llm: unknown route 'nope'",
        "p.yaml:9 targets[4].cascade.stt: route 'chat' is not a stt route",
    ]


def test_a_route_does_not_mix_speech_and_text_targets() -> None:
    text = POLICY.replace("{name: chat, targets: [llm]}", "{name: chat, targets: [llm, whisper]}")
    assert any("all text, all stt, all tts" in e for e in _errors(text))


def test_what_each_kind_needs() -> None:
    text = POLICY.replace(", model: whisper-1}", "}").replace(
        "    cascade: {stt: stt, llm: chat, tts: tts, vad: {silence_duration_ms: 400}}\n", ""
    )
    errors = _errors(text)
    assert "p.yaml:3 targets[0]: a 'stt' target needs model" in errors
    assert "p.yaml:7 targets[4]: a cascade target, and only one, has a cascade: block" in errors
