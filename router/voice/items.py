"""A cascade session's conversation items, and the client events that act on them.

`conversation.item.create|retrieve|delete|truncate`, as OpenAI answers them (an
item after `previous_item_id`, first for `root`; an unknown one, or an id already
taken, is an error and adds nothing); a
truncation cuts an assistant item's text to what was heard (`truncate.heard_text`
over the pieces its response spoke), so the next chat turn carries only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.voice.respond import Response
from router.voice.truncate import heard_text, spoken_ms

#: `previous_item_id` that puts an item first
ROOT = "root"


class ConversationItems:
    """Mixed into `CascadeConnection`, which provides the output side."""

    items: list[dict[str, Any]]
    _responses: dict[str, Response]

    async def emit(self, kind: str, **fields: Any) -> None:
        raise NotImplementedError

    async def _error(self, message: str, code: str, event: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    def _new_id(self, prefix: str) -> str:
        raise NotImplementedError

    def _hear_item(self, item: dict[str, Any]) -> None:
        raise NotImplementedError

    def _add_item(self, item: dict[str, Any], after: str | None = None) -> str | None:
        """Append (or insert after `after`, first for `root`); returns the previous
        item's id."""
        if after == ROOT:
            self.items.insert(0, item)
            return None
        if after is not None:
            index = next((i for i, it in enumerate(self.items) if it["id"] == after), None)
            if index is not None:
                self.items.insert(index + 1, item)
                return after
        previous = self.items[-1]["id"] if self.items else None
        self.items.append(item)
        return str(previous) if previous is not None else None

    def _find(self, item_id: object) -> dict[str, Any] | None:
        return next((it for it in self.items if it["id"] == item_id), None)

    async def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            await self._error("unsupported item", "invalid_value", event)
            return
        item = {**item, "id": item.get("id") or self._new_id("item"), "object": "realtime.item"}
        item.setdefault("status", "completed")
        if self._find(item["id"]) is not None:
            await self._error(
                f"Duplicate item id: {str(item['id'])[:100]!r}", "item_id_conflict", event
            )
            return
        previous_id = event.get("previous_item_id")
        if isinstance(previous_id, str) and previous_id != ROOT and self._find(previous_id) is None:
            # as OpenAI: an item to follow that is not there is an error, not an append
            await self._error(
                f"previous_item_id {previous_id[:100]!r} is not in the conversation",
                "item_not_found",
                event,
            )
            return
        self._hear_item(item)  # a user's audio with no words: heard by speech to text
        previous = self._add_item(item, previous_id if isinstance(previous_id, str) else None)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item)
        await self.emit("conversation.item.done", previous_item_id=previous, item=item)

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            await self._error("no such item", "item_not_found", event)
            return
        await self.emit("conversation.item.retrieved", item=item)

    async def _item_delete(self, event: dict[str, Any]) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            await self._error("no such item", "item_not_found", event)
            return
        self.items.remove(item)
        await self.emit("conversation.item.deleted", item_id=item["id"])

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item = self._find(event.get("item_id"))
        end_ms = event.get("audio_end_ms")
        output = self._spoken(item)
        if item is None or output is None or not isinstance(end_ms, int) or end_ms < 0:
            await self._error("Only assistant audio can be truncated.", "invalid_value", event)
            return
        if end_ms > spoken_ms(output) + 1:
            await self._error(
                "audio_end_ms is longer than the item's audio.", "invalid_value", event
            )
            return
        heard = heard_text(output, end_ms)
        item["content"] = [{"type": "output_audio", "transcript": heard}]
        await self.emit(
            "conversation.item.truncated",
            item_id=item["id"],
            content_index=int(event.get("content_index") or 0),
            audio_end_ms=end_ms,
        )

    def _spoken(self, item: dict[str, Any] | None) -> list[Any] | None:
        if item is None or item.get("role") != "assistant":
            return None
        for response in self._responses.values():
            for out in response.outputs:
                if out.item is item:
                    return out.spoken
        return None
