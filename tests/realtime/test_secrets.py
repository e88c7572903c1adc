"""Ephemeral keys (router/realtime/secrets.py): what a key carries, and every way one
is refused: expired, signed under another key, altered, or not one of ours at all."""

from __future__ import annotations

import pytest

from router.errors import Unauthorized
from router.realtime.secrets import PREFIX, EphemeralKeys


class Wall:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Wall:
    return Wall()


def test_a_key_carries_its_route_client_and_configuration(wall: Wall) -> None:
    keys = EphemeralKeys(b"k" * 32, wall)
    session = {"instructions": "Be brief.", "audio": {"output": {"voice": "marin"}}}
    value, expires_at = keys.mint("voice", "team-a", session, 600)
    assert value.startswith(PREFIX) and expires_at == 1_800_000_600
    grant = keys.verify(value)
    assert (grant.route, grant.client, grant.expires_at) == ("voice", "team-a", expires_at)
    assert grant.session == session
    # A subprotocol carries it: only characters a WebSocket token may hold.
    assert all(c.isalnum() or c in "-_." for c in value)


def test_a_key_expires_at_its_time(wall: Wall) -> None:
    keys = EphemeralKeys(b"k" * 32, wall)
    value, _ = keys.mint("voice", None, {}, 10)
    wall.now += 9.9
    assert keys.verify(value).route == "voice"
    wall.now += 0.1
    with pytest.raises(Unauthorized, match="expired"):
        keys.verify(value)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v.replace(".", "x.", 1),  # the payload altered
        lambda v: v[:-2] + ("AA" if not v.endswith("AA") else "BB"),  # the MAC altered
        lambda v: v.partition(".")[0],  # no MAC
        lambda v: PREFIX + "not-a-key",
        lambda v: PREFIX + "x" * 60_000,  # too long to read
    ],
    ids=["payload", "mac", "no-mac", "garbage", "huge"],
)
def test_an_altered_key_is_refused(wall: Wall, mangle: object) -> None:
    keys = EphemeralKeys(b"k" * 32, wall)
    value, _ = keys.mint("voice", None, {"instructions": "x"}, 600)
    with pytest.raises(Unauthorized, match="invalid ephemeral key"):
        keys.verify(mangle(value))  # type: ignore[operator]


def test_a_key_signed_by_another_router_is_refused(wall: Wall) -> None:
    value, _ = EphemeralKeys(b"a" * 32, wall).mint("voice", None, {}, 600)
    with pytest.raises(Unauthorized, match="signing key"):
        EphemeralKeys(b"b" * 32, wall).verify(value)
    assert EphemeralKeys(b"a" * 32, wall).verify(value).route == "voice"


def test_a_configuration_over_the_bound_is_not_minted(wall: Wall) -> None:
    with pytest.raises(ValueError, match="over"):
        EphemeralKeys(b"k" * 32, wall).mint("voice", None, {"x": "y" * 300_000}, 600)
