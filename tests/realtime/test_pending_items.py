"""Client edits of the conversation no upstream answered yet
(`router.realtime.pending_items`)."""

from __future__ import annotations

import json

from router.realtime.pending_items import MAX_PENDING, MAX_REWRITE_CHARS, PendingItems


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
    sent = pending.sent("conversation.item.create", frame, event)
    given = json.loads(sent)["item"]["id"]
    assert given.startswith("item_ft_") and len(given) == 32
    assert json.loads(sent)["item"]["role"] == "user"
    assert pending.frames == [sent]
    pending.answered("conversation.item.added", "item_other")  # not one of ours
    assert pending.frames == [sent]
    pending.answered("conversation.item.done", given)
    assert pending.frames == []


def test_the_clients_own_id_is_kept_and_a_later_item_added_ends_the_earlier() -> None:
    pending = PendingItems()
    first, event = create("item_1")
    assert pending.sent("conversation.item.create", first, event) is first  # sent as it came
    second, event = create("item_2")
    pending.sent("conversation.item.create", second, event)
    third, event = create("item_3")
    pending.sent("conversation.item.create", third, event)
    pending.answered(
        "conversation.item.added", "item_2"
    )  # the upstream reads in order: item_1 was added or refused
    assert pending.frames == [third]


def test_an_error_naming_a_create_ends_it_and_the_kept_creates_are_bounded() -> None:
    pending = PendingItems()
    frame, event = create("item_1", event_id="evt_12")
    pending.sent("conversation.item.create", frame, event)
    assert not pending.refused("evt_1")
    assert pending.refused("evt_12") and pending.frames == []
    for n in range(MAX_PENDING + 5):
        frame, event = create(f"item_{n}")
        pending.sent("conversation.item.create", frame, event)
    assert len(pending.frames) == MAX_PENDING
    assert json.loads(pending.frames[0])["item"]["id"] == "item_5"
    bad = json.dumps({"type": "conversation.item.create", "item": "text"})
    assert pending.sent("conversation.item.create", bad, json.loads(bad)) == bad


def test_a_large_create_is_sent_as_it_came_and_kept_only_under_the_clients_id() -> None:
    pending = PendingItems()
    image = "data:image/png;base64," + "A" * MAX_REWRITE_CHARS
    event: dict[str, object] = {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"image_url": image}]},
    }
    frame = json.dumps(event)
    assert pending.sent("conversation.item.create", frame, event) is frame and pending.frames == []
    event["item"] = {**event["item"], "id": "item_img"}  # type: ignore[dict-item]
    frame = json.dumps(event)
    assert pending.sent("conversation.item.create", frame, event) is frame and pending.frames == [
        frame
    ]


def edit(kind: str, item_id: str, **fields: object) -> tuple[str, str, dict[str, object]]:
    event: dict[str, object] = {"type": f"conversation.item.{kind}", "item_id": item_id, **fields}
    return f"conversation.item.{kind}", json.dumps(event), event


def test_deletes_are_sent_again_in_order_and_truncations_taken_apart() -> None:
    pending = PendingItems()
    frame, event = create("item_1")
    pending.sent("conversation.item.create", frame, event)
    kind, delete, event = edit("delete", "item_0")
    assert pending.sent(kind, delete, event) is delete
    kind, truncate, event = edit("truncate", "item_a", content_index=0, audio_end_ms=1200)
    pending.sent(kind, truncate, event)
    kind, bad, event = edit("truncate", "item_b", audio_end_ms="soon")
    pending.sent(kind, bad, event)
    assert pending.frames == [frame, delete]  # truncations are not sent again
    taken = pending.take_truncations()
    assert [(item_id, end_ms) for _, item_id, end_ms, _ in taken] == [("item_a", 1200)]
    assert taken[0][0] is truncate
    assert pending.take_truncations() == [] and pending.frames == [frame, delete]
    pending.answered("conversation.item.deleted", "item_0")  # the create before it too
    assert pending.frames == []
    kind, truncate, event = edit("truncate", "item_c", audio_end_ms=10)
    pending.sent(kind, truncate, event)
    pending.answered("conversation.item.truncated", "item_c")
    assert pending.take_truncations() == []


def test_a_retrieve_is_sent_again_until_its_item_is_retrieved() -> None:
    pending = PendingItems()
    kind, retrieve, event = edit("retrieve", "item_a")
    assert pending.sent(kind, retrieve, event) is retrieve
    pending.answered("conversation.item.retrieved", "item_b")  # not the one asked for
    assert pending.frames == [retrieve]
    pending.answered("conversation.item.retrieved", "item_a")
    assert pending.frames == []
