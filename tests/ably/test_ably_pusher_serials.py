"""A Pusher publish as Ably clients see it: the same message an Ably publish is. Its serial comes from the sequence
Ably publishes take theirs from (so a channel's serials keep increasing whichever protocol published), it carries
its id, timestamp and action on delivery, in history and in a rewind, and in a cluster every node has the one the
publishing node made (docs/ably.md#the-shared-channel-space)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import httpx
import pusher  # type: ignore[import-untyped]
from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ably.types.channeloptions import ChannelOptions  # type: ignore[import-untyped]
from ably.types.message import Message, MessageAction  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, MESSAGE, PRESENCE, AblyWire, ably_wire, connected, pusher_wire

from relay.protocol.signing import authorize_channel
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import RunningEmulator, StartEmulator

BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
# Published in this order: Pusher HTTP API (pusher-http-python) and Ably REST (ably-python), interleaved
ORDER = ["p0", "a0", "p1", "a1", "p2"]


def _increasing(serials: list[str]) -> bool:
    return all(isinstance(serial, str) and serial for serial in serials) and all(
        earlier < later for earlier, later in itertools.pairwise(serials)
    )


async def _wire_messages(wire: AblyWire, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages ``wire`` is sent, each with what its ProtocolMessage gives it (TM2: id,
    timestamp, connectionId), as ably-js reads them."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        protocol = await wire.expect(MESSAGE)
        assert {"id", "timestamp", "channelSerial"} <= protocol.keys(), protocol
        for index, item in enumerate(protocol["messages"]):
            assert item["serial"] == f"{protocol['channelSerial']}:{index}"  # an Ably publish's serial
            found.append({"id": f"{protocol['id']}:{index}", "timestamp": protocol["timestamp"], **item})
    return found


async def test_pusher_and_ably_publishes_share_one_sequence_of_serials(ably_emulator: RunningEmulator) -> None:
    """pusher-http-python publishes interleaved with ably-python REST publishes on one channel: an ably-python
    subscriber gets every message with a serial and action message.create, the serials strictly increasing; history
    (ably-python) lists them in that order with the same serials, each with its id and timestamp; a raw subscriber
    sees each Pusher publish's ProtocolMessage built as an Ably publish's is; a rewind sends them all the same."""
    port = ably_emulator.port
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=port, tls=False, use_token_auth=True)
    realtime = AblyRealtime(key=API_KEY, endpoint=f"127.0.0.1:{port}", tls=False)
    backend = pusher.Pusher(APP.app_id, APP.key, APP.secret, host="127.0.0.1", port=port, ssl=False)
    received: asyncio.Queue[Message] = asyncio.Queue()
    wire = await ably_wire(ably_emulator)
    try:
        await connected(realtime)
        await realtime.channels.get("orders").subscribe(received.put_nowait)
        await wire.attach("orders")
        channel = rest.channels.get("orders")
        for name in ORDER:
            if name.startswith("p"):
                await asyncio.to_thread(backend.trigger, "orders", name, {"n": name})
            else:
                await channel.publish(name, {"n": name})
        delivered = [await asyncio.wait_for(received.get(), 5) for _ in ORDER]
        on_the_wire = await _wire_messages(wire, len(ORDER))
        history = (await channel.history(direction="forwards")).items
        rewinding = realtime.channels.get("orders-again", ChannelOptions(params={"rewind": "10"}))
        rewound: asyncio.Queue[Message] = asyncio.Queue()
        for name in ORDER:  # on a channel no one has attached yet: its backlog is all it gets
            if name.startswith("p"):
                await asyncio.to_thread(backend.trigger, "orders-again", name, {"n": name})
            else:
                await rest.channels.get("orders-again").publish(name, {"n": name})
        await rewinding.subscribe(rewound.put_nowait)
        replayed = [await asyncio.wait_for(rewound.get(), 5) for _ in ORDER]
        again = (await rest.channels.get("orders-again").history(direction="forwards")).items
    finally:
        await wire.close()
        await rest.close()
        await realtime.close()

    assert [(m.name, m.data, m.action) for m in delivered] == [
        (name, {"n": name}, MessageAction.MESSAGE_CREATE) for name in ORDER
    ]
    serials = [m.serial for m in delivered]
    assert _increasing(serials), serials
    assert [m.name for m in history] == ORDER
    assert [m.serial for m in history] == serials
    assert all(m.id and m.timestamp and m.action == MessageAction.MESSAGE_CREATE for m in history)
    assert len({m.id for m in history}) == len(ORDER)
    assert [m["name"] for m in on_the_wire] == ORDER
    assert [(m["id"], m["timestamp"], m["serial"]) for m in on_the_wire] == [
        (m.id, m.timestamp, m.serial) for m in history
    ]
    assert [m.name for m in replayed] == ORDER
    assert [(m.serial, m.action) for m in replayed] == [(m.serial, m.action) for m in again]
    assert _increasing([m.serial for m in replayed])


async def test_a_pusher_client_event_is_kept_with_its_serial(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """A Pusher client event reaches an Ably subscriber with its serial and is in history as delivered (its id,
    timestamp, serial, connectionId: the sender's socket, clientId: the member's user id)."""
    ably_side = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    pusher_side = await pusher_wire(ably_emulator)
    wires += [ably_side, pusher_side]
    await ably_side.attach("presence-desk")
    channel_data = '{"user_id":"pat"}'
    auth = authorize_channel("app-key", "app-secret", pusher_side.socket_id, "presence-desk", channel_data=channel_data)
    await pusher_side.send("pusher:subscribe", {"channel": "presence-desk", **auth})
    await pusher_side.expect("pusher_internal:subscription_succeeded")
    await ably_side.expect(PRESENCE)
    await pusher_side.send("client-typing", {"on": True}, channel="presence-desk")
    [delivered] = await _wire_messages(ably_side, 1)
    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
        response = await http.get("/channels/presence-desk/messages", headers=BASIC)
    assert response.status_code == 200, response.text
    assert response.json() == [{**delivered, "connectionId": pusher_side.socket_id}]
    assert delivered["clientId"] == "pat" and delivered["action"] == 0


async def test_every_node_has_the_publishing_node_s_message(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """In a cluster a Pusher publish reaches Ably subscribers on another node, and is in that node's history, as the
    message its own node made (id, timestamp, serial), as an Ably publish does; the serials a subscriber there gets
    keep increasing across Pusher and Ably publishes made on one node."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    far_subscriber = await ably_wire(there)
    near_subscriber = await ably_wire(here)
    wires += [far_subscriber, near_subscriber]
    await far_subscriber.attach("orders")
    await near_subscriber.attach("orders")
    await asyncio.sleep(0.2)  # the attachments are known across the cluster
    backend = pusher.Pusher(APP.app_id, APP.key, APP.secret, host="127.0.0.1", port=here.port, ssl=False)
    async with httpx.AsyncClient(base_url=here.http_url) as near, httpx.AsyncClient(base_url=there.http_url) as far:
        for name in ORDER:
            if name.startswith("p"):
                await asyncio.to_thread(backend.trigger, "orders", name, {"n": name})
            else:
                published = await near.post("/channels/orders/messages", json={"name": name}, headers=BASIC)
                assert published.status_code == 201, published.text
        near_messages = await _wire_messages(near_subscriber, len(ORDER))
        far_messages = await _wire_messages(far_subscriber, len(ORDER))
        histories = []
        for http in (near, far):
            for _ in range(50):
                response = await http.get("/channels/orders/messages?direction=forwards", headers=BASIC)
                assert response.status_code == 200, response.text
                if len(response.json()) == len(ORDER):
                    break
                await asyncio.sleep(0.05)
            histories.append(response.json())
    assert [m["name"] for m in far_messages] == ORDER
    assert far_messages == near_messages
    assert _increasing([m["serial"] for m in far_messages])
    assert histories[0] == histories[1] == near_messages
