"""Fixtures of the operations tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.conftest import RedisServer


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own, on a free port."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
