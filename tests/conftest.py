"""Shared fixtures: the anyio backend and the background loop for e2e servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import LoopThread


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()
