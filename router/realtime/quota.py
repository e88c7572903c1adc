"""A client key's realtime allowance: sessions open at once, and session-minutes.

`max_sessions` bounds the sessions a key holds open together; `session_minutes`
bounds the minutes of session time it uses in any 60 minutes (a sliding window:
ended sessions count for the part of them inside the window, open ones up to
now). A new session is refused (429) at either limit; an open session may run
only for the minutes left when it started (the session then ends as at its
route's `max_duration_s`). A refusal for minutes says when the window will have
freed a minute (`retry_after_s`, the 429's `Retry-After`).
"""

from __future__ import annotations

from collections import deque

from router.clock import Clock

WINDOW_S = 3600.0


class SessionQuota:
    __slots__ = ("_clock", "_ended", "_open", "max_sessions", "session_minutes")

    def __init__(
        self, max_sessions: int | None, session_minutes: float | None, clock: Clock
    ) -> None:
        self.max_sessions = max_sessions
        self.session_minutes = session_minutes
        self._clock = clock
        #: (start, end) of ended sessions, oldest first
        self._ended: deque[tuple[float, float]] = deque()
        #: start times of open sessions (a multiset as a dict of counts)
        self._open: dict[float, int] = {}

    @property
    def open_sessions(self) -> int:
        return sum(self._open.values())

    def used_s(self) -> float:
        now = self._clock()
        since = now - WINDOW_S
        while self._ended and self._ended[0][1] <= since:
            self._ended.popleft()
        used = sum(end - max(start, since) for start, end in self._ended)
        used += sum((now - max(start, since)) * n for start, n in self._open.items())
        return used

    def refusal(self) -> str | None:
        """Why a new session may not start now, or None."""
        if self.max_sessions is not None and self.open_sessions >= self.max_sessions:
            return f"at most {self.max_sessions} realtime sessions at once"
        if self.session_minutes is not None and self.used_s() >= self.session_minutes * 60:
            return f"at most {self.session_minutes:g} session-minutes in any 60 minutes"
        return None

    def retry_after_s(self) -> float:
        """Seconds until a refused key may open a session again.

        Past its session-minutes: until the sliding window has freed a minute (the
        whole allowance if that is less), the open sessions counted as ending now (the
        same limit is closing them). Past its sessions at once: unknown (any session
        may end at any time), so 1 s."""
        limit_s = None if self.session_minutes is None else self.session_minutes * 60
        at_once = self.max_sessions is not None and self.open_sessions >= self.max_sessions
        if limit_s is None or at_once:
            return 1.0
        goal_s = limit_s - min(60.0, limit_s)
        now = self._clock()
        spans = [*self._ended, *((s, now) for s, n in self._open.items() for _ in range(n))]

        def used_at(t: float) -> float:
            since = t - WINDOW_S
            return sum(max(end - max(start, since), 0.0) for start, end in spans)

        if used_at(now) <= goal_s:
            return 1.0
        low, high = 0.0, WINDOW_S  # used_at(now + WINDOW_S) is 0: every span has left
        while high - low > 0.5:
            mid = (low + high) / 2
            if used_at(now + mid) <= goal_s:
                high = mid
            else:
                low = mid
        return max(high, 1.0)

    def remaining_s(self) -> float | None:
        """Session time left in the window (None: no minute limit)."""
        if self.session_minutes is None:
            return None
        return max(self.session_minutes * 60 - self.used_s(), 0.0)

    def start(self) -> float:
        """A session starts; returns its start time, for `end`."""
        now = self._clock()
        self._open[now] = self._open.get(now, 0) + 1
        return now

    def end(self, started: float) -> None:
        n = self._open.get(started, 0)
        if n <= 1:
            self._open.pop(started, None)
        else:
            self._open[started] = n - 1
        if n:
            self._ended.append((started, self._clock()))
