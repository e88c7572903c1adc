"""The small fixed vocabularies a turn reports in, and metrics label with.

Each is a `Literal`, so mypy rejects a typo where a value is made, and
`router.metrics` creates every route's series at zero from the same values
(`typing.get_args`): a label can neither grow without bound nor miss a value.
"""

from __future__ import annotations

from typing import Literal

#: how a turn ended: `ok`; `fell_back` (answered after a failure before the first
#: token); `hedged_won` (a hedge answered); `hedged_lost` (the primary answered after
#: a hedge started); `client_cancelled`; `error` (no target answered, or the stream
#: broke after its first token)
Outcome = Literal["ok", "fell_back", "hedged_won", "hedged_lost", "client_cancelled", "error"]
#: what happened to a hedge: `started`; `won` (a hedge answered); `lost` (the primary
#: answered); `cancelled` (an attempt closed because another answered first); `capped`
#: (a hedge that was due, to a priced target, held back by `hedge.max_cost_share`)
HedgeEvent = Literal["started", "won", "lost", "cancelled", "capped"]
#: the time the router itself adds: arrival to the upstream send (`pre_upstream`),
#: the upstream's first token to its write to the client (`first_token_relay`)
OverheadPhase = Literal["pre_upstream", "first_token_relay"]
#: why a target said it cannot serve a request another target may serve (a 400/404/422
#: whose body names the model, a parameter, the context length or the endpoint)
RejectionReason = Literal["model_not_found", "unsupported_parameter", "context_length", "endpoint"]
#: the first token of a stream: an answer (content, a tool or function call, completion
#: text) or something the user sees before it (reasoning, a refusal, audio)
FirstTokenKind = Literal["answer", "reasoning", "refusal", "audio", "finish"]
#: a call relayed to one target without a turn: on state stored upstream, or one that
#: makes or reads some: on a stored
#: response (`response`: GET, DELETE, cancel, input items), on a conversation
#: (`conversation`), making one (`conversation_create`), a token count
#: (`input_tokens`), a compaction (`compact`), a moderation (`moderation`), on a
#: stored chat completion (`chat_completion`: GET, update, DELETE, messages),
#: their list (`chat_completion_list`), and a WebRTC call's offer or actions
#: (`realtime_call`)
RelayedCall = Literal[
    "response",
    "conversation",
    "conversation_create",
    "input_tokens",
    "compact",
    "moderation",
    "chat_completion",
    "chat_completion_list",
    "realtime_call",
]
#: how a target answered such a call: `ok` (2xx), `client_error` (a 4xx of the
#: request's own, relayed), `not_here` (it cannot serve the call: passed on),
#: `failed` (unreachable, 5xx, 429 or too slow)
RelayedCallOutcome = Literal["ok", "client_error", "not_here", "failed"]
#: where a request body was parsed: on the event loop (small) or in a worker process
ParsePlace = Literal["loop", "worker"]
#: what a route's SLO measures: the first token of any kind (reasoning included), or
#: the first answer token (content or a tool call)
SloOn = Literal["first_token", "first_answer"]

#: why an engine's /metrics scrape failed (`firsttoken_engine_scrape_failures_total`):
#: no answer within the scrape's timeout, no connection, a non-2xx status, a page that
#: is not a metrics page (or too large), any other transport error, anything else
ScrapeFailure = Literal["timeout", "connect", "status", "page", "transport", "unexpected"]
