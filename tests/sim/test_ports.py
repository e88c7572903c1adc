from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from router.sim import ports
from router.sim.ports import NoFreePort, ephemeral_low, free_port, free_ports


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
