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


def test_an_initial_configuration_shows_in_the_session_created_the_client_sees() -> None:
    created = json.dumps(
        {
            "type": "session.created",
            "session": {
                "model": "gpt-realtime",
                "instructions": "",
                "audio": {"output": {"voice": "alloy", "speed": 1.0}},
            },
        }
    )
    assert SessionConfig().applied_to(created) == created  # nothing configured: as sent
    config = SessionConfig(
        {"model": "voice", "instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}}
    )
    assert config.updates == 1 and config.replay_event() is not None
    session = json.loads(config.applied_to(created))["session"]
    assert session["instructions"] == "Be brief."
    assert session["audio"]["output"] == {"voice": "marin", "speed": 1.0}  # merged
    assert session["model"] == "gpt-realtime"  # the upstream's own, not the route
    assert config.applied_to("not json") == "not json"


def test_a_transcription_sessions_replay_names_its_own_type() -> None:
    # A partial update that names no type is replayed as the session's type: a
    # transcription session's new upstream refuses a `realtime` session.update.
    config = SessionConfig(kind="transcription")
    config.update({"audio": {"input": {"transcription": {"model": "gpt-live-transcribe"}}}})
    event = json.loads(config.replay_event() or "")
    assert event["session"]["type"] == "transcription"
    assert (
        json.loads(SessionConfig({"instructions": "x"}).replay_event() or "")["session"]["type"]
        == "realtime"
    )


def test_a_transcription_the_client_did_not_ask_for_is_asked_upstream_and_hidden_back() -> None:
    config = SessionConfig()
    assert config.needs_transcription("whisper-1")
    assert not config.needs_transcription(None)  # the route asks for none
    replay = json.loads(config.replay_event("whisper-1") or "")
    assert replay["session"] == {
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
        "type": "realtime",
    }
    update = {"audio": {"input": {"turn_detection": None}}}
    config.update(update)
    asked = config.transcribing(update, "whisper-1")
    assert asked["audio"]["input"] == {
        "turn_detection": None,
        "transcription": {"model": "whisper-1"},
    }
    assert config.session == {"audio": {"input": {"turn_detection": None}}}  # left as it was
    echo = {"type": "session.updated", "session": {"audio": {"input": asked["audio"]["input"]}}}
    shown = json.loads(config.as_client_sees(json.dumps(echo)))
    assert shown["session"]["audio"]["input"] == {"turn_detection": None, "transcription": None}
    # a client that asks for transcripts gets its own, shown as they are
    config.update({"audio": {"input": {"transcription": {"model": "gpt-4o-transcribe"}}}})
    assert not config.needs_transcription("whisper-1")
    assert json.loads(config.replay_event("whisper-1") or "")["session"]["audio"]["input"][
        "transcription"
    ] == {"model": "gpt-4o-transcribe"}
    # a transcription session transcribes anyway
    assert not SessionConfig(kind="transcription").needs_transcription("whisper-1")


def test_auto_responses_follow_the_vad_and_its_create_response() -> None:
    config = SessionConfig()
    assert config.auto_responses  # a server's default VAD answers each commit
    config.update({"audio": {"input": {"turn_detection": None}}})
    assert not config.auto_responses  # the client commits and asks itself
    vad = {"type": "server_vad", "create_response": False}
    config.update({"audio": {"input": {"turn_detection": vad}}})
    assert not config.auto_responses
    config.update({"audio": {"input": {"turn_detection": {"create_response": True}}}})
    assert config.auto_responses
