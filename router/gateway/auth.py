"""Client keys: who may call the router, on which routes, how fast.

Keys are held only as SHA-256 digests; a presented key is hashed and compared
against every digest with `hmac.compare_digest`, all of them every time, so
neither the comparison nor the loop leaks which key (or how much of one) matched.
Key names, never keys, appear in logs and metrics. An ephemeral key (`ek_...`,
router/realtime/secrets.py) opens realtime sessions only, as the client key that
asked for it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from router.clock import Clock
from router.config import AuthConfig
from router.errors import ClientRateLimited, Forbidden, Unauthorized
from router.realtime.quota import SessionQuota
from router.realtime.secrets import EphemeralKeys, Grant, is_ephemeral
from router.signals.ratelimit import LocalLimits


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    routes: frozenset[str] | None
    limits: LocalLimits | None
    #: realtime sessions at once and session-minutes (None: unlimited)
    sessions: SessionQuota | None = None


class Authenticator:
    """Built per config generation; per-key limit counters carry over by key name."""

    def __init__(
        self,
        auth: AuthConfig | None,
        environ: Mapping[str, str],
        clock: Clock,
        previous: Authenticator | None = None,
    ) -> None:
        self.enabled = auth is not None and bool(auth.keys)
        self._keys: list[tuple[bytes, Client]] = []
        self._admin: bytes | None = None
        #: the environment variable the signing key came from (None: a random one)
        self.secret_key_env = auth.client_secret_key_env if auth is not None else None
        if self.secret_key_env is not None:
            signing_key = digest(environ[self.secret_key_env])
        elif previous is not None and previous.secret_key_env is None:
            signing_key = previous.ephemeral.signing_key  # keys made before a reload stay good
        else:
            signing_key = os.urandom(32)
        self.ephemeral: EphemeralKeys = EphemeralKeys(signing_key)
        if auth is None:
            return
        kept = {c.name: c.limits for _, c in previous._keys} if previous else {}
        quotas = {c.name: c.sessions for _, c in previous._keys} if previous else {}
        for k in auth.keys:
            secret = (
                bytes.fromhex(k.key_sha256) if k.key_sha256 else digest(environ[k.key_env or ""])
            )
            limits = kept.get(k.name)
            if k.rpm or k.tpm:
                if limits is None or (limits.rpm, limits.tpm) != (k.rpm, k.tpm):
                    limits = LocalLimits(k.rpm, k.tpm, clock)
            else:
                limits = None
            routes = frozenset(k.routes) if k.routes is not None else None
            quota = quotas.get(k.name)
            if k.max_sessions or k.session_minutes:
                if quota is None:
                    quota = SessionQuota(k.max_sessions, k.session_minutes, clock)
                quota.max_sessions, quota.session_minutes = k.max_sessions, k.session_minutes
            else:
                quota = None
            self._keys.append((secret, Client(k.name, routes, limits, quota)))
        if auth.admin_key_sha256:
            self._admin = bytes.fromhex(auth.admin_key_sha256)
        elif auth.admin_key_env:
            self._admin = digest(environ[auth.admin_key_env])

    @property
    def admin_protected(self) -> bool:
        return self._admin is not None

    def client(self, authorization: str | None) -> Client | None:
        """The caller, or None when no client keys are configured. Raises 401."""
        if not self.enabled:
            return None
        token = _bearer(authorization)
        if token is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if is_ephemeral(token):
            raise Unauthorized("an ephemeral key (ek_...) opens realtime sessions only")
        presented = digest(token)
        found: Client | None = None
        for secret, client in self._keys:  # no early exit: constant work per request
            if hmac.compare_digest(presented, secret):
                found = client
        if found is None:
            raise Unauthorized("invalid API key")
        return found

    def ephemeral_client(self, authorization: str | None) -> tuple[Grant, Client | None] | None:
        """For an ephemeral key: its grant and the client key that asked for it (401 if
        the key is invalid, expired, or its client key is no longer configured); None
        for any other credential."""
        token = _bearer(authorization)
        if token is None or not is_ephemeral(token):
            return None
        grant = self.ephemeral.verify(token)
        if not self.enabled:
            return grant, None
        for _, client in self._keys:
            if client.name == grant.client:
                return grant, client
        raise Unauthorized("the client key that asked for this ephemeral key is gone")

    def check_admin(self, authorization: str | None) -> None:
        """Admin endpoints need the admin key when one is set, and are closed when
        client keys are configured without one."""
        if self._admin is None:
            if self.enabled:
                raise Forbidden("the admin endpoints are disabled: no admin key is configured")
            return
        token = _bearer(authorization)
        if token is None or not hmac.compare_digest(digest(token), self._admin):
            raise Unauthorized("the admin endpoints need the admin key")

    @staticmethod
    def may_use(client: Client | None, route: str) -> bool:
        return client is None or client.routes is None or route in client.routes

    @staticmethod
    def precheck(client: Client | None, route: str) -> None:
        """Before the body is walked: the route permission (403) and the key's request
        rate (429), counting nothing yet (`admit` does, with the prompt's tokens)."""
        if client is None:
            return
        if client.routes is not None and route not in client.routes:
            raise Forbidden(f"the key '{client.name}' may not use the model '{route}'")
        if client.limits is not None and not client.limits.within:
            raise ClientRateLimited(
                f"the key '{client.name}' is over its rate limit", retry_after_s=1.0
            )

    @staticmethod
    def admit_session(client: Client | None, route: str) -> None:
        """Route permission (403) and the key's realtime allowance (429)."""
        if client is None:
            return
        if client.routes is not None and route not in client.routes:
            raise Forbidden(f"the key '{client.name}' may not use the model '{route}'")
        sessions = client.sessions
        why = sessions.refusal() if sessions is not None else None
        if sessions is not None and why is not None:
            raise ClientRateLimited(
                f"the key '{client.name}' is over its limit: {why}", sessions.retry_after_s()
            )

    @staticmethod
    def admit(client: Client | None, route: str, prompt_tokens: int) -> None:
        """Route permission (403) and the key's own rpm/tpm (429)."""
        if client is None:
            return
        if client.routes is not None and route not in client.routes:
            raise Forbidden(f"the key '{client.name}' may not use the model '{route}'")
        if client.limits is not None:
            if not client.limits.allow(prompt_tokens):
                raise ClientRateLimited(
                    f"the key '{client.name}' is over its rate limit", retry_after_s=1.0
                )
            client.limits.record(prompt_tokens)
