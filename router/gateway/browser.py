"""Browser safety: a web page the user visits must never drive the router.

Three ways a page could, and what closes each:

- **DNS rebinding.** A page on `evil.example` re-points its name at 127.0.0.1 and
  reads the router as if it were its own origin. The browser still sends
  `Host: evil.example`, so only Host values on the allow-list are served: the
  bound address, `localhost`, the loopback addresses and `server.allowed_hosts`
  (names, `*.suffix`, IP networks, or "*"). A Host that is an IP address cannot
  be rebound (the page's origin would be that IP, so its requests are
  cross-origin), which is why an IP network is a safe way to admit probes and
  scrapers that address a pod by its IP. A request without Host (HTTP/1.0) comes
  from no browser and is served.
- **Cross-origin "simple" requests** (no preflight: a form post, `text/plain`
  fetch, beacon). Every POST must say `application/json`, which no simple request
  can; and any request that carries an `Origin` is refused unless `server.cors`
  lists that origin, in which case it gets proper CORS answers (preflight too).
- **Admin actions** (`POST /admin/reload`) need a JSON body as well.

The one page the router serves, the voice playground (`GET /playground`, when
`server.playground` is on: by default only on a loopback address), passes the same
Host check; its own requests (the `/v1/realtime` WebSocket) carry an Origin equal to
the Host they are sent to, which only a page served by this router can, so with the
playground on, a same-origin Origin is served without CORS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from router.config import ServerConfig
from router.edge import CorsConfig
from router.errors import HostNotAllowed, OriginNotAllowed, UnsupportedMediaType
from router.gateway.asgi import Message, Send
from router.turn.sink import Header

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
#: Host verdicts remembered per guard
_SEEN_HOSTS = 256
#: bound to every address: no use as a Host value
_UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})


def host_name(value: str) -> str:
    """A Host header's name, lower-cased, without port, brackets or a final dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1:].split("]", 1)[0]
    name, colon, port = value.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        value = name
    return value.rstrip(".")


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def require_json(content_type: str | None) -> None:
    if media_type(content_type) != "application/json":
        raise UnsupportedMediaType(
            "send the request body as JSON with 'Content-Type: application/json'"
        )


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which Host header values are served."""

    any_host: bool
    names: frozenset[str]
    suffixes: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def build(cls, allowed: Iterable[str], bound_host: str | None) -> HostPolicy:
        names = {"localhost"}
        suffixes: list[str] = []
        networks = list(_LOOPBACK)
        entries = [entry.lower() for entry in allowed]
        if bound_host is not None and bound_host not in _UNSPECIFIED:
            entries.append(bound_host.lower())
        for entry in entries:
            if "/" in entry:
                networks.append(ipaddress.ip_network(entry, strict=False))
            elif entry.startswith("*."):
                suffixes.append(entry[1:])  # ".example.com"
            elif entry != "*":
                name = host_name(entry)
                ip = _ip(name)
                if ip is not None:
                    networks.append(ipaddress.ip_network(ip))
                else:
                    names.add(name)
        return cls("*" in entries, frozenset(names), tuple(suffixes), tuple(networks))

    def allows(self, host: str | None) -> bool:
        if host is None or self.any_host:
            return True
        name = host_name(host)
        ip = _ip(name)
        if ip is not None:
            return any(ip.version == net.version and ip in net for net in self.networks)
        return name in self.names or name.endswith(self.suffixes)


class BrowserGuard:
    """Host and Origin checks and CORS headers, for one config generation."""

    def __init__(self, server: ServerConfig, bound_host: str | None) -> None:
        self.hosts = HostPolicy.build(server.allowed_hosts, bound_host or server.host)
        self._cors: CorsConfig | None = server.cors
        listening = host_name(bound_host or server.host)
        ip = _ip(listening)
        loopback = listening == "localhost" or (ip is not None and ip.is_loopback)
        #: GET /playground is served (and its same-origin requests)
        self.playground = loopback if server.playground is None else server.playground
        #: verdicts by Host value: a request pays a dict lookup, not an IP parse
        self._seen: dict[str | None, bool] = {}

    def check_host(self, host: str | None) -> None:
        allowed = self._seen.get(host)
        if allowed is None:
            allowed = self.hosts.allows(host)
            if len(self._seen) >= _SEEN_HOSTS:  # any number of names may be tried
                self._seen.clear()
            self._seen[host] = allowed
        if not allowed:
            raise HostNotAllowed(
                "this Host is not served here; add it to server.allowed_hosts if it is yours"
            )

    def check_origin(self, origin: str | None, host: str | None = None) -> str | None:
        """The origin to answer with CORS headers, None without one (or for the
        playground's own same-origin requests), or a 403."""
        if origin is None:
            return None
        if self.playground and host and origin.lower() in _same_origins(host):
            return None
        cors = self._cors
        if cors is None or not ("*" in cors.allow_origins or origin.lower() in cors.allow_origins):
            raise OriginNotAllowed(
                "requests from web pages are refused unless server.cors allows their origin"
            )
        return origin

    def cors_headers(self, origin: str) -> list[Header]:
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", _EXPOSED),
            (b"vary", b"origin"),
        ]

    def with_cors(self, send: Send, origin: str) -> Send:
        """`send`, adding the CORS headers to every response head for `origin`."""
        extra = self.cors_headers(origin)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return sending

    def preflight_headers(self, methods: Sequence[str]) -> list[Header]:
        """The answer to an allowed origin's OPTIONS, besides `cors_headers`."""
        assert self._cors is not None  # check_origin let the origin through
        return [
            (b"access-control-allow-methods", ", ".join(methods).encode()),
            (b"access-control-allow-headers", ", ".join(self._cors.allow_headers).encode()),
            (b"access-control-max-age", str(self._cors.max_age_s).encode()),
        ]


def _same_origins(host: str) -> tuple[str, str]:
    """The origins of a page served from `host` (a Host header's value)."""
    host = host.strip().lower()
    return f"http://{host}", f"https://{host}"


#: what a page may read of an answer besides the CORS-safelisted headers
_EXPOSED = b"x-firsttoken-target, x-firsttoken-attempts, x-firsttoken-reason, retry-after"
