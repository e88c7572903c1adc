"""Client edits of the conversation the upstream has not answered yet.

The conversation copy a migration replays (`router.realtime.conversation`) learns
items, deletions and truncations from the server's `conversation.item.added`,
`deleted` and `truncated`. A client's `conversation.item.create`, `delete` or
`truncate` the old upstream never read (it hung, or died with the frame in its
socket) is in none: the new target would answer the turn before a new item, keep an
item the client deleted, or read the whole of an answer the user cut short; and a
`conversation.item.retrieve` it never read would never be answered. So the relay
keeps each until the upstream answers it (or answers one sent after it: the upstream
reads in order, so the earlier one was answered or refused), and a migration carries
them: creates, deletes and retrieves are sent again after the replayed conversation,
in the order they came (the replay keeps the items' ids: a retrieve is answered with
the new target's copy, as text); a truncation is made in the copy before the replay
(the new target holds the answer as text, with no audio to truncate), and the client
is sent the `conversation.item.truncated` the old upstream owed it.

An item is matched by its id. The client may leave a new item's id to the server; the
relay then gives the item one (`item_ft_` and 24 hex digits: 32 characters, OpenAI's
limit), as any client may, so that the upstream's `conversation.item.added` names
it; but not in a create over `MAX_REWRITE_CHARS` (an image: writing 4 MB of JSON again
holds the event loop for 10-15 ms), which is then not kept: a client that gives such
items ids has them carried too.
"""

from __future__ import annotations

import secrets
from typing import Literal

from router.realtime.wire import dumps, names_event

Edit = Literal["create", "delete", "retrieve", "truncate"]

#: client events kept, and the server event that answers each
EDITS: dict[str, Edit] = {
    "conversation.item.create": "create",
    "conversation.item.delete": "delete",
    "conversation.item.retrieve": "retrieve",
    "conversation.item.truncate": "truncate",
}
ANSWERS: dict[str, Edit] = {
    "conversation.item.added": "create",
    "conversation.item.done": "create",
    "conversation.item.deleted": "delete",
    "conversation.item.retrieved": "retrieve",
    "conversation.item.truncated": "truncate",
}

#: edits kept at most (the oldest go first); more than any upstream leaves unread
MAX_PENDING = 64
#: the largest create the relay writes again to give its item an id
MAX_REWRITE_CHARS = 64 * 1024


def new_item_id() -> str:
    return "item_ft_" + secrets.token_hex(12)


class PendingItems:
    __slots__ = ("_edits",)

    def __init__(self) -> None:
        #: (edit, item id) -> the client's frame and event as sent, oldest first
        self._edits: dict[tuple[Edit, str], tuple[str, dict[str, object]]] = {}

    def sent(self, kind: str, frame: str, event: dict[str, object]) -> str:
        """Note a client event of `EDITS` (`event`, decoded from `frame`); returns the
        frame to send: `frame`, or, for a new item with no id, one with an id the relay
        gave it."""
        edit = EDITS[kind]
        if edit != "create":
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                self._keep((edit, item_id), frame, event)
            return frame
        item = event.get("item")
        if not isinstance(item, dict):
            return frame  # the upstream refuses it
        new_id = item.get("id")
        if not isinstance(new_id, str) or not new_id:
            if len(frame) > MAX_REWRITE_CHARS:
                return frame  # not kept: see the module's docstring
            new_id = new_item_id()
            event = {**event, "item": {**item, "id": new_id}}
            frame = dumps(event)
        self._keep(("create", new_id), frame, event)
        return frame

    def _keep(self, key: tuple[Edit, str], frame: str, event: dict[str, object]) -> None:
        self._edits.pop(key, None)
        self._edits[key] = (frame, event)
        while len(self._edits) > MAX_PENDING:
            del self._edits[next(iter(self._edits))]

    def answered(self, kind: str, item_id: object) -> None:
        """The upstream's event `kind` (of `ANSWERS`) about `item_id`: that edit and
        every one sent before it are done."""
        key = (ANSWERS[kind], item_id)
        if key not in self._edits:
            return
        for kept in list(self._edits):
            del self._edits[kept]
            if kept == key:
                return

    def refused(self, event_id: str) -> bool:
        """An `error` naming the client event `event_id`: True when it was one of these
        (nothing is coming for it)."""
        for key, (frame, _) in self._edits.items():
            if names_event(frame, event_id):
                del self._edits[key]
                return True
        return False

    @property
    def frames(self) -> list[str]:
        """The creates, deletes and retrieves no upstream answered, oldest first (a
        migration sends them again)."""
        return [frame for (edit, _), (frame, _) in self._edits.items() if edit != "truncate"]

    def take_truncations(self) -> list[tuple[str, str, int, dict[str, object]]]:
        """The truncations no upstream answered, as (frame, item id, `audio_end_ms`, the
        client's event), oldest first; forgotten (a migration makes them itself)."""
        taken = []
        for key, (frame, event) in list(self._edits.items()):
            if key[0] != "truncate":
                continue
            del self._edits[key]
            end_ms = event.get("audio_end_ms")
            if isinstance(end_ms, int) and not isinstance(end_ms, bool):
                taken.append((frame, key[1], end_ms, event))
        return taken
