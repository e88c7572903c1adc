"""How a simulated server behaves: timing, output length and one fault mode.

`Behaviour` is a frozen value; a server holds one and it can be swapped at any
time (`server.behaviour = replace(server.behaviour, fault=Fault("refuse"))`).
A request may carry its own fault in the `x-sim-fault` header, which wins over
the server's for that request only. The header's syntax is the fault's kind,
an optional main argument and optional `;key=value` options:

    status=503;retry_after=2      503 with an OpenAI error body and Retry-After: 2
    status=500;body_bytes=52428800  500 whose error body is padded to 50 MB
    rate_limited;retry_after=1    429 with Retry-After and x-ratelimit-* headers
    die_after=3                   3 content tokens, then the connection is cut
    error_event_after=2           2 tokens, then `data: {"error": {...}}`
    trickle=0.5                   0.5 s between tokens
    hang_before_headers | hang_before_first_token | malformed | reset_after_headers

The fault modes (what a client sees):

    none                     a normal answer
    refuse                   connects are refused (the listener is closed); server-wide
                             only, since a request that arrived was already accepted
    status                   `status` with an OpenAI-shaped JSON error, optional Retry-After;
                             `body_bytes` pads the body to that size (a hostile upstream)
    rate_limited             429, Retry-After, x-ratelimit-* headers, OpenAI's 429 body
    hang_before_headers      the request is read, nothing is ever sent
    hang_before_first_token  200, headers and the role-only chunk, then nothing
    die_after                `after_tokens` content tokens, then the connection is cut
                             (no finish chunk, no [DONE])
    malformed                200 and a first SSE frame that is not JSON
    error_event_after        `after_tokens` tokens, an SSE error event, then [DONE]
    trickle                  every token `trickle_s` apart (a very slow upstream)
    reset_after_headers      200 and headers, then a TCP reset
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

FaultKind = Literal[
    "none",
    "refuse",
    "status",
    "rate_limited",
    "hang_before_headers",
    "hang_before_first_token",
    "die_after",
    "malformed",
    "error_event_after",
    "trickle",
    "reset_after_headers",
]

FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
FAULT_HEADER = "x-sim-fault"
#: per-request timing overrides (milliseconds), honoured by the fixed-timing backend
TTFT_HEADER = "x-sim-ttft-ms"
ITL_HEADER = "x-sim-itl-ms"


class FaultSyntaxError(ValueError):
    """An `x-sim-fault` header (or a fault string in a scenario) could not be parsed."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind = "none"
    #: `status`: the HTTP status to answer with
    status: int = 500
    #: `status` / `rate_limited`: the Retry-After header in seconds (None: no header)
    retry_after_s: float | None = None
    #: `die_after` / `error_event_after`: content tokens sent before the fault
    after_tokens: int = 0
    #: `trickle`: seconds between tokens
    trickle_s: float = 1.0
    message: str = "simulated failure"
    #: `status`: pad the error body to this many bytes (0: no padding)
    body_bytes: int = 0

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse the `x-sim-fault` syntax described in the module docstring."""
        head, *options = (part.strip() for part in text.split(";"))
        kind, _, arg = head.partition("=")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise FaultSyntaxError(f"unknown fault kind {kind!r}")
        values: dict[str, str] = {}
        for opt in options:
            if opt:
                key, _, value = opt.partition("=")
                values[key.strip()] = value.strip()
        if arg:
            main = {
                "status": "status",
                "die_after": "after_tokens",
                "error_event_after": "after_tokens",
                "trickle": "trickle_s",
                "rate_limited": "retry_after",
            }.get(kind)
            if main is None:
                raise FaultSyntaxError(f"fault {kind!r} takes no argument")
            values[main] = arg.strip()
        try:
            retry = values.pop("retry_after", None)
            fault = cls(
                kind=kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
                status=int(values.pop("status", 500)),
                retry_after_s=float(retry) if retry is not None else None,
                after_tokens=int(values.pop("after_tokens", 0)),
                trickle_s=float(values.pop("trickle_s", 1.0)),
                message=values.pop("message", "simulated failure"),
                body_bytes=int(values.pop("body_bytes", 0)),
            )
        except ValueError as exc:
            raise FaultSyntaxError(f"bad fault option in {text!r}: {exc}") from exc
        if values:
            raise FaultSyntaxError(f"unknown fault options {sorted(values)} in {text!r}")
        return fault


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Timing and length of answers, and the server-wide fault.

    `ttft_s` and `itl_s` drive the fixed-timing server (`OpenAISim`); engine-like
    servers (`VllmSim`, `HostedSim`) compute their own timing and use `tokens`
    as the output length cap and `fault` as the fault mode. `reply`, when set, is
    the answer's text, one word a token (repeated past its end), in place of
    `t0 t1 ...`: words a speech recogniser can check after a voice round trip.
    """

    ttft_s: float = 0.05
    itl_s: float = 0.01
    tokens: int = 20
    fault: Fault = field(default_factory=Fault)
    #: floats per embedding when a request does not ask for `dimensions`
    embedding_dims: int = 256
    reply: str | None = None
