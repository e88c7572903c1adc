"""The ASGI types the gateway's endpoints share (HTTP and WebSocket alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (the first, if repeated); `name` in lower case."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


#: the scope extension (`scope["extensions"]`) under which the router's own server
#: passes each HTTP request its connection's `DisconnectWatch` (as `{"watch": ...}`)
DISCONNECT = "firsttoken.disconnect"


class DisconnectWatch:
    """Who to tell when a client connection is lost: the router's server puts one per
    connection into every request's scope (`DISCONNECT`), and a turn adds a callback
    for its own time on it. This replaces a task per turn waiting on `receive()` for
    `http.disconnect` (its creation, its wake-up and its cancellation were ~3 % of an
    embeddings request's instructions); under another ASGI server, with no extension
    in the scope, a turn still waits on `receive()`."""

    __slots__ = ("_callbacks", "lost")

    def __init__(self) -> None:
        self._callbacks: set[Callable[[], None]] = set()
        self.lost = False

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the connection is lost (at once if it already is)."""
        if self.lost:
            callback()
        else:
            self._callbacks.add(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        self._callbacks.discard(callback)

    def fire(self) -> None:
        """The connection is lost: tell every turn still watching, once."""
        self.lost = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            callback()


def disconnect_watch(scope: Scope) -> DisconnectWatch | None:
    """The request's `DisconnectWatch`, if its server gives one."""
    extensions = scope.get("extensions")
    extension = extensions.get(DISCONNECT) if extensions else None
    watch = extension.get("watch") if isinstance(extension, dict) else None
    return watch if isinstance(watch, DisconnectWatch) else None


def watch_disconnect(
    scope: Scope, receive: Receive, on_gone: Callable[[], None]
) -> Callable[[], object]:
    """Call `on_gone` if the client's connection is lost; returns what stops watching.
    The router's own server says so through the scope's `DisconnectWatch`; under
    another, a task waits on `receive()` for `http.disconnect` (once the request's
    body is read, nothing else can come)."""
    watch = disconnect_watch(scope)
    if watch is not None:
        watch.add(on_gone)
        return partial(watch.discard, on_gone)

    def on_message(done: asyncio.Future[Message]) -> None:
        ok = not done.cancelled() and done.exception() is None
        if ok and done.result()["type"] == "http.disconnect":
            on_gone()

    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(on_message)
    return watcher.cancel
