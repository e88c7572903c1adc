"""Free TCP ports for servers started in another process (benchmarks, tests, demos).

The usual trick, bind to port 0 and close, hands out a port from the kernel's
ephemeral range (Linux: 32768-60999), which every outgoing connection on the
machine draws its local port from too: between the pick and the child's bind,
another process's connection can take it (CI saw `address already in use` from a
benchmark's upstream while the test suite ran beside it). A port below that range
is only ever taken by an explicit bind, so these are drawn from there, at random,
and each is checked bindable. A caller wanting several ports gets distinct ones.
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

#: where the picks start (above the well-known and most registered service ports)
LOWEST = 10_000
#: Linux's default first ephemeral port, when the kernel's setting cannot be read
EPHEMERAL_DEFAULT = 32_768
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: random picks tried before giving up
ATTEMPTS = 500


class NoFreePort(OSError):
    """No port below the ephemeral range could be bound."""


def ephemeral_low(range_file: Path = _RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range (the default where unknown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(range_file.read_text().split()[0])
    return EPHEMERAL_DEFAULT


def free_ports(n: int, host: str = "127.0.0.1", *, rng: random.Random | None = None) -> list[int]:
    """`n` distinct ports on `host` that were free a moment ago, below the ephemeral range."""
    pick = rng or random.Random()
    high = ephemeral_low()
    if high <= LOWEST + n:
        high = 65_536  # an unusual kernel setting: anywhere above LOWEST, then
    held: list[socket.socket] = []
    try:
        for _ in range(ATTEMPTS):
            if len(held) == n:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, pick.randrange(LOWEST, high)))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        if len(held) < n:
            raise NoFreePort(f"no {n} free ports between {LOWEST} and {high} on {host}")
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port on `host` that was free a moment ago, below the ephemeral range."""
    return free_ports(1, host)[0]
