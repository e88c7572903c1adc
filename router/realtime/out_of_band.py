"""Out-of-band responses a relayed session has asked for and has in flight.

A `response.create` with `conversation: "none"` asks for a response beside the
conversation's (a classification, a summary), which may run while the
conversation's own response does, and whose `response.created` says
`conversation_id: null`. The relay keeps its single in-flight response (the
conversation's: TTFA, regeneration, the calm a proactive move waits for) apart from
these, so one finishing does not end the other's bookkeeping.

A migration ends each that was in flight with a failed `response.done`, and sends the
new upstream again each the client still waits for: every one asked for that no
response answered yet, and each in flight of which the client has had no output
delta and that it did not cancel (each in flight under `migrate: {regenerate: true}`),
as it does the conversation's. Their items never join the conversation that is
replayed. One asked for and late for its first output (the target's
`timeouts.first_token_s`) moves the session as the conversation's does
(`router.realtime.stall`), once.

Each is timed from its `response.create` to its first output delta (audio or text):
`first_delta`, exported as `firsttoken_realtime_out_of_band_first_delta_seconds` (a
request asked again after a migration keeps its first send's time: the client waited
through the move).
"""

from __future__ import annotations

from collections import deque

from router.realtime.wire import names_event, parse, response_id_of


class Request:
    """One out-of-band `response.create` as the client sent it."""

    __slots__ = ("asked_at", "frame", "retried")

    def __init__(self, frame: str, asked_at: float, *, retried: bool = False) -> None:
        self.frame = frame
        #: when the client asked (kept across migrations)
        self.asked_at = asked_at
        #: moved once for being late already: not moved for that again
        self.retried = retried


class OutOfBand:
    __slots__ = ("_asked", "_requests", "live", "waiting")

    def __init__(self) -> None:
        #: out-of-band `response.create`s sent that no `response.created` answered
        #: yet, oldest first
        self._asked: deque[Request] = deque()
        #: ids of out-of-band responses in flight, oldest first
        self.live: list[str] = []
        #: responses in flight with no output delta yet that the client still wants:
        #: when they were asked for
        self.waiting: dict[str, float] = {}
        #: the request each response in flight answers
        self._requests: dict[str, Request] = {}

    def ask(self, frame: str, now: float) -> bool:
        """Note a client `response.create` (at `now`); True when it asks for an
        out-of-band one."""
        if "conversation" not in frame:  # the common case: no decode
            return False
        event = parse(frame)
        response = event.get("response") if event is not None else None
        if not isinstance(response, dict) or response.get("conversation") != "none":
            return False
        self._asked.append(Request(frame, now))
        return True

    @property
    def asked(self) -> list[str]:
        """The out-of-band `response.create` frames no `response.created` answered
        yet, oldest first (a migration sends them again)."""
        return [request.frame for request in self._asked]

    def created(self, response: dict[str, object]) -> bool:
        """A `response.created`: True when it answers an out-of-band request (one is
        outstanding and the response joins no conversation)."""
        if not self._asked or response.get("conversation_id") is not None:
            return False
        request = self._asked.popleft()
        response_id = response.get("id")
        if isinstance(response_id, str):
            self.live.append(response_id)
            self.waiting[response_id] = request.asked_at
            self._requests[response_id] = request
        return True

    def refused(self, event_id: str) -> bool:
        """An `error` naming the client event `event_id`: True when that was an
        out-of-band request no response answered (none is coming for it)."""
        for request in self._asked:
            if names_event(request.frame, event_id):
                self._asked.remove(request)
                return True
        return False

    def cancelled(self, response_id: str) -> bool:
        """The client cancels `response_id`: True when it is an out-of-band response in
        flight (then neither late nor asked again by a migration)."""
        if response_id not in self._requests:
            return False
        self.waiting.pop(response_id, None)
        del self._requests[response_id]
        return True

    def done(self, response_id: object) -> bool:
        """A `response.done`: True when it ends an out-of-band response."""
        if response_id in self.live:
            self.live.remove(str(response_id))
            self.waiting.pop(str(response_id), None)
            self._requests.pop(str(response_id), None)
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

    def late_since(self) -> float | None:
        """When the oldest request still without output was asked for, of those not
        moved for being late already: its first-output deadline runs from then."""
        oldest: float | None = None
        for request in (*self._asked, *map(self._requests.__getitem__, self.waiting)):
            if not request.retried and (oldest is None or request.asked_at < oldest):
                oldest = request.asked_at
        return oldest

    def interrupted(self, *, regenerate: bool = False, retried: bool = False) -> list[str]:
        """The responses a dead upstream leaves unfinished (forgotten; each ends failed
        for the client). What was asked of it and not answered stays asked, and so does
        each response in flight that produced no output the client still waits for (each
        it did not cancel under `regenerate`), ahead of those: they are sent again to
        the new upstream. `retried`: the move is for lateness (it is not made twice)."""
        again = [
            self._requests[response_id]
            for response_id in self.live
            if response_id in self._requests and (regenerate or response_id in self.waiting)
        ]
        for request in reversed(again):
            request.retried = request.retried or retried
            self._asked.appendleft(request)
        for request in self._asked:
            request.retried = request.retried or retried
        ids, self.live = self.live, []
        self.waiting.clear()
        self._requests.clear()
        return ids
