"""Fixes from a hunt on Pusher user authentication and user features (sign-in, watchlists, server-to-user events,
terminate_connections), each with the behaviour it restores."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from relay.emulator.server import liveness_sweep_interval
from tests.conformance.wsclient import APP, Connect, expect_fatal
from tests.conftest import StartEmulator


@pytest.mark.parametrize(
    ("timeouts", "interval"),
    [
        ({"user_authentication_timeout": 0.2}, 0.05),
        ({"user_authentication_timeout": 2.0}, 0.5),
        ({"user_authentication_timeout": None, "activity_timeout": 120, "pong_timeout": 30}, 1.0),
        ({"user_authentication_timeout": 30.0, "activity_timeout": 120, "pong_timeout": 30}, 1.0),
    ],
)
def test_the_liveness_sweep_runs_at_a_quarter_of_the_shortest_timeout(
    timeouts: dict[str, float | None], interval: float
) -> None:
    """user_authentication_timeout is one of the timeouts the sweep enforces, so it sets the interval too."""
    assert liveness_sweep_interval([APP, replace(APP, key="other", **timeouts)]) == interval


async def test_a_short_user_authentication_timeout_closes_in_its_time(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """A socket that neither signs in nor joins a private channel within user_authentication_timeout is closed (4009)
    soon after it, not at the next one-second liveness sweep: a timeout of 0.2 s closed sockets up to 1.2 s after they
    opened. Five sockets opened 0.2 s apart: with a one-second sweep, one of them waits 1 s or more; now each waits
    about 0.25 s (the bound leaves a loaded machine 0.6 s more)."""
    target = await start_emulator(app=replace(APP, user_authentication_timeout=0.2))

    async def closed_after(delay: float) -> float:
        await asyncio.sleep(delay)
        idle = await connect(target)
        opened = time.monotonic()
        await expect_fatal(idle.ws, 4009, wait=3.0)
        return time.monotonic() - opened

    waits = await asyncio.gather(*(closed_after(0.2 * n) for n in range(5)))
    assert max(waits) < 0.85, waits
