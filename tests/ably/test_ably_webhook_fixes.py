"""Ably-format webhooks' channel.message items for Pusher client events (docs/emulator.md, ``format = "ably"``): the
message is the one the channel's Ably subscribers get (reference §D.9: the raw Message with its id), so a handler
de-duplicates on its id and decodes it as a subscriber does (``encoding: json`` for JSON data, docs/ably.md)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections import deque
from dataclasses import replace
from typing import Any

import httpx
from ably import AblyRealtime  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, connected, pusher_wire

from relay import Relay
from relay.emulator.config import Webhook
from relay.emulator.webhooks import WebhookEvent, _next_request, ably_items
from relay.gateway.guards import MAX_BODY_BYTES
from relay.protocol.frames import dumps
from tests.conftest import StartEmulator
from tests.webhook_receiver import Receiver


async def test_a_client_events_webhook_message_is_the_one_ably_subscribers_get(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """A Pusher client's client events, JSON and not, reach an ably-python subscriber and an Ably-format webhook:
    the item's message has the subscriber's id, and ``Message.from_encoded`` gives it the subscriber's data (a dict
    for JSON, with ``encoding: json``; text as text). relay's ``verify_webhook`` still gives the data as sent, and a
    Pusher-format webhook beside it gets Pusher's client_event, nothing of Ably's."""
    hooks = (Webhook(url=f"{receiver.url}/ably", format="ably"), Webhook(url=f"{receiver.url}/pusher"))
    running = await start_emulator(app=replace(APP, webhooks=hooks))
    realtime = AblyRealtime(key=API_KEY, endpoint=f"127.0.0.1:{running.port}", tls=False)
    try:
        await connected(realtime)
        received: asyncio.Queue[Any] = asyncio.Queue()
        await realtime.channels.get("private-chat").subscribe(received.put_nowait)
        pusher = await pusher_wire(running)
        wires.append(pusher)
        await pusher.subscribe_private("private-chat")
        await pusher.send("client-typing", {"who": "bo"}, channel="private-chat")
        await pusher.send("client-note", "plain text", channel="private-chat")
        typing, note = [await asyncio.wait_for(received.get(), 3) for _ in range(2)]
    finally:
        await realtime.close()

    def items() -> list[dict[str, Any]]:
        return [
            message
            for delivery in receiver.deliveries
            if delivery.path == "/ably"
            for item in json.loads(delivery.body)["items"]
            if item["name"] == "channel.message"
            for message in item["data"]["messages"]
        ]

    await receiver.until(lambda: len(items()) >= 2, within=5)
    sent_typing, sent_note = items()
    assert (typing.data, note.data) == ({"who": "bo"}, "plain text")  # as the subscriber decoded them
    assert sent_typing["id"] == typing.id and sent_note["id"] == note.id
    assert sent_typing["encoding"] == "json" and "encoding" not in sent_note
    assert (sent_typing["connectionId"], sent_typing["timestamp"]) == (pusher.socket_id, typing.timestamp)
    assert Message.from_encoded(sent_typing).data == {"who": "bo"}
    assert Message.from_encoded(sent_note).data == "plain text"

    # docs/emulator.md: verify_webhook gives a message's data as sent, the JSON text for JSON
    relay = Relay.from_url(f"ably://{APP.ably_api_key}@127.0.0.1:{running.port}?tls=false")
    verified = [
        (event.event, event.data, event.socket_id)
        for delivery in receiver.deliveries
        if delivery.path == "/ably"
        for event in relay.verify_webhook(delivery.headers, delivery.body)
        if event.kind == "message"
    ]
    assert verified == [
        ("client-typing", '{"who":"bo"}', pusher.socket_id),
        ("client-note", "plain text", pusher.socket_id),
    ]

    await receiver.until(lambda: len(receiver.events("/pusher", {"client_event"})) >= 2, within=5)
    assert receiver.events("/pusher", {"client_event"})[0] == {
        "name": "client_event",
        "channel": "private-chat",
        "event": "client-typing",
        "data": '{"who":"bo"}',
        "socket_id": pusher.socket_id,
    }


async def test_a_burst_of_large_messages_goes_out_in_requests_a_1_mib_body_limit_takes(
    receiver: Receiver, start_emulator: StartEmulator
) -> None:
    """Up to 1,000 items went in one request whatever their size: twenty 60 KB messages published together made a
    1.2 MB body, which relay serve's /v1/webhooks (and Next.js's route handlers) refused with 413 at every retry,
    until all of it was dropped, the small message too. Now each request's body stays within 1 MiB, in order."""
    hook = Webhook(url=receiver.url, format="ably", event_types=frozenset({"message"}))
    # A window that holds the 21 publishes on a loaded machine too (at 500 ms one run split them in three requests)
    running = await start_emulator(app=replace(APP, webhooks=(hook,), webhook_batch_ms=2_000))
    basic = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
    names = ["small", *(f"large-{number}" for number in range(20))]
    async with httpx.AsyncClient(base_url=running.http_url, headers=basic) as http:
        for name in names:  # within the batch window: one flush holds them all
            data = "x" if name == "small" else "y" * 60_000
            answer = await http.post("/channels/orders/messages", json={"name": name, "data": data})
            assert answer.status_code == 201, answer.text

    def sent() -> list[str]:
        return [
            message["name"]
            for delivery in receiver.deliveries
            for item in json.loads(delivery.body)["items"]
            for message in item["data"]["messages"]
        ]

    await receiver.until(lambda: len(sent()) == len(names), within=10)
    assert sent() == names
    assert len(receiver.deliveries) == 2
    assert all(len(delivery.body) <= MAX_BODY_BYTES for delivery in receiver.deliveries)


def test_lifecycle_items_of_long_channel_names_stay_within_a_1_mib_body() -> None:
    """A lifecycle item carries its channel twice more (channelId, name) and a ChannelStatus: counted as the event's
    JSON and 256 bytes, 1,000 vacates of 400-character channels made a 1.18 MB request, refused by a 1 MiB limit at
    every retry."""
    status = {"isActive": False, "occupancy": {"metrics": dict.fromkeys(("connections", "presenceConnections",
        "presenceMembers", "presenceSubscribers", "publishers", "subscribers", "objectPublishers",
        "objectSubscribers"), 0)}}  # fmt: skip
    for length in (200, 400, 2_040):
        outbox: deque[WebhookEvent] = deque(
            {"name": "channel_vacated", "channel": f"{number:08d}" + "c" * length} for number in range(1_000)
        )
        serials = (f"{number:016x}" for number in itertools.count())
        while outbox:
            events = _next_request(outbox, "ably")
            items = ably_items(events, serials, lambda channel, opened: status)
            body = dumps({"items": [{**item, "timestamp": 1_800_000_000_000} for item in items]}).encode()
            assert len(body) <= MAX_BODY_BYTES, (length, len(events), len(body))
