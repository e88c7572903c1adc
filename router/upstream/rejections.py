"""Which 4xx answers mean "this target cannot serve this request" rather than "the
request is bad": the turn then moves to the next target instead of failing.

A mixed fleet rejects requests for reasons of its own: Groq refuses `n > 1`, a
provider rejects a parameter or `stream_options`, a deployment does not know the
model name, a small-context engine refuses a long prompt. Another target may serve
the same request, so these move on (and are counted per target and reason); a 4xx
that does not say so is the client's own fault and goes back to it.

The patterns are read from the error codes and messages of OpenAI, Azure OpenAI,
vLLM, Groq, OpenRouter and litellm; only a 400, 404 or 422 is considered.
"""

from __future__ import annotations

import re

from router.vocabulary import RejectionReason

REJECTABLE_STATUSES = frozenset({400, 404, 422})

_RULES: tuple[tuple[RejectionReason, re.Pattern[bytes]], ...] = (
    (
        "model_not_found",
        re.compile(
            rb"model_not_found|deploymentnotfound|does not exist|unknown model|no such model"
            rb"|model[^.]{0,80}not (?:found|supported|available)|invalid model"
            rb"|not a valid model|no endpoints found",
            re.IGNORECASE,
        ),
    ),
    (
        "context_length",
        re.compile(
            rb"context_length_exceeded|maximum context length|context window"
            rb"|too many (?:input )?tokens|prompt is too long",
            re.IGNORECASE,
        ),
    ),
    (
        "endpoint",
        re.compile(rb"unsupported_endpoint|operationnotsupported", re.IGNORECASE),
    ),
    (
        "unsupported_parameter",
        re.compile(
            rb"unsupported_parameter|unsupported_value|unsupported parameter|not supported"
            rb"|unrecognized request argument|extra_forbidden|extra inputs are not permitted"
            rb"|'n' *: *number must be|n must be 1|only n ?= ?1|stream_options",
            re.IGNORECASE,
        ),
    ),
)


def rejection_reason(status: int, body: bytes) -> RejectionReason | None:
    """Why the target cannot serve this request, or None if the 4xx is the request's."""
    if status not in REJECTABLE_STATUSES:
        return None
    if status == 404 and not body.strip():
        return "model_not_found"  # a 404 without a word: wrong path or deployment
    for reason, pattern in _RULES:
        if pattern.search(body):
            return reason
    return None
