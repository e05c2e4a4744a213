"""Ably connections on a cluster of emulator nodes (Redis): a message published on one node reaches Ably subscribers
on another as the same ProtocolMessage (id, extras, binary data), and Pusher subscribers there as Pusher events."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, MESSAGE, ably_wire, pusher_wire

from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import StartEmulator

BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}


async def test_an_ably_publish_reaches_another_node_s_ably_peers_unchanged(
    start_emulator: StartEmulator, redis_server: RedisServer, wires: list[Any]
) -> None:
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    json_peer, binary_peer = await ably_wire(there), await ably_wire(there, binary=True)
    pusher_peer = await pusher_wire(there)
    wires.extend([json_peer, binary_peer, pusher_peer])
    for peer in (json_peer, binary_peer):
        await peer.attach("orders")
    await pusher_peer.send("pusher:subscribe", {"channel": "orders"})
    await pusher_peer.expect("pusher_internal:subscription_succeeded")
    await asyncio.sleep(0.2)  # the nodes' bus subscriptions are live well before this

    batch = [
        {"id": "order-42:0", "name": "status", "data": {"state": "shipped"}, "extras": {"headers": {"trace": "t1"}}},
        {"id": "order-42:1", "name": "eta", "data": "tomorrow"},
    ]
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        published = await http.post("/channels/orders/messages", json=batch, headers=BASIC)
        assert published.status_code == 201, published.text
        blob = await http.post(
            "/channels/orders/messages",
            content=msgpack.packb({"name": "scan", "data": b"\x00\xffpng"}, use_bin_type=True),
            headers={**BASIC, "Content-Type": "application/x-msgpack"},
        )
        assert blob.status_code == 201, blob.text

    for peer in (json_peer, binary_peer):
        first = await peer.expect(MESSAGE)
        assert first["channel"] == "orders"
        assert first["channelSerial"] == published.json()["serials"][0].rpartition(":")[0]
        items = first["messages"]
        assert [item["id"] for item in items] == ["order-42:0", "order-42:1"]
        assert items[0]["extras"] == {"headers": {"trace": "t1"}}
        assert (items[0]["data"], items[0]["encoding"]) == ('{"state":"shipped"}', "json")
        assert items[1]["data"] == "tomorrow"
        binary = (await peer.expect(MESSAGE))["messages"][0]
        if peer.binary:
            assert binary["data"] == b"\x00\xffpng"
        else:  # JSON subscribers get binary data in base64, as on a single node
            assert (binary["data"], binary["encoding"]) == (base64.b64encode(b"\x00\xffpng").decode(), "base64")
    events = [await pusher_peer.expect("status"), await pusher_peer.expect("eta")]
    assert json.loads(events[0]["data"]) == {"state": "shipped"} and events[1]["data"] == "tomorrow"
