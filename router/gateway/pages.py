"""The voice playground's files: `GET /playground` and the two scripts it loads.

Plain HTML and JavaScript shipped as package data (`router/gateway/playground/`), read
once, served with a Content-Security-Policy that lets the page load only its own
scripts and connect only to WebSockets (its `/v1/realtime`, or another realtime URL
its user types), and never be framed (it asks for the microphone). Whether the page is
served at all is `BrowserGuard.playground`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from router.turn.sink import Header

#: path -> (file in the package's playground folder, content type)
PAGES: dict[str, tuple[str, bytes]] = {
    "/playground": ("index.html", b"text/html; charset=utf-8"),
    "/playground/playground.js": ("playground.js", b"text/javascript; charset=utf-8"),
    "/playground/capture-worklet.js": ("capture-worklet.js", b"text/javascript; charset=utf-8"),
}

PAGE_HEADERS: tuple[Header, ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
)


@cache
def page(path: str) -> tuple[bytes, bytes]:
    """(body, content type) of a playground path (one of `PAGES`)."""
    name, content_type = PAGES[path]
    body = (resources.files("router.gateway") / "playground" / name).read_bytes()
    return body, content_type
