"""Fixtures for the Ably compatibility tests (helpers in ``ablysupport``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ablysupport import APP, NODE, NODE_DIR, AblyWire, PusherWire, Running


@pytest.fixture
async def ably_emulator(start_emulator: object) -> Running:
    """The emulator with the test app (Ably key ``1.app-key:app-secret``)."""
    running: Running = await start_emulator(app=APP)  # type: ignore[operator]
    return running


@pytest.fixture
async def wires() -> AsyncIterator[list[AblyWire | PusherWire]]:
    """Raw connections opened by a test, closed afterwards (append to the list)."""
    opened: list[AblyWire | PusherWire] = []
    yield opened
    for wire in opened:
        await wire.ws.close()


@pytest.fixture
def node_modules() -> Path:
    if NODE is None:
        pytest.skip("node is not on PATH")
    for package in ("ably", "pusher-js", "pusher"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"{package} is missing from tests/node: run `npm ci --prefix tests/node` first")
    return NODE_DIR / "node_modules"
