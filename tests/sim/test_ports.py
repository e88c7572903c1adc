from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from router.sim import ports
from router.sim.ports import NoFreePort, ephemeral_low, free_block, free_port, free_ports


def test_ports_come_from_below_the_ephemeral_range_and_can_be_bound() -> None:
    # Outgoing connections take their local port from the ephemeral range: a port
    # below it cannot be taken by one between the pick and the server's bind.
    picked = free_ports(20)
    assert len(set(picked)) == 20
    assert all(ports.LOWEST <= p < ephemeral_low() for p in picked)
    for p in picked:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    assert ports.LOWEST <= free_port() < ephemeral_low()


def test_a_port_in_use_is_not_handed_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        # A source of picks that offers the busy port first, then a free one.
        offers = iter([busy, busy, busy])

        class Offers(random.Random):
            def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
                return next(offers, 0) or super().randrange(start, stop, step)

        assert busy not in free_ports(1, rng=Offers())


def test_no_free_port_is_an_error_that_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ATTEMPTS", 3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]

        class Always(random.Random):
            def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
                return int(busy)

        with pytest.raises(NoFreePort, match="no 1 free ports"):
            free_ports(1, rng=Always())


def test_the_kernel_range_is_read_and_a_default_stands_in(tmp_path: Path) -> None:
    custom = tmp_path / "range"
    custom.write_text("40000\t60999\n")
    assert ephemeral_low(custom) == 40000
    assert ephemeral_low(tmp_path / "missing") == ports.EPHEMERAL_DEFAULT
    custom.write_text("garbage")
    assert ephemeral_low(custom) == ports.EPHEMERAL_DEFAULT


class _Offers(random.Random):
    """A source of picks that offers the same port every time."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return self.port


def test_a_port_picked_a_moment_ago_is_not_handed_out_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first pick is still free (its server has not bound it yet), but another
    # process of ours picking now must not get it: CI saw two README sections'
    # servers race for one port.
    monkeypatch.setattr(ports, "ATTEMPTS", 5)
    registry = tmp_path / "ports.json"
    first = free_ports(1, registry=registry)[0]
    with pytest.raises(NoFreePort):
        free_ports(1, rng=_Offers(first), registry=registry)
    # Once the reservation is old, the port can be handed out again.
    monkeypatch.setattr(ports, "RESERVE_S", 0.0)
    assert free_ports(1, rng=_Offers(first), registry=registry) == [first]


def test_processes_picking_at_once_never_share_a_port(tmp_path: Path) -> None:
    registry = tmp_path / "ports.json"
    code = (
        "import sys\nfrom pathlib import Path\nfrom router.sim.ports import free_ports\n"
        "print(*free_ports(40, registry=Path(sys.argv[1])))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(registry)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    picked = [int(p) for proc in procs for p in proc.communicate(timeout=60)[0].split()]
    assert all(proc.returncode == 0 for proc in procs)
    assert len(picked) == 240
    assert len(set(picked)) == 240
    assert len(json.loads(registry.read_text())) == 240


def test_a_block_is_consecutive_free_and_reserved(tmp_path: Path) -> None:
    registry = tmp_path / "ports.json"
    block = free_block(4, registry=registry)
    assert block == list(range(block[0], block[0] + 4))
    for p in block:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))
    assert set(json.loads(registry.read_text())) == {str(p) for p in block}


def test_a_broken_registry_is_started_afresh(tmp_path: Path) -> None:
    registry = tmp_path / "ports.json"
    registry.write_text("{not json")
    assert len(free_ports(3, registry=registry)) == 3
    assert len(json.loads(registry.read_text())) == 3
