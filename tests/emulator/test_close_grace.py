"""Closing the node waits for webhooks in flight once, for all apps together (docs/emulator.md: the drain takes at
most the shutdown delay, the spread, a few seconds and the webhook grace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from relay.emulator.config import App, EmulatorConfig, Webhook
from relay.emulator.server import EmulatorNode

GRACE = 2.0


@pytest.fixture
async def hanging_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A webhook receiver that reads each request and never answers."""
    received: list[bytes] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        await asyncio.sleep(3600)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks", received
    finally:
        server.close()


async def test_the_webhook_grace_is_shared_by_every_app(hanging_receiver: tuple[str, list[bytes]]) -> None:
    url, received = hanging_receiver
    apps = tuple(
        App(app_id=f"app-{n}", key=f"key-{n}", secret=f"secret-{n}", webhooks=(Webhook(url=url),)) for n in range(3)
    )
    node = EmulatorNode(EmulatorConfig(apps=apps))
    await node.start()
    for state in node.states.values():
        state.webhooks.emit({"name": "channel_occupied", "channel": "orders"})
    started = time.monotonic()
    await node.close(webhook_grace=GRACE)
    elapsed = time.monotonic() - started
    assert len(received) == 3, "every app's webhook was being sent when the grace began"
    assert all(b"channel_occupied" in request for request in received)
    # One after another they took three graces (6 s); together they take one, and the bound gives a loaded machine
    # 3 s more while staying under three.
    assert GRACE * 0.9 <= elapsed < GRACE * 2.5
