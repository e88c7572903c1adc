"""Redaction of upstream text before it reaches a client: keys, tokens, private addresses.

An upstream's 4xx explanation is useful to the client that sent a bad request, but a
provider or an internal proxy may echo what it should not: the router's key, a bearer
token, a JWT, an address on a private network, an internal host name. Only the
OpenAI `error.message` / `type` / `code` fields are passed on (see
`errors.AllTargetsFailed`), each through `redact`.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"
#: the longest upstream message a client is shown
MAX_MESSAGE_CHARS = 1000

_PATTERNS = [
    # bearer tokens and basic credentials, whatever follows the scheme
    r"\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]+",
    # JWTs
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # provider-style keys: sk-..., gsk_..., xai-..., key-..., AKIA...
    r"\b(?:sk|pk|rk|gsk|xai|key|api|tok|token|secret|AKIA)[-_][A-Za-z0-9_-]{6,}",
    r"\bAKIA[0-9A-Z]{12,}",
    # long opaque strings with letters and digits (tokens, signatures)
    r"\b(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{32,}\b",
    # user:password@ in URLs
    r"(?<=://)[^/\s:@]+:[^/\s@]+@",
    # private, loopback, link-local and shared IPv4 addresses (with a port)
    r"\b(?:10|127)(?:\.\d{1,3}){3}(?::\d+)?\b",
    r"\b192\.168(?:\.\d{1,3}){2}(?::\d+)?\b",
    r"\b172\.(?:1[6-9]|2\d|3[01])(?:\.\d{1,3}){2}(?::\d+)?\b",
    r"\b169\.254(?:\.\d{1,3}){2}(?::\d+)?\b",
    r"\b100\.(?:6[4-9]|[7-9]\d|1[01]\d|12[0-7])(?:\.\d{1,3}){2}(?::\d+)?\b",
    # unique-local, link-local and loopback IPv6
    r"\[?\b(?:f[cd][0-9a-f]{2}|fe80):[0-9a-f:]*\]?(?::\d+)?",
    r"\[?::1\]?(?::\d+)?(?![0-9A-Za-z:])",
    # internal host names
    r"\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*"
    r"\.(?:internal|local|localdomain|lan|corp|intranet|svc|cluster\.local)\b(?::\d+)?",
]
_SECRETS = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE)


def redact(text: str, *, also: tuple[str, ...] = ()) -> str:
    """`text` with anything that looks like a secret or a private address replaced,
    and each string of `also` (a key the caller knows) removed; at most
    `MAX_MESSAGE_CHARS` long."""
    for known in also:
        if known:
            text = text.replace(known, REDACTED)
    text = _SECRETS.sub(REDACTED, text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + "..."
    return text
