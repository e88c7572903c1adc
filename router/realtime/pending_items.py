"""Items the client created that the upstream has not confirmed yet.

The conversation copy a migration replays (`router.realtime.conversation`) learns
items from the server's `conversation.item.added`. A client's
`conversation.item.create` the old upstream never read (it hung, or died with the
frame in its socket) is in neither: the new target would answer the turn before it.
So the relay keeps each client item create until the upstream adds that item (or
one created after it: the upstream reads in order, so the earlier one was added or
refused), and a migration sends those frames again, after the replayed conversation.

An item is matched by its id. The client may leave the id to the server; the relay
then gives the item one (`item_ft_` and 24 hex digits: 32 characters, OpenAI's
limit), as any client may, so that the upstream's `conversation.item.added` names
it.
"""

from __future__ import annotations

import secrets

from router.realtime.wire import dumps

#: creates kept at most (the oldest go first); more than any upstream leaves unread
MAX_PENDING = 64


def new_item_id() -> str:
    return "item_ft_" + secrets.token_hex(12)


class PendingItems:
    __slots__ = ("_frames",)

    def __init__(self) -> None:
        #: item id -> the create frame as sent, oldest first
        self._frames: dict[str, str] = {}

    def created(self, frame: str, event: dict[str, object]) -> str:
        """Note a client `conversation.item.create` (`event`, decoded from `frame`);
        returns the frame to send: `frame`, or, when its item has no id, one with an id
        the relay gave it."""
        item = event.get("item")
        if not isinstance(item, dict):
            return frame  # the upstream refuses it
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            item_id = new_item_id()
            frame = dumps({**event, "item": {**item, "id": item_id}})
        self._frames.pop(item_id, None)
        self._frames[item_id] = frame
        while len(self._frames) > MAX_PENDING:
            del self._frames[next(iter(self._frames))]
        return frame

    def added(self, item_id: object) -> None:
        """The upstream added `item_id`: it and every create sent before it are done."""
        if not isinstance(item_id, str) or item_id not in self._frames:
            return
        for key in list(self._frames):
            del self._frames[key]
            if key == item_id:
                return

    def refused(self, event_id: str) -> bool:
        """An `error` naming the client event `event_id`: True when it was one of these
        creates (no item is coming for it)."""
        quoted = f'"{event_id}"'
        for key, frame in self._frames.items():
            if quoted in frame:
                del self._frames[key]
                return True
        return False

    @property
    def frames(self) -> list[str]:
        """The creates no upstream confirmed, oldest first (a migration sends them)."""
        return list(self._frames.values())
