"""Cluster faults found by a hunt with real nodes and a real redis-server, around Redis outages and bus resyncs: a
cache channel's event published during an outage, a subscription_count webhook and a cache_miss webhook due during
one, a presence member's info on a second node, and the count frames a resync repeated."""

from __future__ import annotations

import asyncio
import json

import pytest

from relay.protocol.signing import channel_auth
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_failure_hunt_fixes import counts_sent, sees_count
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver


async def outage(redis_server: RedisServer, nodes: list[RunningEmulator]) -> None:
    redis_server.stop()
    await until(lambda: not any(cluster_of(node)._connected.is_set() for node in nodes))


async def back(redis_server: RedisServer, nodes: list[RunningEmulator]) -> None:
    redis_server.start()
    await until(lambda: all(cluster_of(node)._connected.is_set() for node in nodes))


async def test_a_cache_event_published_during_an_outage_reaches_the_nodes_back_before_its_own(
    redis_server: RedisServer, start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b stored "42" while Redis was away, a kept "41". a came back first and wrote "41" back; b then wrote "42"
    over it (the newer) and told no one: a's subscribers got "41" for the cache's 30 minutes."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    await asyncio.to_thread(sdk(a).trigger, "cache-price", "tick", "41")
    await until(lambda: b.node.states["1"].cached("cache-price") == ("tick", "41"))
    await outage(redis_server, [a, b])
    await asyncio.to_thread(sdk(b).trigger, "cache-price", "tick", "42")
    register = cluster_of(b)._register

    async def after_a() -> None:
        await until(lambda: cluster_of(a)._connected.is_set())
        await register()

    monkeypatch.setattr(cluster_of(b), "_register", after_a)
    await back(redis_server, [a, b])
    await until(lambda: a.node.states["1"].cached("cache-price") == ("tick", "42"), within=5)
    late = await Client.open(a)
    await late.subscribe("cache-price")
    assert (await late.expect("tick"))["data"] == "42"


async def test_a_count_changed_during_an_outage_is_sent_when_redis_is_back_on_a_quiet_node(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """The count was noted and the writer woken with a no-op that the outage dropped: the webhook waited for the
    node's next cluster operation, which on a quiet node may never come."""
    node = await start_emulator(app=hooked(receiver, subscription_count=True), redis_url=redis_server.url)
    await outage(redis_server, [node])
    client = await Client.open(node)
    await client.subscribe("news")
    await asyncio.sleep(0.3)
    assert counts_sent(receiver) == []
    await back(redis_server, [node])
    await receiver.until(lambda: counts_sent(receiver) == [1], within=5)


async def test_a_cache_miss_during_an_outage_is_told_by_the_node_alone(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """The claim that makes one node of the cluster send it was dropped with Redis away, and the webhook with it."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    await outage(redis_server, [node])
    client = await Client.open(node)
    await client.subscribe("cache-empty")
    await client.expect("pusher:cache_miss")
    await receiver.until(lambda: receiver.events(names={"cache_miss"}) != [], within=5)
    assert [event["channel"] for event in receiver.events(names={"cache_miss"})] == ["cache-empty"]


async def join(client: Client, channel: str, user_id: str, name: str) -> dict[str, object]:
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": name}})
    auth = channel_auth("app-key", "app-secret", client.socket_id, channel, channel_data)
    await client.send("pusher:subscribe", {"channel": channel, "channel_data": channel_data, "auth": auth})
    succeeded = await client.expect("pusher_internal:subscription_succeeded")
    hash_: dict[str, object] = json.loads(succeeded["data"])["presence"]["hash"]
    return hash_


async def test_a_member_s_info_is_its_first_connection_s_on_every_node(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """alice joined on a as "first", then on b as "second": b's subscribers saw "second", a's "first"."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    await join(await Client.open(a), "presence-room", "alice", "first")
    watcher = await Client.open(b)
    assert await join(watcher, "presence-room", "bob", "Bob") == {"alice": {"name": "first"}, "bob": {"name": "Bob"}}
    await join(await Client.open(b), "presence-room", "alice", "second")
    await watcher.silent()  # alice was a member already: no member_added
    for node in (a, b):
        joined = await join(await Client.open(node), "presence-room", "carol", "Carol")
        assert joined["alice"] == {"name": "first"}


async def test_a_resync_repeats_no_subscription_count_frame(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A dropped bus subscription makes each node read the others' counts again: every subscriber got the same
    subscription_count frame again, once per node re-read, and pusher-js's handlers ran each time."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    on_a, on_b = await Client.open(a), await Client.open(b)
    await on_a.subscribe("news")
    await on_b.subscribe("news")
    await sees_count(on_a, 2)
    await sees_count(on_b, 2)
    subscriptions = [cluster_of(node)._pubsub for node in (a, b)]
    await redis_command(redis_server, "CLIENT", "KILL", "TYPE", "pubsub")
    await until(
        lambda: all(cluster_of(node)._pubsub is not old for node, old in zip((a, b), subscriptions, strict=True))
    )
    await on_a.silent(1.0)
    await on_b.silent(1.0)


async def test_a_cache_event_announced_at_a_reconciliation_keeps_the_node_that_published_it(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """Each node announced the events it held as its own: the others took (ms, announcer) for newer than the
    (ms, publisher) they held, and two events of one millisecond could then be ordered differently by the nodes
    and Redis."""
    nodes = [await start_emulator(redis_url=redis_server.url) for _ in range(3)]
    nodes.sort(key=lambda node: node.node.node_id)  # the publisher's id the lowest: any other is "newer"
    await asyncio.to_thread(sdk(nodes[0]).trigger, "cache-price", "tick", "41")
    await until(lambda: all(node.node.states["1"].cached("cache-price") for node in nodes))
    version = nodes[0].node.states["1"].cache["cache-price"][3]
    assert version[1] == cluster_of(nodes[0]).node_id
    await outage(redis_server, nodes)
    await back(redis_server, nodes)
    await asyncio.sleep(0.3)  # every node's announcement has come
    assert [node.node.states["1"].cache["cache-price"][3] for node in nodes] == [version] * 3
