"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.realtime_stack import Stack, running_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """Two Realtime simulators behind a router with client keys (realtime_stack.py)."""
    async with running_stack() as running:
        yield running
