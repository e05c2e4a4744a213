"""Found hunting webhook bugs in a cluster, with real redis-server, emulator nodes, WebSocket clients and an HTTP
receiver: each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from relay.emulator.config import Webhook
from tests.ably.ablysupport import API_KEY, ATTACH, DETACH, ably_wire
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_failure_hunt_fixes import counts_sent
from tests.cluster.test_cluster_subscription_counts import hold_bus
from tests.cluster.test_cluster_webhooks import cluster_of, until
from tests.conftest import TEST_APP, StartEmulator
from tests.webhook_receiver import Receiver


async def test_a_channel_s_first_subscriber_brings_channel_occupied_before_its_subscription_count(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A cluster node sends a subscription_count webhook when its count announcement comes back over Redis's bus,
    which came before Redis's answer to the count that opens the channel: the receiver was told of a channel's
    subscribers before it was told the channel is occupied. On a single node channel_occupied comes first."""
    hooks = {
        node: replace(
            TEST_APP, subscription_count=True, webhook_batch_ms=10, webhooks=(Webhook(url=f"{receiver.url}/{node}"),)
        )
        for node in "ab"
    }
    a = await start_emulator(app=hooks["a"], redis_url=redis_server.url)
    b = await start_emulator(app=hooks["b"], redis_url=redis_server.url)
    for number in range(5):
        on_a = await Client.open(a)
        await on_a.subscribe(f"news-{number}")
        await receiver.until(lambda n=number: len(receiver.events("/a")) == 2 * n + 2, within=3)
        on_b = await Client.open(b)
        await on_b.subscribe(f"news-{number}")
        await receiver.until(lambda n=number: len(receiver.events("/b")) == n + 1, within=3)
    for number in range(5):
        assert receiver.events("/a")[2 * number : 2 * number + 2] == [
            {"name": "channel_occupied", "channel": f"news-{number}"},
            {"name": "subscription_count", "channel": f"news-{number}", "subscription_count": 1},
        ]
        assert receiver.events("/b")[number] == {
            "name": "subscription_count",
            "channel": f"news-{number}",
            "subscription_count": 2,
        }


async def test_a_client_event_sent_at_once_after_subscribing_comes_after_its_channel_s_occupied_and_member_added(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A cluster node sends channel_occupied and member_added once Redis has answered its counts, and sent a client
    event's webhook at once: a client event sent as soon as its subscription succeeded reached the receiver before
    its channel was occupied and its sender a member. On a single node they come first, as here now."""
    app = replace(TEST_APP, webhook_batch_ms=50, webhooks=(Webhook(url=receiver.url),))
    node = await start_emulator(app=app, redis_url=redis_server.url)
    for channel, user_id in [("presence-room", "alice"), ("private-room", None)]:
        client = await Client.open(node)
        await client.subscribe(channel, user_id)
        await client.send("client-typing", {"typing": True}, channel)
    await receiver.until(lambda: len(receiver.events()) == 5, within=3)
    socket_ids = {event["channel"]: event["socket_id"] for event in receiver.events(names={"client_event"})}
    assert [event for event in receiver.events() if event["channel"] == "presence-room"] == [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "alice"},
        {
            "name": "client_event",
            "channel": "presence-room",
            "event": "client-typing",
            "data": '{"typing":true}',
            "socket_id": socket_ids["presence-room"],
            "user_id": "alice",
        },
    ]
    assert [event["name"] for event in receiver.events() if event["channel"] == "private-room"] == [
        "channel_occupied",
        "client_event",
    ]


async def test_a_count_echoed_after_its_node_s_subscriber_left_still_brings_its_webhook(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count that comes back over a slow bus after Redis counted its node's subscriber out again (it came and went)
    has no count of its channel to wait for: its webhook goes at once, not when the node next opens the channel."""
    app = replace(TEST_APP, subscription_count=True, webhook_batch_ms=10, webhooks=(Webhook(url=receiver.url),))
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    on_b = await Client.open(b)
    await on_b.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1], within=3)
    release = hold_bus(a, monkeypatch)
    on_a = await Client.open(a)
    await on_a.subscribe("news")
    await on_a.ws.close()
    await until(lambda: "news" not in a.node.states[TEST_APP.app_id].channels and cluster_of(a)._queue.empty())
    await asyncio.sleep(0.3)  # Redis has counted a's subscriber in and out; its two counts wait on the bus
    release()
    await receiver.until(lambda: counts_sent(receiver) == [1, 2, 1], within=3)


def ably_items(receiver: Receiver, path: str) -> list[tuple[str, str]]:
    """The Ably-format items received at ``path``, in order: (name, channel)."""
    return [
        (item["name"], item["data"]["channelId"])
        for delivery in receiver.deliveries
        if delivery.path == path
        for item in json.loads(delivery.body)["items"]
    ]


async def test_an_ably_format_webhook_hears_of_a_channel_s_opening_before_its_presence_and_messages(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A cluster node sends channel.opened once Redis has answered its count of the channel, and sent the presence
    and message items of the channel at once: an Ably-format receiver heard of a Pusher member entering, or of an Ably
    client's presence and publish sent with its ATTACH, in a channel not yet opened. On a single node, and now in a
    cluster, channel.opened comes first."""
    hooks = {
        node: replace(TEST_APP, webhook_batch_ms=50, webhooks=(Webhook(url=f"{receiver.url}/{node}", format="ably"),))
        for node in "ab"
    }
    a = await start_emulator(app=hooks["a"], redis_url=redis_server.url)
    b = await start_emulator(app=hooks["b"], redis_url=redis_server.url)
    pusher = await Client.open(a)
    ann = await ably_wire(b, f"key={API_KEY}&clientId=ann")
    try:
        await pusher.subscribe("presence-room", "alice")
        await ann.send({"action": ATTACH, "channel": "lobby"})
        await ann.presence("lobby", {"action": 2, "data": "hi"})  # ENTER, sent with the ATTACH as ably-js may
        await ann.send({"action": ATTACH, "channel": "news"})
        await ann.publish("news", {"name": "headline", "data": "x"})
        await receiver.until(lambda: len(ably_items(receiver, "/a")) == 2 and len(ably_items(receiver, "/b")) == 4, 3)
    finally:
        await pusher.ws.close()
        await ann.ws.close()
    assert ably_items(receiver, "/a") == [("channel.opened", "presence-room"), ("presence.message", "presence-room")]
    assert ably_items(receiver, "/b") == [
        ("channel.opened", "lobby"),
        ("presence.message", "lobby"),
        ("channel.opened", "news"),
        ("channel.message", "news"),
    ]


async def test_a_message_item_of_a_channel_left_before_redis_counted_it_waits_behind_its_first(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A publish on a channel its node no longer holds has no count of the channel to wait for, but must not pass the
    webhooks still waiting for one: an Ably client publishing on a channel it attached, detached and published on
    again (as Ably allows, unattached) before Redis counted it had its second message reach the receiver first."""
    app = replace(
        TEST_APP, webhook_batch_ms=50, webhook_delay=0.2, webhooks=(Webhook(url=receiver.url, format="ably"),)
    )
    node = await start_emulator(app=app, redis_url=redis_server.url)
    ann = await ably_wire(node, f"key={API_KEY}&clientId=ann")
    try:
        await ann.send({"action": ATTACH, "channel": "news"})
        await ann.publish("news", {"name": "first", "data": "x"})
        await ann.send({"action": DETACH, "channel": "news"})
        await ann.publish("news", {"name": "second", "data": "x"})
        await receiver.until(lambda: len(ably_items(receiver, "/")) == 4, within=3)
    finally:
        await ann.ws.close()
    names = [
        (item["name"], item["data"]["messages"][0]["name"] if "messages" in item["data"] else None)
        for delivery in receiver.deliveries
        for item in json.loads(delivery.body)["items"]
    ]
    assert names == [
        ("channel.opened", None),
        ("channel.message", "first"),
        ("channel.message", "second"),
        ("channel.closed", None),
    ]
