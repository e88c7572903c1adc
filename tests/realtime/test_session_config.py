from __future__ import annotations

import json

from router.realtime.session_config import SessionConfig


def test_updates_merge_and_replay_as_one_session_update() -> None:
    config = SessionConfig()
    assert config.replay_event() is None
    config.update({"type": "realtime", "instructions": "be brief", "model": "gpt-realtime"})
    config.update({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    config.update(
        {"audio": {"input": {"transcription": {"model": "whisper-1"}}}, "instructions": "be kind"}
    )
    event = json.loads(config.replay_event() or "")
    assert event["type"] == "session.update"
    assert event["session"] == {
        "type": "realtime",
        "instructions": "be kind",
        "audio": {
            "input": {
                "turn_detection": {"type": "server_vad"},
                "transcription": {"model": "whisper-1"},
            }
        },
    }


def test_a_null_replaces_what_was_set() -> None:
    config = SessionConfig()
    config.update({"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    config.update({"audio": {"input": {"turn_detection": None}}})
    assert config.session["audio"]["input"]["turn_detection"] is None


def test_output_audio_rate() -> None:
    config = SessionConfig()
    assert config.output_bytes_per_ms() == 48.0
    config.update({"audio": {"output": {"format": {"type": "audio/pcmu"}}}})
    assert config.output_bytes_per_ms() == 8.0


def test_manual_turns_only_when_the_client_turns_vad_off() -> None:
    config = SessionConfig()
    assert not config.manual_turns  # a server's default is VAD
    config.update({"audio": {"input": {"transcription": {"model": "whisper-1"}}}})
    assert not config.manual_turns
    config.update({"audio": {"input": {"turn_detection": None}}})
    assert config.manual_turns
    config.update({"instructions": "be brief"})  # other updates leave it
    assert config.manual_turns
    config.update({"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}})
    assert not config.manual_turns
