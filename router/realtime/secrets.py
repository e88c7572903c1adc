"""Ephemeral keys for realtime sessions: what `POST /v1/realtime/client_secrets` mints.

A browser must not hold a real API key. OpenAI's answer, which the `openai` SDK
wraps as `client.realtime.client_secrets.create(session=...)`, is a short-lived key
an app's server asks for and hands to the page, which opens its session with it
(`Authorization: Bearer ek_...`, or the subprotocol `openai-insecure-api-key.ek_...`).
The router mints its own, so the page's session is routed like any other:

    ek_<payload>.<mac>

`payload` is the base64url of the zlib-compressed JSON `{"r": route, "c": client key
name or null, "e": expiry (Unix seconds), "s": session configuration}`; `mac` is the
base64url of its HMAC-SHA256 under the signing key. Nothing is stored: any replica
with the same signing key (`auth.client_secret_key_env`) accepts it until it expires;
without that setting each process signs with a random key of its own (a key works
on the replica that made it, until it restarts). The configuration is applied to
the session before the client's first event (and replayed on a migration).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from router.errors import Unauthorized

PREFIX = "ek_"
MIN_TTL_S = 10
MAX_TTL_S = 7200
DEFAULT_TTL_S = 600
#: a presented key longer than this is not read (a session's configuration, compressed,
#: is far smaller; a request head is bounded by `server.max_header_bytes` anyway)
MAX_KEY_CHARS = 48 * 1024
#: the largest configuration a key may carry, decompressed
MAX_SESSION_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Grant:
    """What an ephemeral key allows: one route, as one client key, until `expires_at`."""

    route: str
    client: str | None
    session: Mapping[str, Any]
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_ephemeral(token: str) -> bool:
    return token.startswith(PREFIX)


class EphemeralKeys:
    """Mints and checks ephemeral keys under one signing key."""

    def __init__(self, signing_key: bytes, wall: Callable[[], float] = time.time) -> None:
        self.signing_key = signing_key
        self._wall = wall

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self.signing_key, (PREFIX + payload).encode(), hashlib.sha256)
        return _b64(digest.digest())

    def mint(
        self, route: str, client: str | None, session: Mapping[str, Any], ttl_s: int
    ) -> tuple[str, int]:
        """(the key, its expiry in Unix seconds)."""
        expires_at = int(self._wall()) + ttl_s
        body = {"r": route, "c": client, "e": expires_at, "s": dict(session)}
        raw = json.dumps(body, separators=(",", ":")).encode()
        if len(raw) > MAX_SESSION_BYTES:
            raise ValueError(f"the session configuration is over {MAX_SESSION_BYTES} bytes")
        payload = _b64(zlib.compress(raw, 6))
        return f"{PREFIX}{payload}.{self._mac(payload)}", expires_at

    def verify(self, token: str) -> Grant:
        """The grant of a key this router made and that has not expired (401 otherwise)."""
        if len(token) > MAX_KEY_CHARS:
            raise Unauthorized("invalid ephemeral key")
        payload, dot, mac = token.removeprefix(PREFIX).partition(".")
        if not dot or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise Unauthorized(
                "invalid ephemeral key (not made by this router, or by one with another "
                "signing key: auth.client_secret_key_env)"
            )
        try:
            inflate = zlib.decompressobj()
            raw = inflate.decompress(_unb64(payload), MAX_SESSION_BYTES)
            body = json.loads(raw)
            grant = Grant(str(body["r"]), body["c"], dict(body["s"]), int(body["e"]))
        except (ValueError, KeyError, TypeError, zlib.error) as exc:  # signed, so ours
            raise Unauthorized("invalid ephemeral key") from exc
        if grant.expires_at <= self._wall():
            raise Unauthorized("the ephemeral key has expired: ask for a new one")
        return grant
