"""The YAML of what the router sends to and reads from targets: extra headers and the
key's header, secrets from the environment, and the bounds of the `upstream:` block.

    targets:
      - name: azure-4o
        auth_header: api-key
        headers: {HTTP-Referer: https://app.example}
        headers_env: {OpenAI-Organization: OPENAI_ORG}
    upstream: {max_event_bytes: 1048576, max_body_bytes: 16777216, keepalive_s: 30}

Header names and static values are checked when the file loads; values from the
environment when the router starts or reloads (`header_problem`), after surrounding
whitespace is stripped (`secret`), and never shown in a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: where a target's API key goes: `authorization: Bearer <key>`, or Azure's `api-key: <key>`
AuthHeader = Literal["authorization", "api-key"]

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: headers the router itself writes on every upstream request
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "te", "upgrade"}
)


def invalid_header_value(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (RFC 9110 field-value), or None."""
    if value != value.strip(" \t"):
        return "it has leading or trailing whitespace"
    for ch in value:
        if ch in "\r\n\0":
            return "it contains a line break or NUL"
        if (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F:
            return "it contains a control character"
        if ord(ch) > 0xFF:
            return "it is not latin-1 text"
    return None


def _names(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if not _TOKEN.match(name):
            raise ValueError(f"'{name}' is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"the router sets '{name}' itself")
    return headers


def _values(headers: dict[str, str]) -> dict[str, str]:
    for name, value in _names(headers).items():
        why = invalid_header_value(value)
        if why is not None:
            raise ValueError(f"the value of header '{name}' is invalid: {why}")
    return headers


#: `headers:` {Name: value}
StaticHeaders = Annotated[dict[str, str], AfterValidator(_values)]
#: `headers_env:` {Name: ENV_VAR}
EnvHeaders = Annotated[dict[str, str], AfterValidator(_names)]


def secret(environ: Mapping[str, str], var: str | None) -> str | None:
    """An env var's value with surrounding whitespace removed (a key file mounted from
    a Kubernetes secret often ends in a newline); None if unset or empty."""
    if not var:
        return None
    value = environ.get(var, "").strip()
    return value or None


def key_headers(auth_header: AuthHeader, api_key: str | None) -> dict[str, str]:
    """The header that carries a target's key: `Authorization: Bearer <key>`, or Azure's
    `api-key: <key>`; none without a key."""
    if not api_key:
        return {}
    if auth_header == "api-key":
        return {"api-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


def header_problem(who: str, field: str, var: str, environ: Mapping[str, str]) -> str | None:
    """Why the secret in `var` cannot be sent as a header, naming the variable only."""
    value = secret(environ, var)
    why = invalid_header_value(value) if value is not None else None
    if why is None:
        return None
    return f"{who}: environment variable {var} ({field}) cannot be sent as a header: {why}"


class UpstreamConfig(BaseModel):
    """Bounds on what the router reads from any target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the largest SSE event (a stream past it fails over before the first token, or
    #: ends with an error event after it)
    max_event_bytes: int = Field(1024 * 1024, ge=1024)
    #: the largest non-streamed answer
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: idle keep-alive connections are closed after this long
    keepalive_s: float = Field(30.0, gt=0.0)
