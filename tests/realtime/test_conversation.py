from __future__ import annotations

import json
from typing import Any

import pytest

from router.realtime.conversation import REPLAY_EVENT_PREFIX, Conversation


def user(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def assistant_audio(item_id: str, transcript: str) -> dict[str, Any]:
    content = [{"type": "output_audio", "transcript": transcript}]
    return {"id": item_id, "type": "message", "role": "assistant", "content": content}


def replayed(conv: Conversation) -> list[dict[str, Any]]:
    return [json.loads(e)["item"] for e in conv.replay_events()]


def test_items_replay_as_text_in_order_under_their_ids() -> None:
    conv = Conversation()
    conv.observe(user("u1", "hello"))
    conv.observe({"id": "a1", "type": "message", "role": "assistant", "content": []})
    conv.observe(assistant_audio("a1", "hi, how can I help?"))
    conv.observe(
        {"id": "f1", "type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"}
    )
    conv.observe({"id": "o1", "type": "function_call_output", "call_id": "c1", "output": "sunny"})
    items = replayed(conv)
    assert [i["id"] for i in items] == ["u1", "a1", "f1", "o1"]
    assert items[1]["content"] == [{"type": "output_text", "text": "hi, how can I help?"}]
    assert items[2] == {
        "id": "f1",
        "type": "function_call",
        "call_id": "c1",
        "name": "w",
        "arguments": "{}",
    }
    events = [json.loads(e) for e in conv.replay_events()]
    assert all(e["type"] == "conversation.item.create" for e in events)
    assert all(e["event_id"].startswith(REPLAY_EVENT_PREFIX) for e in events)


def test_user_audio_replays_only_once_transcribed() -> None:
    conv = Conversation()
    conv.observe(
        {
            "id": "u1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
    )
    assert replayed(conv) == []
    conv.transcript("u1", "what time is it")
    assert replayed(conv)[0]["content"] == [{"type": "input_text", "text": "what time is it"}]


def test_a_user_turn_without_words_replays_as_its_kept_audio() -> None:
    conv = Conversation()
    conv.observe(user("u0", "hi"))
    heard = {"id": "u1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]}
    conv.observe(heard)
    conv.observe({"id": "a1", "type": "message", "role": "assistant", "content": []})
    audio = {"u1": "AAAA", "a1": "BBBB"}  # audio is only ever a user's
    events = [json.loads(e) for e in conv.replay_events(audio)]
    assert [e["item"]["id"] for e in events] == ["u0", "u1"]
    assert events[1]["item"]["content"] == [{"type": "input_audio", "audio": "AAAA"}]
    assert len({e["event_id"] for e in events}) == 2
    assert conv.replayable_ids(audio) == {"u0", "u1"} and conv.replayable_ids() == {"u0"}
    conv.transcript("u1", "what time is it")  # words win over audio
    assert json.loads(conv.replay_events(audio)[1])["item"]["content"][0]["type"] == "input_text"


def test_a_refresh_without_text_keeps_the_text() -> None:
    conv = Conversation()
    conv.observe(assistant_audio("a1", "full answer"))
    conv.observe({"id": "a1", "type": "message", "role": "assistant", "content": []})
    assert replayed(conv)[0]["content"][0]["text"] == "full answer"


def test_insert_after_previous_item_and_delete() -> None:
    conv = Conversation()
    conv.observe(user("u1", "one"))
    conv.observe(user("u3", "three"))
    conv.observe(user("u2", "two"), previous_item_id="u1")
    assert [i.id for i in conv] == ["u1", "u2", "u3"]
    conv.delete("u2")
    assert [i.id for i in conv] == ["u1", "u3"]
    assert conv.chars == len("one") + len("three")


def test_truncate_keeps_the_share_of_text_that_was_heard() -> None:
    conv = Conversation()
    conv.observe(assistant_audio("a1", "one two three four"))
    conv.audio_sent("a1", 48 * 1000)  # one second of 24 kHz PCM16
    conv.truncate("a1", 500, bytes_per_ms=48.0)
    assert conv.get("a1") is not None and conv.get("a1").text == "one two"  # type: ignore[union-attr]
    conv.truncate("a1", 0, bytes_per_ms=48.0)
    assert replayed(conv) == []


def test_bounded_by_items_and_characters_oldest_first() -> None:
    conv = Conversation(max_items=3, max_chars=1000)
    for n in range(5):
        conv.observe(user(f"u{n}", "x"))
    assert [i.id for i in conv] == ["u2", "u3", "u4"] and conv.dropped == 2
    small = Conversation(max_items=100, max_chars=10)
    small.observe(user("a", "12345"))
    small.observe(user("b", "123456"))
    assert [i.id for i in small] == ["b"] and small.chars == 6


def test_unreplayable_kinds_are_ignored() -> None:
    conv = Conversation()
    conv.observe({"id": "m1", "type": "mcp_call", "name": "x"})
    conv.observe({"type": "message", "role": "user", "content": []})
    assert len(conv) == 0
    with pytest.raises(ValueError):
        Conversation(max_items=0)
