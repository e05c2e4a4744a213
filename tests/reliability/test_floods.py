"""Floods from one client get specific errors, and everyone else keeps being served."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

from websockets.asyncio.client import ClientConnection, connect

from relay.protocol.channels import Limits
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.operations.support import eventually


async def open_client(emulator: RunningEmulator) -> ClientConnection:
    ws = await connect(emulator.ws_url(), max_queue=None)
    assert json.loads(await ws.recv())["event"] == "pusher:connection_established"
    return ws


async def frames_until(ws: ClientConnection, done: object, within: float = 10.0) -> list[dict[str, object]]:
    received: list[dict[str, object]] = []
    async with asyncio.timeout(within):
        while True:
            frame = json.loads(await ws.recv())
            received.append(frame)
            if frame == done:
                return received


async def assert_still_served(emulator: RunningEmulator) -> float:
    """A fresh client connects, subscribes and gets a ping answered; returns how long that took."""
    started = time.monotonic()
    bystander = await open_client(emulator)
    await bystander.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "calm"}}))
    assert json.loads(await asyncio.wait_for(bystander.recv(), 2))["event"] == "pusher_internal:subscription_succeeded"
    await bystander.send(json.dumps({"event": "pusher:ping", "data": {}}))
    assert json.loads(await asyncio.wait_for(bystander.recv(), 2)) == {"event": "pusher:pong", "data": {}}
    await bystander.close()
    return time.monotonic() - started


async def test_ten_thousand_subscriptions_stop_at_the_per_connection_limit(start_emulator: StartEmulator) -> None:
    limits = Limits(
        max_subscriptions_per_connection=1_000, inbound_frame_burst=20_000, inbound_frames_per_second=10_000
    )
    emulator = await start_emulator(app=replace(TEST_APP, limits=limits))
    flooder = await open_client(emulator)
    for i in range(10_000):
        await flooder.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": f"c{i}"}}))
    await flooder.send(json.dumps({"event": "pusher:ping", "data": {}}))
    received = await frames_until(flooder, {"event": "pusher:pong", "data": {}})
    succeeded = [f for f in received if f["event"] == "pusher_internal:subscription_succeeded"]
    refused = [f for f in received if f["event"] == "pusher:subscription_error"]
    assert len(succeeded) == 1_000
    assert len(refused) == 9_000
    assert refused[0] == {
        "event": "pusher:subscription_error",
        "channel": "c1000",
        "data": {
            "type": "LimitReached",
            "error": "this connection already has 1000 subscriptions, the limit",
            "status": 4100,
        },
    }
    assert len(emulator.node.states["1"].channels) == 1_000
    assert await assert_still_served(emulator) < 5.0  # served, not starved (each step waits at most 2 s)
    await flooder.close()
    # The close is handled when the server reads it: soon, but not at once on a loaded machine.
    await eventually(lambda: emulator.node.states["1"].channels == {}, what="the flooder's channels to go")


async def test_a_thousand_frames_a_second_are_throttled_without_closing(emulator: RunningEmulator) -> None:
    flooder = await open_client(emulator)
    started = time.monotonic()
    for _ in range(30):  # 3,000 pings at about 1,000/s, however slowly this machine sends them
        for _ in range(100):
            await flooder.send(json.dumps({"event": "pusher:ping", "data": {}}))
        await asyncio.sleep(0.1)
    received = []
    last_heard = started
    while True:
        try:
            # A flooding connection is read ten times a second at most (Session.flood_wait): its frames wait in
            # the kernel, so answers come in bursts a second or so apart until what it sent is read.
            received.append(json.loads(await asyncio.wait_for(flooder.recv(), 2.0)))
        except TimeoutError:
            break
        last_heard = time.monotonic()
    pongs = [f for f in received if f["event"] == "pusher:pong"]
    errors = [f for f in received if f["event"] == "pusher:error"]
    # the burst (1000) plus 100/s for as long as the server was reading what was sent; the rest dropped
    assert 1_000 <= len(pongs) <= 1_000 + 100 * (last_heard - started + 1)
    assert errors
    assert errors[0]["data"] == {"code": 4301, "message": "Too many messages: frames beyond 100/s are dropped"}
    assert len(errors) <= last_heard - started + 1  # at most one error a second: the server does not amplify a flood
    assert flooder.close_code is None
    assert await assert_still_served(emulator) < 5.0
