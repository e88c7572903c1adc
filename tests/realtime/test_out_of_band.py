"""The relay's books of out-of-band responses (`router.realtime.out_of_band`)."""

from __future__ import annotations

import json

from router.realtime.out_of_band import OutOfBand

ASIDE = {"response": {"conversation": "none"}}


def create(**response: object) -> str:
    return json.dumps({"type": "response.create", "response": response})


def test_only_a_create_asking_for_no_conversation_is_out_of_band() -> None:
    books = OutOfBand()
    assert not books.ask(json.dumps({"type": "response.create"}), 0.0)
    assert not books.ask(create(conversation="auto", instructions="none"), 0.0)
    assert not books.ask(create(instructions='say "conversation": "none"'), 0.0)
    aside = create(conversation="none")
    assert books.ask(aside, 0.0)
    assert list(books.asked) == [aside] and not books.idle


def test_a_created_response_is_out_of_band_only_when_one_was_asked_and_it_joins_nothing() -> None:
    books = OutOfBand()
    assert not books.created({"id": "resp_1", "conversation_id": None})  # none asked
    books.ask(create(conversation="none"), 0.0)
    assert not books.created({"id": "resp_2", "conversation_id": "conv_1"})  # the VAD's
    assert books.created({"id": "resp_3", "conversation_id": None})
    assert books.live == ["resp_3"] and not books.asked
    assert not books.done("resp_2")
    assert books.done("resp_3") and books.idle


def test_a_dead_upstream_ends_what_was_in_flight_and_keeps_what_was_asked() -> None:
    books = OutOfBand()
    heard = create(conversation="none", metadata={"n": "1"})
    books.ask(heard, 0.0)
    books.created({"id": "resp_1", "conversation_id": None})
    assert books.first_delta("resp_1", 0.5) == 0.5  # the client had output of it
    pending = create(conversation="none", metadata={"n": "2"})
    books.ask(pending, 0.0)
    assert books.interrupted() == ["resp_1"]
    assert books.live == [] and list(books.asked) == [pending]


def test_a_response_in_flight_the_client_had_nothing_of_is_asked_again_first() -> None:
    books = OutOfBand()
    frames = [create(conversation="none", metadata={"n": str(n)}) for n in range(4)]
    for n, frame in enumerate(frames):
        books.ask(frame, float(n))
    for n in range(3):
        books.created({"id": f"resp_{n}", "conversation_id": None})
    books.first_delta("resp_0", 5.0)  # heard: ends failed only
    assert books.cancelled("resp_2")  # the client talked over it: not asked again
    assert not books.cancelled("resp_conversation")
    assert books.interrupted() == ["resp_0", "resp_1", "resp_2"]
    assert books.asked == [frames[1], frames[3]]  # in the order the client asked
    # under `regenerate` the heard one is asked again too; the cancelled one never
    books = OutOfBand()
    for n, frame in enumerate(frames[:3]):
        books.ask(frame, float(n))
        books.created({"id": f"resp_{n}", "conversation_id": None})
    books.first_delta("resp_0", 5.0)
    books.cancelled("resp_2")
    books.interrupted(regenerate=True)
    assert books.asked == frames[:2]


def test_a_request_is_late_from_its_ask_and_moved_for_it_once() -> None:
    books = OutOfBand()
    assert books.late_since() is None
    books.ask(create(conversation="none"), 3.0)
    books.ask(create(conversation="none"), 4.0)
    assert books.late_since() == 3.0
    books.created({"id": "resp_1", "conversation_id": None})
    assert books.late_since() == 3.0  # created, no output yet: still late from its ask
    books.first_delta("resp_1", 3.5)
    assert books.late_since() == 4.0
    books.created({"id": "resp_2", "conversation_id": None})
    books.cancelled("resp_2")
    assert books.late_since() is None  # cancelled: not late
    books.ask(create(conversation="none"), 6.0)
    books.interrupted(retried=True)  # moved for being late
    assert books.asked and books.late_since() is None  # its second try is not moved
    books.created({"id": "resp_3", "conversation_id": None})
    assert books.late_since() is None and books.waiting == {"resp_3": 6.0}


def test_an_error_naming_an_out_of_band_request_ends_it() -> None:
    books = OutOfBand()
    books.ask(json.dumps({"type": "response.create", "event_id": "evt_12", **ASIDE}), 0.0)
    assert not books.refused("evt_1")  # another event's id, not a prefix of this one
    assert books.refused("evt_12")
    assert books.idle and books.late_since() is None


def test_a_delta_is_owned_by_the_out_of_band_response_it_names() -> None:
    books = OutOfBand()
    delta = {"type": "response.output_audio.delta", "delta": "AAAA"}
    assert books.owner(json.dumps({**delta, "response_id": "resp_aside"})) is None
    assert books.ask(create(conversation="none"), 0.0)
    assert books.created({"id": "resp_aside", "conversation_id": None})
    assert books.owner(json.dumps({**delta, "response_id": "resp_aside"})) == "resp_aside"
    assert books.owner(json.dumps({**delta, "response_id": "resp_conversation"})) is None
    assert books.owner(json.dumps(delta)) is None
    assert books.done("resp_aside")
    assert books.owner(json.dumps({**delta, "response_id": "resp_aside"})) is None


def test_an_aside_is_timed_from_its_request_to_its_first_delta_only() -> None:
    books = OutOfBand()
    books.ask(create(conversation="none"), 10.0)
    books.ask(create(conversation="none"), 10.5)
    books.created({"id": "resp_1", "conversation_id": None})
    books.created({"id": "resp_2", "conversation_id": None})
    assert books.first_delta("resp_2", 11.0) == 0.5
    assert books.first_delta("resp_2", 11.2) is None  # the first only
    assert books.first_delta("resp_other", 11.2) is None
    assert books.interrupted() == ["resp_1", "resp_2"]
    assert books.first_delta("resp_1", 12.0) is None  # ended by the migration: not timed
    books.ask(create(conversation="none"), 20.0)
    books.created({"id": "resp_3", "conversation_id": None})
    assert books.done("resp_3")
    assert books.first_delta("resp_3", 21.0) is None and not books.waiting
