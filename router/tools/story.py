"""What `firsttoken demo` tells: the notable events of a run, in time order, by kind.

Every event is stamped when the demo learns of it (a turn's outcome when the turn
ends, a breaker's change when the poller sees it), on one clock, so the timeline
is in time order by construction. Each kind keeps a counter and its last few
events, so a rare fallback or breaker change stays on screen beside a stream of
hedges instead of scrolling away.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from router.tools.driver import TurnOutcome

EventKind = Literal["fallback", "hedge", "error", "breaker"]
KINDS: tuple[EventKind, ...] = ("fallback", "hedge", "error", "breaker")
#: how each kind is titled, plural
TITLES: dict[EventKind, str] = {
    "fallback": "fallbacks",
    "hedge": "hedges",
    "error": "errors",
    "breaker": "breaker changes",
}
LAST_PER_KIND = 3
TIMELINE = 8


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    kind: EventKind
    text: str

    def __str__(self) -> str:
        return f"{self.at_s:6.1f}s  {self.kind:<8}  {self.text}"


@dataclass
class Story:
    counts: collections.Counter[EventKind] = field(default_factory=collections.Counter)
    last: dict[EventKind, collections.deque[Event]] = field(
        default_factory=lambda: {k: collections.deque(maxlen=LAST_PER_KIND) for k in KINDS}
    )
    timeline: collections.deque[Event] = field(
        default_factory=lambda: collections.deque(maxlen=TIMELINE)
    )
    _breakers: dict[str, str] = field(default_factory=dict)

    def add(self, at_s: float, kind: EventKind, text: str) -> None:
        event = Event(at_s, kind, text)
        self.counts[kind] += 1
        self.last[kind].append(event)
        self.timeline.append(event)

    def turn(self, at_s: float, out: TurnOutcome) -> None:
        """The events of one finished turn (none for a plain one)."""
        ttft = "-" if out.ttft_s is None else f"{out.ttft_s * 1000:.0f} ms"
        who = f"s{out.session_id}/t{out.turn_index}"
        detail = f"-> {out.target or '-'} (TTFT {ttft}, {out.attempts} attempts)"
        if out.fell_back:
            self.add(at_s, "fallback", f"{who} {detail}")
        if out.hedged:
            self.add(at_s, "hedge", f"{who} {detail}")
        if out.outcome in ("error", "dropped"):
            self.add(at_s, "error", f"{who} {out.outcome}: {out.error}")

    def breakers(self, at_s: float, states: Mapping[str, str]) -> None:
        """Compare each target's breaker with the last look; a change is an event."""
        for name, state in states.items():
            before = self._breakers.get(name)
            if before is not None and before != state:
                self.add(at_s, "breaker", f"{name}: {before} -> {state}")
            self._breakers[name] = state

    def by_kind(self) -> list[tuple[str, int, list[str]]]:
        """Per kind: its title, its count and its last few events (oldest first)."""
        return [
            (TITLES[k], self.counts[k], [f"{e.at_s:6.1f}s  {e.text}" for e in self.last[k]])
            for k in KINDS
        ]

    def tally(self) -> str:
        return ", ".join(f"{TITLES[k]} {self.counts[k]}" for k in KINDS)
