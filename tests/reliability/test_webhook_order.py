"""Webhook delivery under failure: in order per webhook, and one receiver that is down holds up only itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from relay.emulator.config import App, Webhook
from tests.conftest import StartEmulator
from tests.webhook_receiver import Receiver, StartReceiver

RECV_TIMEOUT = 2.0


async def open_subscriber(url: str, channel: str) -> ClientConnection:
    ws = await connect(url)
    established = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert established["event"] == "pusher:connection_established"
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        if frame["event"] == "pusher_internal:subscription_succeeded":
            return ws


def hooked_app(*webhooks: Webhook, **fields: Any) -> App:
    settings: dict[str, Any] = {"webhook_batch_ms": 20, "webhook_delay": 0.3, "webhook_retry_for": 10.0}
    settings.update(fields)
    return App(app_id="1", key="app-key", secret="app-secret", webhooks=webhooks, **settings)


async def test_a_retried_batch_is_not_overtaken_by_a_later_one(
    start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Checklist items 83 and 87 (batching keeps events in order): a receiver that answers one 500 gets the
    ``channel_occupied`` batch again ~0.5–1 s later, and the ``channel_vacated`` that came meanwhile only after it
    (requests to one webhook are sent one at a time), so it does not end up believing the channel is occupied."""
    receiver.statuses.append(500)
    emulator = await start_emulator(app=hooked_app(Webhook(url=receiver.url)))
    ws = await open_subscriber(emulator.ws_url(), "room")
    await receiver.wait_for(1)  # the occupied batch, refused with 500
    await ws.close()
    await receiver.until(lambda: len(receiver.events()) >= 3, within=4.0)
    accepted = [event for delivery in receiver.deliveries[1:] for event in delivery.events]
    assert accepted == [
        {"name": "channel_occupied", "channel": "room"},
        {"name": "channel_vacated", "channel": "room"},
    ]


async def test_a_dead_webhook_endpoint_does_not_drop_events_for_a_healthy_one(
    start_emulator: StartEmulator, receiver: Receiver, start_receiver: StartReceiver
) -> None:
    """Item 86: ``webhook_max_pending`` bounds each webhook's queue: events held in retries for a dead endpoint fill
    its own queue only, and a healthy endpoint gets every event."""
    dead = await start_receiver(status=500)
    app = hooked_app(Webhook(url=dead.url), Webhook(url=receiver.url), webhook_max_pending=2, webhook_retry_for=3.0)
    emulator = await start_emulator(app=app)
    opened = []
    for index, channel in enumerate(("c1", "c2", "c3")):
        opened.append(await open_subscriber(emulator.ws_url(), channel))
        with contextlib.suppress(TimeoutError):  # an event the healthy endpoint never gets fails the assert below
            await receiver.wait_for(index + 1)
        await asyncio.sleep(0.1)
    # The isolation was exercised: the dead endpoint is retrying c1's batch (c2 waits behind it), so its queue of
    # two had no room for c3, which was dropped for it alone.
    assert emulator.node.states["1"].webhooks.dropped == 1
    await dead.wait_for(2)
    c1_occupied = [{"name": "channel_occupied", "channel": "c1"}]
    assert [delivery.events for delivery in dead.deliveries[:2]] == [c1_occupied, c1_occupied]
    for ws in opened:
        await ws.close()
    occupied = [e["channel"] for e in receiver.events() if e["name"] == "channel_occupied"]
    assert occupied == ["c1", "c2", "c3"], (
        f"healthy endpoint got {occupied}; dropped={emulator.node.states['1'].webhooks.dropped}"
    )
