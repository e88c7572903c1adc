"""A bounded text copy of a Realtime conversation, and its replay as client events.

The router keeps what it needs to rebuild a conversation on another target:
every item as text (user text or input-audio transcripts, assistant text or
audio transcripts, system text, function calls and their outputs), in order,
under the ids the client knows them by. Audio itself is never kept.

Items are learned from the server's `conversation.item.added`/`done` (which carry
the full item except audio) and `response.output_item.added`, a user item's
transcript from `conversation.item.input_audio_transcription.completed`, and
removals and truncations from the server's `conversation.item.deleted` and
`conversation.item.truncated`. Truncation cuts an assistant's text to the share
of its audio that was played (`audio_end_ms` over the audio sent), the closest a
text copy gets to what the user heard; the server itself drops the transcript.

The copy is bounded by item count and by characters: the oldest items go first
(`dropped` counts them), as a provider truncates a long context.

What replay cannot carry: audio (voice continuity, server-side input audio that
was never transcribed, but for the last committed turn, whose audio the relay keeps:
`replay_events(audio)`), images, MCP items, and a response still in flight.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from router.realtime.wire import dumps

ItemKind = Literal["message", "function_call", "function_call_output"]
Role = Literal["user", "assistant", "system"]

MAX_ITEMS = 512
MAX_CHARS = 256 * 1024
#: the prefix of event ids the router gives replayed events (their errors are not relayed)
REPLAY_EVENT_PREFIX = "ft_replay_"

_ROLES: frozenset[str] = frozenset({"user", "assistant", "system"})
_TEXT_FIELDS = {
    "input_text": "text",
    "output_text": "text",
    "text": "text",
    "input_audio": "transcript",
    "output_audio": "transcript",
    "audio": "transcript",
}


@dataclass(slots=True)
class Item:
    id: str
    kind: ItemKind
    role: Role | None = None
    #: message text, or the transcript of its audio
    text: str = ""
    #: assistant audio sent to the client, in bytes of the output format
    audio_bytes: int = 0
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str = ""

    @property
    def chars(self) -> int:
        return len(self.text) + len(self.arguments) + len(self.output) + len(self.name)

    @property
    def replayable(self) -> bool:
        if self.kind == "message":
            return bool(self.text)
        return bool(self.call_id)

    def as_item(self) -> dict[str, Any]:
        """The item as a `conversation.item.create` body (GA shape)."""
        if self.kind == "function_call":
            return {
                "id": self.id,
                "type": "function_call",
                "call_id": self.call_id,
                "name": self.name,
                "arguments": self.arguments,
            }
        if self.kind == "function_call_output":
            return {
                "id": self.id,
                "type": "function_call_output",
                "call_id": self.call_id,
                "output": self.output,
            }
        part = "output_text" if self.role == "assistant" else "input_text"
        return {
            "id": self.id,
            "type": "message",
            "role": self.role,
            "content": [{"type": part, "text": self.text}],
        }


def message_text(content: Any) -> str:
    """The text of an item's content parts (text, or the transcript of audio), joined."""
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, Mapping):
            field = _TEXT_FIELDS.get(str(part.get("type")))
            value = part.get(field) if field else None
            if isinstance(value, str) and value:
                texts.append(value)
    return " ".join(texts)


def item_from_event(item: Mapping[str, Any]) -> Item | None:
    """Our copy of a server-sent item, or None for kinds that cannot be replayed."""
    item_id = item.get("id")
    if not isinstance(item_id, str) or not item_id:
        return None
    kind = item.get("type")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            return None
        return Item(item_id, "message", role=role, text=message_text(item.get("content")))
    if kind == "function_call":
        return Item(
            item_id,
            "function_call",
            call_id=str(item.get("call_id") or ""),
            name=str(item.get("name") or ""),
            arguments=str(item.get("arguments") or ""),
        )
    if kind == "function_call_output":
        return Item(
            item_id,
            "function_call_output",
            call_id=str(item.get("call_id") or ""),
            output=str(item.get("output") or ""),
        )
    return None


class Conversation:
    """The ordered, bounded copy. Not thread-safe (one session, one task at a time)."""

    def __init__(self, *, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS) -> None:
        if max_items < 1 or max_chars < 1:
            raise ValueError("max_items and max_chars must be positive")
        self.max_items = max_items
        self.max_chars = max_chars
        self._items: dict[str, Item] = {}
        self._chars = 0
        #: items dropped to stay within the bounds
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(list(self._items.values()))

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    @property
    def chars(self) -> int:
        return self._chars

    # -- what the server said -----------------------------------------------------------

    def observe(self, item: Mapping[str, Any], previous_item_id: str | None = None) -> None:
        """An item was added or finished: insert it, or refresh what we know of it.

        A refresh keeps known text when the new event has none (an assistant item is
        added empty and done full; a user audio item's transcript arrives separately).
        """
        new = item_from_event(item)
        if new is None:
            return
        old = self._items.get(new.id)
        if old is not None:
            self._chars -= old.chars
            old.text = new.text or old.text
            old.arguments = new.arguments or old.arguments
            old.output = new.output or old.output
            old.name = new.name or old.name
            old.call_id = new.call_id or old.call_id
            self._chars += old.chars
        else:
            self._insert(new, previous_item_id)
        self._trim()

    def transcript(self, item_id: str, text: str) -> None:
        """The transcript of a user's input audio arrived."""
        item = self._items.get(item_id)
        if item is None or not text:
            return
        self._chars += len(text) - len(item.text)
        item.text = text
        self._trim()

    def audio_sent(self, item_id: str, nbytes: int) -> None:
        item = self._items.get(item_id)
        if item is not None:
            item.audio_bytes += nbytes

    def delete(self, item_id: str) -> None:
        item = self._items.pop(item_id, None)
        if item is not None:
            self._chars -= item.chars

    def truncate(self, item_id: str, audio_end_ms: int, bytes_per_ms: float) -> None:
        """Keep the share of an assistant item's text whose audio was played."""
        item = self._items.get(item_id)
        if item is None or item.role != "assistant":
            return
        sent_ms = item.audio_bytes / bytes_per_ms if bytes_per_ms > 0 else 0.0
        if sent_ms <= 0:
            kept = "" if audio_end_ms <= 0 else item.text
        else:
            share = min(max(audio_end_ms / sent_ms, 0.0), 1.0)
            kept = _cut_at_word(item.text, round(len(item.text) * share))
        self._chars += len(kept) - len(item.text)
        item.text = kept

    # -- replay -------------------------------------------------------------------------

    def replay_events(self, audio: Mapping[str, str] | None = None) -> list[str]:
        """`conversation.item.create` events that rebuild the copy, oldest first.

        A user item with no text whose audio is given (`audio`: item id -> base64, the
        last committed turn `router.realtime.input_audio` kept) goes as that audio;
        other items with nothing to replay (user audio never transcribed) are left
        out. Event ids start with `REPLAY_EVENT_PREFIX`, so errors they cause are known.
        """
        heard = audio or {}
        events: list[str] = []
        for item in self._items.values():
            if item.replayable:
                body = item.as_item()
            elif item.role == "user" and item.id in heard:
                body = {
                    "id": item.id,
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_audio", "audio": heard[item.id]}],
                }
            else:
                continue
            event_id = f"{REPLAY_EVENT_PREFIX}{len(events)}"
            events.append(
                dumps({"type": "conversation.item.create", "event_id": event_id, "item": body})
            )
        return events

    def replayable_ids(self, audio: Mapping[str, str] | None = None) -> frozenset[str]:
        heard = audio or {}
        return frozenset(
            i.id
            for i in self._items.values()
            if i.replayable or (i.role == "user" and i.id in heard)
        )

    # -- bounds -------------------------------------------------------------------------

    def _insert(self, new: Item, previous_item_id: str | None) -> None:
        self._chars += new.chars
        if previous_item_id is None or previous_item_id not in self._items:
            self._items[new.id] = new
            return
        # Rare (an insertion mid-conversation): rebuild the order once.
        ordered: dict[str, Item] = {}
        for key, value in self._items.items():
            ordered[key] = value
            if key == previous_item_id:
                ordered[new.id] = new
        self._items = ordered

    def _trim(self) -> None:
        while self._items and (len(self._items) > self.max_items or self._chars > self.max_chars):
            oldest = next(iter(self._items))
            self._chars -= self._items.pop(oldest).chars
            self.dropped += 1


def _cut_at_word(text: str, n: int) -> str:
    if n >= len(text):
        return text
    cut = text[:n]
    space = cut.rfind(" ")
    return cut[:space] if space > 0 else cut
