"""Retry-After (RFC 9110, section 10.2.3): how long a server asks to be left alone.

    Retry-After = HTTP-date / delay-seconds

The one parser for every reader of the header: the OpenAI-compatible upstream,
litellm's error translation and the provider rate-limit signals. A delay is a
non-negative number of seconds (a decimal fraction is accepted: some providers
send one); an HTTP-date is compared with the caller's wall clock, and a date
already past means "now" (0). Anything else (garbage, a negative number, inf,
nan) is no advice (None). The answer is clamped to the caller's `max_s`, so a
garbled header or a skewed clock cannot bench a target for days.
"""

from __future__ import annotations

import math
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

#: the longest a Retry-After is obeyed; a target that asked for longer is probed
#: again after this (one request), and a provider still out of quota says so again
MAX_RETRY_AFTER_S = 3600.0

_DELAY = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def parse_http_date(text: str) -> float | None:
    """Epoch seconds of an RFC 9110 HTTP-date (a zone-less one is taken as UTC), or None."""
    try:
        parsed = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    at = parsed.timestamp()
    return at if math.isfinite(at) else None


def parse_retry_after(value: str, *, wall_now: float, max_s: float) -> float | None:
    """Seconds to stay away, in [0, max_s], from one Retry-After value; None if it is
    neither delay-seconds nor an HTTP-date. `wall_now` is epoch seconds (time.time)."""
    text = value.strip()
    if _DELAY.fullmatch(text):
        seconds = float(text)
    else:
        at = parse_http_date(text)
        if at is None:
            return None
        seconds = max(at - wall_now, 0.0)
    return min(seconds, max_s)
