"""Free TCP ports for servers started in another process (benchmarks, tests, demos).

The usual trick, bind to port 0 and close, hands out a port from the kernel's
ephemeral range (Linux: 32768-60999), which every outgoing connection on the
machine draws its local port from too: between the pick and the child's bind,
another process's connection can take it (CI saw `address already in use` from a
benchmark's upstream while the test suite ran beside it). A port below that range
is only ever taken by an explicit bind, so these are drawn from there, at random,
and each is checked bindable.

Between the pick and the child's bind, another of our own processes picking at the
same moment could still draw the same port (CI saw that too: two README sections
running side by side, one router's `--port` bound first by the other's server). So
every pick is also written to a registry shared by this user's processes (a JSON
file under the temp folder, updated under an exclusive `flock`), and a port picked
in the last `RESERVE_S` seconds is not handed out again, by any process. A caller
wanting several ports gets distinct ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: where the picks start (above the well-known and most registered service ports)
LOWEST = 10_000
#: Linux's default first ephemeral port, when the kernel's setting cannot be read
EPHEMERAL_DEFAULT = 32_768
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: random picks tried before giving up
ATTEMPTS = 500
#: how long a picked port stays reserved for the process that picked it
RESERVE_S = 600.0


class NoFreePort(OSError):
    """No port below the ephemeral range could be bound."""


def ephemeral_low(range_file: Path = _RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range (the default where unknown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(range_file.read_text().split()[0])
    return EPHEMERAL_DEFAULT


def registry_path() -> Path:
    """The registry of recent picks shared by this user's processes."""
    return Path(tempfile.gettempdir()) / f"firsttoken-ports-{os.getuid()}.json"


@contextlib.contextmanager
def _registry(path: Path) -> Iterator[dict[str, float]]:
    """The live reservations (port -> when picked), held under an exclusive lock;
    what the caller adds is written back on exit."""
    lock = path.with_suffix(".lock")
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            now = time.time()
            recent: dict[str, float] = {}
            with contextlib.suppress(OSError, ValueError, AttributeError):
                loaded = json.loads(path.read_text())
                recent = {str(p): float(t) for p, t in loaded.items() if now - float(t) < RESERVE_S}
            yield recent
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(recent))
            tmp.replace(path)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def _bindable(host: str, ports: list[int]) -> bool:
    socks: list[socket.socket] = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, port))
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()
    return True


def _pick(
    n: int,
    block: int,
    host: str,
    rng: random.Random | None,
    registry: Path | None,
) -> list[list[int]]:
    pick = rng or random.Random()
    high = ephemeral_low()
    if high <= LOWEST + n * block:
        high = 65_536  # an unusual kernel setting: anywhere above LOWEST, then
    out: list[list[int]] = []
    with _registry(registry or registry_path()) as reserved:
        now = time.time()
        for _ in range(ATTEMPTS):
            if len(out) == n:
                break
            first = pick.randrange(LOWEST, high - block + 1)
            run = list(range(first, first + block))
            if any(str(p) in reserved for p in run) or not _bindable(host, run):
                continue
            reserved.update({str(p): now for p in run})
            out.append(run)
    if len(out) < n:
        raise NoFreePort(f"no {n} free ports between {LOWEST} and {high} on {host}")
    return out


def free_ports(
    n: int,
    host: str = "127.0.0.1",
    *,
    rng: random.Random | None = None,
    registry: Path | None = None,
) -> list[int]:
    """`n` distinct ports on `host` that were free a moment ago, below the ephemeral
    range, and picked by no process of ours in the last `RESERVE_S` seconds."""
    return [run[0] for run in _pick(n, 1, host, rng, registry)]


def free_port(host: str = "127.0.0.1") -> int:
    """One port on `host` that was free a moment ago, below the ephemeral range."""
    return free_ports(1, host)[0]


def free_block(
    size: int,
    host: str = "127.0.0.1",
    *,
    rng: random.Random | None = None,
    registry: Path | None = None,
) -> list[int]:
    """`size` consecutive free ports (for servers that take a base port and count up)."""
    return _pick(1, size, host, rng, registry)[0]
