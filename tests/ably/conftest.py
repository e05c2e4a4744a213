"""Fixtures for the Ably compatibility tests (helpers in ``ablysupport``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ablysupport import APP, AblyWire, PusherWire

from tests.conftest import RunningEmulator
from tests.node_scenarios import node_modules as installed_modules


@pytest.fixture
async def ably_emulator(start_emulator: object) -> RunningEmulator:
    """The emulator with the test app (Ably key ``1.app-key:app-secret``)."""
    running: RunningEmulator = await start_emulator(app=APP)  # type: ignore[operator]
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
    return installed_modules("ably", "pusher-js", "pusher")
