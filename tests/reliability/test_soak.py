"""Thirty seconds of churn leave no connection, channel, task or file descriptor behind (the 10-minute version with
RSS is bench/soak.py)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import pytest

from tests.conftest import TEST_APP, StartEmulator
from tests.reliability.soak import churn

SECONDS = float(os.environ.get("RELAY_SOAK_SECONDS", "30"))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.long
async def test_churn_leaks_nothing(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=replace(TEST_APP, user_authentication_timeout=None))
    await asyncio.sleep(0.2)
    tasks_before = len(asyncio.all_tasks())
    descriptors_before = open_descriptors()
    done = await churn(emulator.http_url, emulator.ws_url(), app_id="1", seconds=SECONDS)
    # enough churn for a leak to show, as a count: the rate a loaded CI machine reaches is no part of the claim
    assert done["connections"] >= 100
    assert done["publishes"] >= 100
    assert done["deliveries"] > 0
    state = emulator.node.states["1"]
    for _ in range(100):
        if not state.peers and not state.channels and open_descriptors() <= descriptors_before:
            break
        await asyncio.sleep(0.05)
    assert state.peers == {}
    assert state.channels == {}
    assert state.users == {}
    assert len(emulator.node.connections) == 0
    assert len(asyncio.all_tasks()) <= tasks_before
    assert open_descriptors() <= descriptors_before
