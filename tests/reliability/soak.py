"""Connection churn with publishes, client events and presence, against an emulator at ``base``.

Shared by the 30-second CI test (tests/reliability/test_soak.py) and the 10-minute soak (bench/soak.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import httpx
from websockets.asyncio.client import connect

from relay.protocol.signing import channel_auth, sign_rest_request


async def _client(ws_url: str, index: int, rounds: int) -> int:
    received = 0
    async with connect(ws_url) as ws:
        socket_id = json.loads(json.loads(await ws.recv())["data"])["socket_id"]
        channel_data = json.dumps({"user_id": f"u{index % 7}"})
        subscriptions = [
            {"channel": f"room-{index % 5}"},
            {"channel": "private-chat", "auth": channel_auth("app-key", "app-secret", socket_id, "private-chat")},
            {
                "channel": "presence-lobby",
                "channel_data": channel_data,
                "auth": channel_auth("app-key", "app-secret", socket_id, "presence-lobby", channel_data),
            },
        ]
        for data in subscriptions:
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": data}))
        for _ in range(rounds):
            await ws.send(json.dumps({"event": "client-typing", "channel": "private-chat", "data": {"i": index}}))
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 0.05)
                    received += 1
            except TimeoutError:
                pass
    return received


async def _publisher(http_url: str, app_id: str, stop_at: float) -> int:
    published = 0
    path = f"/apps/{app_id}/events"
    async with httpx.AsyncClient(base_url=http_url) as client:
        while time.monotonic() < stop_at:
            body = json.dumps({"name": "tick", "channels": [f"room-{published % 5}"], "data": "{}"}).encode()
            params = sign_rest_request("app-key", "app-secret", "POST", path, timestamp=int(time.time()), body=body)
            response = await client.post(path, params=params, content=body)
            response.raise_for_status()
            published += 1
            await asyncio.sleep(0.01)
    return published


async def churn(http_url: str, ws_url: str, *, app_id: str, seconds: float, concurrency: int = 20) -> dict[str, int]:
    """Open, use and close connections for ``seconds``; returns what was done."""
    stop_at = time.monotonic() + seconds
    publisher = asyncio.create_task(_publisher(http_url, app_id, stop_at))
    connections = deliveries = 0
    index = 0
    while time.monotonic() < stop_at:
        batch = [_client(ws_url, index + offset, random.randint(1, 4)) for offset in range(concurrency)]
        index += concurrency
        deliveries += sum(await asyncio.gather(*batch))
        connections += concurrency
    return {"connections": connections, "deliveries": deliveries, "publishes": await publisher}
