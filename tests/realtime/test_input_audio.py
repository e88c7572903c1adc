"""`router.realtime.input_audio.InputAudio`: the uncommitted append frames a migration
appends again, within the route's budget."""

from __future__ import annotations

import base64
import json

from router.realtime.input_audio import IDLE_BYTES, InputAudio


def test_frames_are_kept_in_order_until_the_upstream_consumes_them() -> None:
    kept = InputAudio(1000)
    kept.appended("a" * 100, True)
    kept.appended("b" * 100, True)
    assert kept.frames() == ["a" * 100, "b" * 100]
    kept.consumed()
    assert kept.frames() == []
    kept.appended("c" * 10, True)
    assert kept.frames() == ["c" * 10]


def test_the_oldest_go_first_past_the_budget() -> None:
    kept = InputAudio(250)
    for name in "abcd":
        kept.appended(name * 100, True)
    assert kept.frames() == ["c" * 100, "d" * 100]
    kept.appended("e" * 300, True)  # one frame past the whole budget: nothing is kept
    assert kept.frames() == []


def test_a_budget_of_zero_keeps_nothing() -> None:
    kept = InputAudio(0)
    kept.appended("a", True)
    assert kept.frames() == []


def test_between_turns_only_the_last_idle_bytes_are_kept() -> None:
    # the silence a server VAD holds between utterances is no turn to carry
    kept = InputAudio(10 * IDLE_BYTES)
    frame = "s" * (IDLE_BYTES // 4)
    for _ in range(8):
        kept.appended(frame, False)
    assert len(kept.frames()) == 4
    for _ in range(8):  # the user speaks: the route's whole budget
        kept.appended(frame, True)
    assert len(kept.frames()) == 12


def append(pcm: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


def test_the_last_committed_turn_is_kept_as_one_audio_until_its_transcript() -> None:
    kept = InputAudio(10_000)
    kept.appended(append(b"\x01" * 5), True)  # 5 bytes: base64 with padding
    kept.appended(append(b"\x02" * 7), True)
    kept.committed("item_1")
    assert kept.frames() == []  # the buffer is empty upstream now
    audio = kept.turn_audio()
    assert base64.b64decode(audio["item_1"]) == b"\x01" * 5 + b"\x02" * 7  # joined whole
    kept.transcribed("item_other")
    assert kept.turn_audio()  # another item's words
    kept.transcribed("item_1")
    assert kept.turn_audio() == {}


def test_a_turn_cut_by_the_budget_or_unreadable_is_not_replayed_as_audio() -> None:
    kept = InputAudio(200)
    for _ in range(4):
        kept.appended(append(b"\x03" * 60), True)  # past the budget: the oldest go
    kept.committed("item_1")
    assert kept.turn_audio() == {}
    kept.appended('{"type":"input_audio_buffer.append","audio":"not base64!"}', True)
    kept.committed("item_2")
    assert kept.turn_audio() == {}
    kept.appended(append(b"\x04" * 9), True)
    kept.committed("item_3")  # the next commit replaces the turn
    assert list(kept.turn_audio()) == ["item_3"]
    kept.consumed()  # a clear empties the buffer, not the committed turn
    assert list(kept.turn_audio()) == ["item_3"]


COMMIT = '{"type":"input_audio_buffer.commit","event_id":"evt_c1"}'
CLEAR = '{"type":"input_audio_buffer.clear"}'


def test_the_clients_commit_is_kept_where_it_came_until_the_upstream_answers() -> None:
    kept = InputAudio(10_000)
    first, second = append(b"\x01" * 5), append(b"\x02" * 5)
    kept.appended(first, True)
    kept.marked(COMMIT)
    kept.appended(second, True)  # the next turn, after the commit
    assert kept.frames() == [first, COMMIT, second]  # a move sends them so
    kept.committed("item_1")  # the commit's answer: what came before it is committed
    assert kept.frames() == [second]
    assert base64.b64decode(kept.turn_audio()["item_1"]) == b"\x01" * 5
    kept.marked(CLEAR)
    kept.appended(first, True)
    kept.consumed()  # the clear's answer: the appends after it stay
    assert kept.frames() == [first]
    kept.committed("item_2")  # a server VAD's commit (none of the client's out): all
    assert kept.frames() == [] and list(kept.turn_audio()) == ["item_2"]


def test_a_refused_commit_is_not_sent_again() -> None:
    kept = InputAudio(10_000)
    kept.marked(COMMIT)
    assert not kept.refused("evt_c")  # another event
    assert kept.refused("evt_c1") and kept.frames() == []
    kept.marked(CLEAR)
    kept.marked(COMMIT)
    assert kept.refused(None)  # "the buffer was empty", naming no event: the oldest
    assert kept.frames() == [COMMIT] and not InputAudio(10).refused(None)
    kept.appended("a" * 20_000, True)  # past the budget: the commit goes with the oldest
    assert kept.frames() == [] and not kept.refused(None)
    zero = InputAudio(0)
    zero.marked(COMMIT)  # nothing kept, nothing sent again
    assert zero.frames() == []
