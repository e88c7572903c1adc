"""The client's side of a realtime session, as the session sees it (the gateway
implements it over ASGI: `router.gateway.realtime.AsgiClientSocket`)."""

from __future__ import annotations

from typing import Protocol

from router.errors import UpstreamConnectError


class ClientGone(Exception):
    """The client's socket is closed: nothing more can be sent to it."""


class ClientSocket(Protocol):
    """The client's side of the session."""

    async def receive(self) -> str | bytes | None:
        """The next frame; None once the client has gone."""
        ...

    async def send(self, text: str) -> None:
        """Send one text frame; raises `ClientGone` if the client has gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None: ...


class quiet:
    """Suppress what closing an already-broken socket may raise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return isinstance(exc, ClientGone | OSError | RuntimeError | UpstreamConnectError)
