"""One channel space from Python: pusher-http-python publishes reach ably-python, ably-python publishes reach a
Pusher connection, a Pusher client event reaches Ably with its user id, and Ably activity drives the app's Pusher
webhooks (channel_occupied/vacated, member_added/removed)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pusher  # type: ignore[import-untyped]
from ably import AblyRealtime  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, MESSAGE, PRESENCE, ably_wire, pusher_wire

from relay.emulator.config import Webhook
from relay.protocol.signing import authorize_channel, sign_rest_request
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver


async def test_pusher_http_python_reaches_ably_python(ably_emulator: RunningEmulator) -> None:
    """``pusher.Pusher.trigger`` (the Pusher HTTP API) → an ably-python subscriber: JSON data arrives decoded
    (``encoding: json``), plain text as text; a ``socket_id`` names the connection it acted for."""
    realtime = AblyRealtime(key=API_KEY, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        channel = realtime.channels.get("orders")
        received: asyncio.Queue[Any] = asyncio.Queue()
        await channel.subscribe(received.put_nowait)
        client = pusher.Pusher(
            app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=ably_emulator.port, ssl=False
        )
        await asyncio.to_thread(client.trigger, "orders", "created", {"id": 3})
        await asyncio.to_thread(client.trigger, "orders", "note", "plain text")
        first, second = [await asyncio.wait_for(received.get(), 3) for _ in range(2)]
        assert (first.name, first.data, second.name, second.data) == ("created", {"id": 3}, "note", "plain text")
    finally:
        await realtime.close()


async def test_client_events_and_ably_publishes_cross(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """A Pusher client event on a presence channel reaches Ably with ``clientId`` = the member's user id and
    ``connectionId`` = the sender's socket; an Ably realtime publish reaches the Pusher connection with ``user_id``."""
    ably_side = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    pusher_side = await pusher_wire(ably_emulator)
    wires += [ably_side, pusher_side]
    await ably_side.attach("presence-desk")
    channel_data = '{"user_id":"pat"}'
    auth = authorize_channel("app-key", "app-secret", pusher_side.socket_id, "presence-desk", channel_data=channel_data)
    await pusher_side.send("pusher:subscribe", {"channel": "presence-desk", **auth})
    await pusher_side.expect("pusher_internal:subscription_succeeded")
    assert (await ably_side.expect(PRESENCE))["presence"][0]["clientId"] == "pat"

    await pusher_side.send("client-typing", {"on": True}, channel="presence-desk")
    message = await ably_side.expect(MESSAGE)
    assert message["connectionId"] == pusher_side.socket_id
    serial = f"{message['channelSerial']}:0"
    assert message["messages"] == [
        {
            "name": "client-typing",
            "action": 0,
            "serial": serial,
            "data": '{"on":true}',
            "encoding": "json",
            "clientId": "pat",
        }
    ]

    await ably_side.publish("presence-desk", {"name": "reply", "data": "hi"})
    event = await pusher_side.expect("reply")
    assert (event["data"], event["user_id"]) == ("hi", "ann")


async def test_ably_activity_drives_pusher_webhooks(start_emulator: Any, receiver: Receiver) -> None:
    """An Ably attachment occupies the channel and an Ably member of a ``presence-`` channel is a member, for the
    app's (Pusher-format) webhooks."""
    app = replace(APP, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=10, webhook_delay=0.05)
    running: RunningEmulator = await start_emulator(app=app)
    wire = await ably_wire(running, f"key={API_KEY}&clientId=ann")
    await wire.attach("presence-hall")
    await wire.presence("presence-hall", {"action": 2, "data": '{"seat":1}', "encoding": "json"})
    await wire.close()
    names = {"channel_occupied", "member_added", "member_removed", "channel_vacated"}
    await receiver.until(lambda: len(receiver.events(names=names)) == 4)
    events = [(event["name"], event.get("user_id")) for event in receiver.events(names=names)]
    assert events == [
        ("channel_occupied", None),
        ("member_added", "ann"),
        ("member_removed", "ann"),
        ("channel_vacated", None),
    ]
    assert all(json.loads(d.body)["events"][0]["channel"] == "presence-hall" for d in receiver.deliveries)


async def test_the_pusher_api_lists_only_channels_it_can_then_describe(
    ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """Ably's names take characters Pusher's do not (``room:1``): GET /channels listed them, and pusher-http-python's
    channel_info() on a listed name then failed (400 from the server, or its own ValueError)."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    for name in ("room:1", "plain-room"):
        await wire.attach(name)
    app = ably_emulator.app
    backend = pusher.Pusher(app.app_id, app.key, app.secret, host="127.0.0.1", port=ably_emulator.port, ssl=False)
    listed = (await asyncio.to_thread(backend.channels_info))["channels"]
    assert list(listed) == ["plain-room"]
    for name in listed:
        assert (await asyncio.to_thread(backend.channel_info, name))["occupied"] is True


async def test_the_pusher_channel_list_is_byte_for_byte_the_json_of_its_sorted_names(
    start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """The listing's body as the compact JSON of ``{"channels": {name: info}}`` in name order (the no-info listing is
    written as text): names Pusher's rules refuse (``room:1``, 201 characters) are left out whichever node holds
    them; another node's channels, a #server-to-user- one among them, are listed, one both hold once."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    wire = await ably_wire(emulator)
    wires.append(wire)
    for name in ("room:1", "b" * 201, "b-news", "a-news"):
        await wire.attach(name)
    state = emulator.node.states[APP.app_id]
    for name, count in (("a-news", 2), ("#server-to-user-ann", 1), ("presence-hall", 2), ("room:2", 1)):
        state.remote_subscriptions(2, name, count)  # as another node's announcement arrives
    state.remote_member_joined(2, "presence-hall", "bob", "{}")

    async def listing(**query: str) -> bytes:
        path = f"/apps/{APP.app_id}/channels"
        params = sign_rest_request(APP.key, APP.secret, "GET", path, timestamp=int(time.time()), params=query)
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(emulator.http_url + path, params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        return answer.content

    assert await listing() == b'{"channels":{"#server-to-user-ann":{},"a-news":{},"b-news":{},"presence-hall":{}}}'
    assert await listing(filter_by_prefix="b") == b'{"channels":{"b-news":{}}}'
    assert await listing(filter_by_prefix="room") == b'{"channels":{}}'
    assert await listing(filter_by_prefix="a-", info="subscription_count") == (
        b'{"channels":{"a-news":{"subscription_count":3}}}'
    )
    assert await listing(filter_by_prefix="presence-", info="subscription_count,user_count") == (
        b'{"channels":{"presence-hall":{"user_count":1,"subscription_count":2}}}'
    )
