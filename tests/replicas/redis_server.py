"""A real redis-server on a free 127.0.0.1 port, for the shared-state tests.

Started with no persistence (`--save '' --appendonly no`), so a restart on the same
port is an empty Redis, as after a crash. Skipped with a clear reason if Debian's
`redis-server` is not installed (`apt-get install redis-server`; .ci/run does).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from router.sim.ports import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One redis-server process; `stop()`/`start()` restart it on the same port."""

    def __init__(self, port: int) -> None:
        assert REDIS_SERVER is not None
        self.port = port
        self._dir = tempfile.TemporaryDirectory(prefix="firsttoken-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None and self._proc is None
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--logfile",
                "",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to the clients, as in a crash)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a slow or hung Redis)."""
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self._proc is not None:
            self.resume()
        self.stop()
        self._dir.cleanup()


def _server() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; tests keep apart by key prefix."""
    yield from _server()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may kill, pause and restart."""
    yield from _server()


_prefixes = iter(range(1, 1_000_000))


@pytest.fixture
def key_prefix() -> str:
    return f"ft-test-{os.getpid()}-{next(_prefixes)}:"
