"""The one clock type: a function that returns seconds as a float.

Monotonic clocks (`time.monotonic`) time turns, windows and deadlines; wall clocks
(`time.time`) compare with dates that come from elsewhere (an HTTP-date, a reset
instant, the minute windows replicas share). Both are injected, so tests are exact.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
