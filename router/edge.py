"""The YAML of the router's edge (`server:` blocks): request limits, Host allow-list, CORS.

    server:
      limits: {max_messages: 2048, inline_bytes: 262144}
      allowed_hosts: [router.example.com, "*.svc.cluster.local", 10.0.0.0/8]
      cors: {allow_origins: ["https://app.example.com"]}

What each guards against is in `gateway/admission.py` and `gateway/browser.py`.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitsConfig(_Model):
    """The shape a request body may have. Checked before anything walks the body:
    an answer over a limit is a 400 that costs the router next to nothing."""

    #: the deepest nesting of JSON objects and arrays
    max_depth: int = Field(64, ge=2, le=512)
    #: messages in one chat request
    max_messages: int = Field(2048, ge=1)
    #: content parts (text, image, audio, ...) across all messages of one request
    max_content_parts: int = Field(4096, ge=1)
    #: inputs of one embeddings request (OpenAI takes at most 2048)
    max_inputs: int = Field(2048, ge=1)
    #: bodies larger than this, or with more JSON values than `inline_values` (counted
    #: from their commas and brackets), are parsed in a worker process, off the event loop
    inline_bytes: int = Field(256 * 1024, ge=0)
    inline_values: int = Field(4096, ge=0)
    #: parse worker processes (bodies past the inline bounds), and how many such bodies
    #: may wait for one before new ones get a 503
    parse_workers: int = Field(1, ge=1, le=16)
    parse_queue: int = Field(8, ge=1)


class CorsConfig(_Model):
    """Browser pages allowed to call the router (their `Origin`); every other page's
    request is refused with a 403."""

    #: exact origins (`https://app.example.com`), or "*" for any page (think twice)
    allow_origins: tuple[str, ...] = Field(min_length=1)
    #: request headers a page may send besides the CORS-safelisted ones
    allow_headers: tuple[str, ...] = (
        "authorization",
        "content-type",
        "x-request-id",
        "x-session-id",
    )
    #: how long a browser may cache a preflight answer
    max_age_s: int = Field(600, ge=0)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin != "*" and (
                not origin.startswith(("http://", "https://")) or origin.endswith("/")
            ):
                raise ValueError(
                    f"'{origin}' is not an origin: scheme://host[:port], no path, or '*'"
                )
        return tuple(o.lower() for o in v)


def allowed_hosts(entries: tuple[str, ...]) -> tuple[str, ...]:
    """`server.allowed_hosts`, checked and lower-cased: names, `*.suffix`, IP networks
    or "*"."""
    for entry in entries:
        if not entry or any(c in entry for c in " ,;@") or entry.startswith("http"):
            raise ValueError(f"'{entry}' is not a host name, *.suffix, IP network or '*'")
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"'{entry}' is not an IP network: {exc}") from None
    return tuple(e.lower() for e in entries)
