"""What a simulated server saw: one mutable record per request, for tests to assert on.

Times come from the server's clock (`time.monotonic` unless injected).
`cancelled_at` is set only when the client went away before the answer was
finished; a connection the server cut on purpose (`die_after`) is not a
cancellation and sets `finished_at` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    id: str
    path: str
    #: the parsed JSON body (None if it was not JSON)
    body: Any
    #: request headers, names lower-cased
    headers: dict[str, str]
    received_at: float
    first_token_at: float | None = None
    finished_at: float | None = None
    cancelled_at: float | None = None
    tokens_sent: int = 0
    #: the status sent (None until headers went out)
    status: int | None = None
    #: the fault applied to this request (`none` normally)
    fault: str = "none"
