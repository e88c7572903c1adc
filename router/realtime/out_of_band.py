"""Out-of-band responses a relayed session has asked for and has in flight.

A `response.create` with `conversation: "none"` asks for a response beside the
conversation's (a classification, a summary), which may run while the
conversation's own response does, and whose `response.created` says
`conversation_id: null`. The relay keeps its single in-flight response (the
conversation's: TTFA, regeneration, the calm a proactive move waits for) apart from
these, so one finishing does not end the other's bookkeeping, and a migration ends
each that was in flight with a failed `response.done` (not asked again: they were
never part of the conversation that is replayed), and sends again each asked for
that no response answered yet, as it does the conversation's.
"""

from __future__ import annotations

from collections import deque

from router.realtime.wire import parse, response_id_of


class OutOfBand:
    __slots__ = ("asked", "live")

    def __init__(self) -> None:
        #: out-of-band `response.create`s sent that no `response.created` answered yet
        self.asked: deque[str] = deque()
        #: ids of out-of-band responses in flight, oldest first
        self.live: list[str] = []

    def ask(self, frame: str) -> bool:
        """Note a client `response.create`; True when it asks for an out-of-band one."""
        if "conversation" not in frame:  # the common case: no decode
            return False
        event = parse(frame)
        response = event.get("response") if event is not None else None
        if not isinstance(response, dict) or response.get("conversation") != "none":
            return False
        self.asked.append(frame)
        return True

    def created(self, response: dict[str, object]) -> bool:
        """A `response.created`: True when it answers an out-of-band request (one is
        outstanding and the response joins no conversation)."""
        if not self.asked or response.get("conversation_id") is not None:
            return False
        self.asked.popleft()
        response_id = response.get("id")
        if isinstance(response_id, str):
            self.live.append(response_id)
        return True

    def done(self, response_id: object) -> bool:
        """A `response.done`: True when it ends an out-of-band response."""
        if response_id in self.live:
            self.live.remove(str(response_id))
            return True
        return False

    def owns(self, frame: str) -> bool:
        """Whether a delta belongs to an out-of-band response in flight: its audio and
        text are not the conversation's (its first audio is no TTFA of the response the
        conversation waits for, its bytes no part of the assistant item it truncates)."""
        return bool(self.live) and response_id_of(frame) in self.live

    @property
    def idle(self) -> bool:
        return not self.asked and not self.live

    def interrupted(self) -> list[str]:
        """The responses a dead upstream leaves unfinished (forgotten). What was asked
        of it and not answered stays asked: it is sent again to the new upstream."""
        ids, self.live = self.live, []
        return ids
