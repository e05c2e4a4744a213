"""Fixes from a hunt on Pusher user authentication and user features (sign-in, watchlists, server-to-user events,
terminate_connections), each with the behaviour it restores."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from tests.conformance.wsclient import APP, Connect, expect_fatal
from tests.conftest import StartEmulator


async def test_a_short_user_authentication_timeout_closes_in_its_time(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """A socket that neither signs in nor joins a private channel within user_authentication_timeout is closed (4009)
    soon after it, not at the next one-second liveness sweep: a timeout of 0.2 s closed sockets up to 1.2 s after they
    opened. Three sockets opened 0.35 s apart: with a one-second sweep, at least one of them waits 0.6 s or more."""
    target = await start_emulator(app=replace(APP, user_authentication_timeout=0.2))

    async def closed_after(delay: float) -> float:
        await asyncio.sleep(delay)
        idle = await connect(target)
        opened = time.monotonic()
        await expect_fatal(idle.ws, 4009, wait=3.0)
        return time.monotonic() - opened

    waits = await asyncio.gather(*(closed_after(0.35 * n) for n in range(3)))
    assert max(waits) < 0.6, waits
