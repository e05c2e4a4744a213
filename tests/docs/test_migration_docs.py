"""docs/migration.md's local rehearsal, followed literally: its two emulator commands run (on free ports instead of
6001 and 6002) and its mirror URL publishes to both, one standing for Pusher and one for Ably."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from relay import AsyncRelay
from tests.emulator_process import EmulatorProcess

TEXT = " ".join((Path(__file__).parents[2] / "docs" / "migration.md").read_text().split())  # sentences wrap


async def subscribed(port: int, channel: str) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7")
    assert json.loads(await ws.recv())["event"] == "pusher:connection_established"
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"
    return ws


async def test_the_two_emulator_rehearsal_publishes_to_both() -> None:
    commands = re.findall(r"`relay emulator ([^`]*) --port (600[12])`", TEXT)
    assert [port for _, port in commands] == ["6001", "6002"]
    (url,) = re.findall(r"`(mirror:emulator://[^`]*)`", TEXT)
    emulators = [await EmulatorProcess.start(*args.split()) for args, _ in commands]
    try:
        for emulator, (_, port) in zip(emulators, commands, strict=True):
            url = url.replace(f"127.0.0.1:{port}", f"127.0.0.1:{emulator.port}")
        subscribers = [await subscribed(emulator.port, "orders") for emulator in emulators]
        async with AsyncRelay(url) as relay:
            result = await relay.publish("orders", "order-updated", {"id": 1})
        assert result.channels == ("orders",)
        for ws in subscribers:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (frame["event"], frame["channel"], json.loads(frame["data"])) == (
                "order-updated",
                "orders",
                {"id": 1},
            )
            await ws.close()
    finally:
        for emulator in emulators:
            await emulator.stop()
