"""The client's item creates no upstream confirmed yet (`router.realtime.pending_items`)."""

from __future__ import annotations

import json

from router.realtime.pending_items import MAX_PENDING, PendingItems


def create(
    item_id: str | None = None, event_id: str | None = None
) -> tuple[str, dict[str, object]]:
    item: dict[str, object] = {"type": "message", "role": "user", "content": []}
    if item_id is not None:
        item["id"] = item_id
    event: dict[str, object] = {"type": "conversation.item.create", "item": item}
    if event_id is not None:
        event["event_id"] = event_id
    return json.dumps(event), event


def test_an_item_without_an_id_is_given_one_and_kept_until_added() -> None:
    pending = PendingItems()
    frame, event = create()
    sent = pending.created(frame, event)
    given = json.loads(sent)["item"]["id"]
    assert given.startswith("item_ft_") and len(given) == 32
    assert json.loads(sent)["item"]["role"] == "user"
    assert pending.frames == [sent]
    pending.added("item_other")  # not one of ours
    assert pending.frames == [sent]
    pending.added(given)
    assert pending.frames == []


def test_the_clients_own_id_is_kept_and_a_later_item_added_ends_the_earlier() -> None:
    pending = PendingItems()
    first, event = create("item_1")
    assert pending.created(first, event) is first  # sent as it came
    second, event = create("item_2")
    pending.created(second, event)
    third, event = create("item_3")
    pending.created(third, event)
    pending.added("item_2")  # the upstream reads in order: item_1 was added or refused
    assert pending.frames == [third]


def test_an_error_naming_a_create_ends_it_and_the_kept_creates_are_bounded() -> None:
    pending = PendingItems()
    frame, event = create("item_1", event_id="evt_12")
    pending.created(frame, event)
    assert not pending.refused("evt_1")
    assert pending.refused("evt_12") and pending.frames == []
    for n in range(MAX_PENDING + 5):
        frame, event = create(f"item_{n}")
        pending.created(frame, event)
    assert len(pending.frames) == MAX_PENDING
    assert json.loads(pending.frames[0])["item"]["id"] == "item_5"
    bad = json.dumps({"type": "conversation.item.create", "item": "text"})
    assert pending.created(bad, json.loads(bad)) == bad
