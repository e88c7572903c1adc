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

Each is timed from its `response.create` to its first output delta (audio or text):
`first_delta`, exported as `firsttoken_realtime_out_of_band_first_delta_seconds` (a
request asked again after a migration keeps its first send's time: the client waited
through the move).
"""

from __future__ import annotations

from collections import deque

from router.realtime.wire import parse, response_id_of


class OutOfBand:
    __slots__ = ("_asked", "live", "waiting")

    def __init__(self) -> None:
        #: out-of-band `response.create`s sent that no `response.created` answered
        #: yet, each with when it came from the client
        self._asked: deque[tuple[str, float]] = deque()
        #: ids of out-of-band responses in flight, oldest first
        self.live: list[str] = []
        #: responses in flight with no output delta yet: when they were asked for
        self.waiting: dict[str, float] = {}

    def ask(self, frame: str, now: float) -> bool:
        """Note a client `response.create` (at `now`); True when it asks for an
        out-of-band one."""
        if "conversation" not in frame:  # the common case: no decode
            return False
        event = parse(frame)
        response = event.get("response") if event is not None else None
        if not isinstance(response, dict) or response.get("conversation") != "none":
            return False
        self._asked.append((frame, now))
        return True

    @property
    def asked(self) -> list[str]:
        """The out-of-band `response.create` frames no `response.created` answered
        yet, oldest first (a migration sends them again)."""
        return [frame for frame, _ in self._asked]

    def created(self, response: dict[str, object]) -> bool:
        """A `response.created`: True when it answers an out-of-band request (one is
        outstanding and the response joins no conversation)."""
        if not self._asked or response.get("conversation_id") is not None:
            return False
        _, asked_at = self._asked.popleft()
        response_id = response.get("id")
        if isinstance(response_id, str):
            self.live.append(response_id)
            self.waiting[response_id] = asked_at
        return True

    def done(self, response_id: object) -> bool:
        """A `response.done`: True when it ends an out-of-band response."""
        if response_id in self.live:
            self.live.remove(str(response_id))
            self.waiting.pop(str(response_id), None)
            return True
        return False

    def owner(self, frame: str) -> str | None:
        """The out-of-band response in flight a delta belongs to, if any: its audio and
        text are not the conversation's (its first audio is no TTFA of the response the
        conversation waits for, its bytes no part of the assistant item it truncates)."""
        if not self.live:
            return None
        response_id = response_id_of(frame)
        return response_id if response_id in self.live else None

    def first_delta(self, response_id: str, now: float) -> float | None:
        """Seconds from the request to this output delta of `response_id` when it is
        the response's first; None for the ones after."""
        asked_at = self.waiting.pop(response_id, None)
        return None if asked_at is None else max(now - asked_at, 0.0)

    @property
    def idle(self) -> bool:
        return not self._asked and not self.live

    def interrupted(self) -> list[str]:
        """The responses a dead upstream leaves unfinished (forgotten). What was asked
        of it and not answered stays asked: it is sent again to the new upstream."""
        ids, self.live = self.live, []
        self.waiting.clear()
        return ids
