"""A client that stops reading is cut off with 4100 while a thousand others keep receiving everything."""

from __future__ import annotations

import asyncio
import json

import httpx
from websockets.asyncio.client import ClientConnection, connect

from relay.protocol.signing import sign_rest_request
from tests.conftest import StartEmulator

SUBSCRIBERS = 1_000
PUBLISHES = 20
SEND_BUFFER = 256 * 1024


async def subscriber(url: str, *channels: str, max_queue: int | None = None) -> ClientConnection:
    ws = await connect(url, max_queue=max_queue, compression=None)
    await ws.recv()
    for channel in channels:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await ws.recv()
    return ws


async def publish(client: httpx.AsyncClient, channel: str, data: str) -> None:
    body = json.dumps({"name": "tick", "channel": channel, "data": data}).encode()
    import time

    params = sign_rest_request("app-key", "app-secret", "POST", "/apps/1/events", timestamp=int(time.time()), body=body)
    response = await client.post("/apps/1/events", params=params, content=body)
    assert response.status_code == 200, response.text


async def test_a_stalled_reader_is_disconnected_and_nobody_else_loses_a_message(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(max_send_buffer=SEND_BUFFER)
    url = emulator.ws_url()
    crowd = [await subscriber(url, "news") for _ in range(SUBSCRIBERS)]
    # max_queue=1 and no recv(): websockets stops reading the socket, as a frozen browser tab would.
    stalled = await subscriber(url, "news", "firehose", max_queue=1)
    slow_session = next(s for s in emulator.node.states["1"].peers.values() if "firehose" in s.subscriptions)  # type: ignore[attr-defined]

    async def drain(ws: ClientConnection) -> int:
        count = 0
        while count < PUBLISHES:
            if json.loads(await ws.recv())["event"] == "tick":
                count += 1
        return count

    readers = [asyncio.create_task(drain(ws)) for ws in crowd]
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        big = "x" * 10_000
        for round_ in range(PUBLISHES):
            await publish(client, "news", f"{round_}")
            for _ in range(200):  # ~2 MB a round: the kernel's socket buffers fill first, then ours
                if slow_session.closed:
                    break
                await publish(client, "firehose", big)
    assert slow_session.closed, "the stalled reader was never disconnected"
    counts = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert counts == [PUBLISHES] * SUBSCRIBERS
    # The stalled client finds the reason at the end of what it had not read yet.
    frames: list[dict[str, object]] = []
    try:
        async with asyncio.timeout(5):
            async for message in stalled:
                frames.append(json.loads(message))
    except Exception:
        pass
    assert {
        "event": "pusher:error",
        "data": {"code": 4100, "message": "Over capacity: the client is not reading its messages"},
    } in frames
    assert stalled.close_code == 4100
    for ws in crowd:
        await ws.close()
