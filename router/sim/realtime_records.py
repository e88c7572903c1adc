"""What the simulated Realtime server saw, one mutable record per session.

`events` keeps every client event in order, parsed, except that an
`input_audio_buffer.append` is kept as its type, event id and decoded size (not
its audio). `items` is the conversation as the server holds it, so a test can
see what a migrated session was replayed. Times come from the server's clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

CloseSide = Literal["client", "server"]


@dataclass(slots=True)
class ResponseRecord:
    id: str
    started_at: float
    created_at: float | None = None
    first_delta_at: float | None = None
    done_at: float | None = None
    #: completed | cancelled | failed | incomplete (None while in progress)
    status: str | None = None
    usage: dict[str, Any] | None = None


@dataclass(slots=True)
class CancelRecord:
    at: float
    #: the response that was running when the cancel came (None: none was)
    response_id: str | None


@dataclass(slots=True)
class RealtimeRecord:
    id: str
    path: str
    #: the query string's parameters (`model`, ...)
    query: dict[str, str]
    #: request headers of the upgrade, names lower-cased
    headers: dict[str, str]
    opened_at: float
    #: when `session.created` was sent (None: never)
    created_at: float | None = None
    closed_at: float | None = None
    close_code: int | None = None
    #: who closed the WebSocket first
    closed_by: CloseSide | None = None
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100_000))
    #: the session's configuration as the server holds it
    session: dict[str, Any] = field(default_factory=dict)
    #: the conversation as the server holds it, in order
    items: list[dict[str, Any]] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    cancels: list[CancelRecord] = field(default_factory=list)
    truncates: list[dict[str, Any]] = field(default_factory=list)
    #: client frames that were binary or not JSON
    bad_frames: int = 0
    audio_bytes_in: int = 0
    #: user items created with their audio (`input_audio` with `audio`): id -> bytes
    audio_items: dict[str, int] = field(default_factory=dict)

    def event_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]

    def item_texts(self) -> list[tuple[str, str]]:
        """(role or item type, text) of every item, for assertions on a conversation."""
        out = []
        for item in self.items:
            if item.get("type") == "message":
                texts = [
                    str(p.get("text") or p.get("transcript") or "") for p in item.get("content", [])
                ]
                out.append((str(item.get("role")), " ".join(t for t in texts if t)))
            elif item.get("type") == "function_call":
                out.append(("function_call", str(item.get("arguments"))))
            elif item.get("type") == "function_call_output":
                out.append(("function_call_output", str(item.get("output"))))
        return out
