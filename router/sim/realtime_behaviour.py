"""How the simulated Realtime server behaves: timing, answers and one fault mode.

Like `router.sim.behaviour` for the HTTP servers: a frozen value the server holds
and a test may swap at any time. Faults that act at the upgrade are read when a
connection arrives; faults that act on a response are read when it starts.

    none                  a normal session
    refuse                the upgrade is answered `status` (default 503) with an
                          OpenAI-shaped JSON error: the WebSocket never opens
    slow_upgrade          the upgrade is answered after `delay_s`
    close_before_created  the WebSocket opens, then closes with `code` before
                          `session.created`
    hang_before_created   the WebSocket opens and `session.created` never comes
    die_mid_response      after `after_deltas` deltas of a response the socket is
                          closed with `code` (1011: an internal error)
    error_mid_response    after `after_deltas` deltas: an `error` event of type
                          `server_error`, and the response ends `failed`
    stall_before_audio    `response.created`, then nothing until cancelled
    stall_mid_response    after `after_deltas` deltas, nothing until cancelled
    hang_before_response  a response is asked for, and nothing comes (not even
                          `response.created`) until it is cancelled

A slow time to first audio is not a fault: set `ttfa_s`. The provider's session
cap is `session_max_s`: past it, an `error` with code `session_expired`, then
close 1001.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RealtimeFaultKind = Literal[
    "none",
    "refuse",
    "slow_upgrade",
    "close_before_created",
    "hang_before_created",
    "die_mid_response",
    "error_mid_response",
    "stall_before_audio",
    "stall_mid_response",
    "hang_before_response",
]


@dataclass(frozen=True, slots=True)
class RealtimeFault:
    kind: RealtimeFaultKind = "none"
    #: `refuse`: the HTTP status of the refused upgrade
    status: int = 503
    #: `slow_upgrade`: seconds before the upgrade is answered
    delay_s: float = 5.0
    #: `close_before_created` / `die_mid_response`: the close code
    code: int = 1011
    #: `die_mid_response` / `error_mid_response` / `stall_mid_response`: deltas sent
    #: before the fault
    after_deltas: int = 2
    message: str = "simulated failure"
    #: `response.cancel` is never answered (a hung server reads nothing)
    deaf: bool = False


@dataclass(frozen=True, slots=True)
class RealtimeBehaviour:
    #: from the response's start (`response.create`, or the commit under server VAD)
    #: to its first audio or text delta
    ttfa_s: float = 0.02
    #: audio per response, sent in frames of `frame_ms`
    response_audio_ms: int = 200
    frame_ms: int = 20
    #: seconds between output audio frames (0: as fast as the socket takes them;
    #: `frame_ms / 1000` paces them in real time)
    frame_interval_s: float = 0.0
    #: the answer's words; `{last}` is the last user text of the conversation
    reply: str = "You said: {last}"
    #: what input-audio transcription "hears" in every utterance (when enabled)
    transcript: str = "hello from the microphone"
    #: from the commit to the transcript's first delta (the session reads no further
    #: client events meanwhile, as a busy transcriber's socket would lag)
    transcript_s: float = 0.0
    #: fail every transcription with an error of this `type` (`server_error`, or
    #: `invalid_request_error` as for audio it cannot hear) instead of transcribing
    transcript_error: str | None = None
    #: the provider's cap on a session's length (None: no cap)
    session_max_s: float | None = None
    #: the rate limits announced in `rate_limits.updated`
    tokens_limit: int = 200_000
    requests_limit: int = 1_000
    fault: RealtimeFault = field(default_factory=RealtimeFault)
