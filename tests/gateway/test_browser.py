"""Host allow-list, Origin and content types: what a web page can and cannot make the
router do."""

from __future__ import annotations

import pytest

from router.config import ServerConfig
from router.edge import CorsConfig
from router.errors import HostNotAllowed, OriginNotAllowed, UnsupportedMediaType
from router.gateway.browser import BrowserGuard, HostPolicy, host_name, require_json


def test_host_names_lose_port_brackets_case_and_a_final_dot() -> None:
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:8080") == "::1"
    assert host_name("router.example.com.") == "router.example.com"
    assert host_name("10.1.2.3") == "10.1.2.3"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("127.0.0.2", True),
        ("[::1]:8080", True),
        (None, True),  # HTTP/1.0 without Host: no browser sends that
        ("evil.example:8080", False),  # DNS rebinding
        ("localhost.evil.example", False),
        ("10.1.2.3:8080", False),
        ("[::2]:8080", False),
        ("", False),
    ],
)
def test_by_default_only_loopback_names_are_served(host: str | None, allowed: bool) -> None:
    assert HostPolicy.build((), "127.0.0.1").allows(host) is allowed


def test_the_bound_address_names_suffixes_networks_and_any() -> None:
    policy = HostPolicy.build(
        ["router.example.com", "*.svc.cluster.local", "10.0.0.0/8", "fd00::/8"], "192.168.1.5"
    )
    for host in (
        "192.168.1.5:8080",
        "ROUTER.example.com",
        "firsttoken.default.svc.cluster.local:8080",
        "10.244.3.17:8080",
        "[fd00::17]:8080",
    ):
        assert policy.allows(host), host
    for host in ("svc.cluster.local.evil.example", "11.0.0.1", "example.com", "[fe80::1]"):
        assert not policy.allows(host), host
    # a bind to every address names no host; "*" serves any
    assert not HostPolicy.build((), "0.0.0.0").allows("10.0.0.1")
    assert HostPolicy.build(["*"], "0.0.0.0").allows("anything.example")


def test_a_refused_host_or_origin_is_a_403_in_the_api_shape() -> None:
    guard = BrowserGuard(ServerConfig(), None)
    with pytest.raises(HostNotAllowed) as caught:
        guard.check_host("evil.example")
    assert caught.value.status == 403 and caught.value.code == "host_not_allowed"
    assert guard.check_origin(None) is None
    with pytest.raises(OriginNotAllowed):
        guard.check_origin("https://app.example.com")


def test_only_origins_cors_lists_are_let_through() -> None:
    cors = CorsConfig(allow_origins=("https://App.example.com",))
    guard = BrowserGuard(ServerConfig(cors=cors), None)
    assert guard.check_origin("https://app.example.com") == "https://app.example.com"
    for origin in ("https://app.example.com.evil", "http://app.example.com", "null"):
        with pytest.raises(OriginNotAllowed):
            guard.check_origin(origin)
    headers = dict(guard.cors_headers("https://app.example.com"))
    assert headers[b"access-control-allow-origin"] == b"https://app.example.com"
    assert headers[b"vary"] == b"origin"
    assert BrowserGuard(ServerConfig(cors=CorsConfig(allow_origins=("*",))), None).check_origin(
        "https://any.example"
    )


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", ""],
)
def test_a_body_must_say_it_is_json(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        require_json(content_type)
    require_json("application/json; charset=utf-8")


def test_config_refuses_what_is_not_a_host_or_an_origin() -> None:
    with pytest.raises(ValueError, match="not a host"):
        ServerConfig(allowed_hosts=("http://router.example.com",))
    with pytest.raises(ValueError, match="not an IP network"):
        ServerConfig(allowed_hosts=("10.0.0.0/33",))
    with pytest.raises(ValueError, match="not an origin"):
        CorsConfig(allow_origins=("https://app.example.com/",))


def test_the_playground_is_served_by_default_only_on_loopback() -> None:
    assert BrowserGuard(ServerConfig(), None).playground
    assert BrowserGuard(ServerConfig(host="localhost"), None).playground
    assert BrowserGuard(ServerConfig(host="0.0.0.0"), "::1").playground  # bound to loopback
    assert not BrowserGuard(ServerConfig(host="0.0.0.0"), None).playground
    assert not BrowserGuard(ServerConfig(host="10.0.0.5"), None).playground
    assert BrowserGuard(ServerConfig(host="0.0.0.0", playground=True), None).playground
    assert not BrowserGuard(ServerConfig(playground=False), None).playground


def test_the_playgrounds_own_origin_is_served_and_no_other() -> None:
    guard = BrowserGuard(ServerConfig(), None)
    assert guard.check_origin("http://127.0.0.1:8080", "127.0.0.1:8080") is None
    assert guard.check_origin("http://LOCALHOST:8080", "localhost:8080") is None
    for origin in ("http://127.0.0.1:9999", "http://evil.example", "null"):
        with pytest.raises(OriginNotAllowed):
            guard.check_origin(origin, "127.0.0.1:8080")
    off = BrowserGuard(ServerConfig(playground=False), None)
    with pytest.raises(OriginNotAllowed):
        off.check_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
