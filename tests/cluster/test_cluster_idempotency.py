"""Idempotent publishes across the nodes of a cluster: a resend that a load balancer sends to another node than the
first publish's is answered as the first was and delivered to nobody. Real nodes on a real redis-server, the
library's own client (each with its own memory of keys, as two processes have) and raw signed requests."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace

import httpx
import pytest
import redis.asyncio as aioredis

from relay import AsyncRelay, Event
from relay.emulator.idempotency import batch_identity, events_identity
from relay.errors import IdempotencyKeyReused
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, Nodes
from tests.cluster.test_cluster import nodes as nodes
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, until
from tests.conftest import TEST_APP, RunningEmulator, emulator_url, signed_publish

KEY = "0b6f2d4e-5a1c-4e8f-9d3b-7c2a1e0f4b6d"
REUSED = (
    f"the Relay emulator answered 422: the idempotency key {KEY!r} was used for another publish in the last 120 "
    "seconds: a resend must repeat the same channels, event, data and socket_id; give a new publish a new key"
)


def remembered(node: RunningEmulator, identity: bytes) -> bool:
    """Whether ``node`` remembers the publish ``identity`` (another node's: news crosses Redis)."""
    return identity in node.node.states[node.app.app_id].published_keys


async def subscribed(cluster: list[RunningEmulator], channel: str) -> list[Client]:
    clients = [await Client.open(node) for node in cluster]
    for client in clients:
        await client.subscribe(channel)
    return clients


async def received(client: Client) -> list[tuple[str, object]]:
    """Each event (name, data) the client is sent until it is quiet for 0.4 s, the protocol's own left out."""
    events: list[tuple[str, object]] = []
    while True:
        try:
            frame = await client.recv(0.4)
        except TimeoutError:
            return events
        if not frame["event"].startswith("pusher"):
            events.append((frame["event"], json.loads(frame["data"])))


async def published_on_the_first_of_two(nodes: Nodes) -> tuple[RunningEmulator, list[Client]]:
    """Two nodes with a subscriber of "orders" each, {"id": 1} published there on the first under KEY: the second
    node (which has heard of it) and the subscribers."""
    first, second = await nodes(2)
    watchers = await subscribed([first, second], "orders")
    async with AsyncRelay(emulator_url(first)) as one:
        await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    await until(lambda: remembered(second, events_identity(KEY, ["orders"])))
    return second, watchers


async def test_a_resend_to_another_node_is_delivered_once_on_every_node(nodes: Nodes) -> None:
    second, watchers = await published_on_the_first_of_two(nodes)
    async with AsyncRelay(emulator_url(second)) as other:
        resent = await other.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    assert resent.channels == ("orders",)
    for watcher in watchers:
        assert await received(watcher) == [("created", {"id": 1})]
    assert second.node.states[second.app.app_id].meter.publishes == 0  # the resend was not published there


async def test_another_publish_under_the_key_on_another_node_is_refused_and_not_delivered(nodes: Nodes) -> None:
    second, watchers = await published_on_the_first_of_two(nodes)
    async with AsyncRelay(emulator_url(second)) as other:
        with pytest.raises(IdempotencyKeyReused) as refused:
            await other.publish("orders", "created", {"id": 2}, idempotency_key=KEY)
        assert str(refused.value) == REUSED
        # Other channels under the same key are another publish (a publish over several calls sends one key)
        await other.publish("invoices", "created", {"id": 2}, idempotency_key=KEY)
    for watcher in watchers:
        assert await received(watcher) == [("created", {"id": 1})]


async def test_a_batch_resent_in_parts_to_another_node_is_delivered_once(nodes: Nodes) -> None:
    first, second = await nodes(2)
    watchers = await subscribed([first, second], "orders")
    events = [Event("orders", f"e{index}", {"n": index}) for index in range(15)]
    async with AsyncRelay(emulator_url(first)) as one, AsyncRelay(emulator_url(second)) as other:
        await one.publish_batch(events, idempotency_key=KEY)  # two calls: events 0–9 and 10–14
        await until(lambda: all(remembered(second, batch_identity(part)) for part in (f"{KEY}:0", f"{KEY}:10")))
        await other.publish_batch(events, idempotency_key=KEY)
    async with AsyncRelay(emulator_url(second)) as third:  # a client that has not seen the key: the node refuses
        with pytest.raises(
            IdempotencyKeyReused
        ) as refused:  # another batch under the key: its second part (events 10-14) differs
            await third.publish_batch([*events[:14], Event("orders", "e14", {"n": 0})], idempotency_key=KEY)
        assert str(refused.value).startswith(
            f"the Relay emulator answered 422: the idempotency key '{KEY}:10' was used"
        )
        assert str(refused.value).endswith("(its first call took 10): send only the events from 10 on again")
    for watcher in watchers:
        assert await received(watcher) == [(f"e{index}", {"n": index}) for index in range(15)]


async def test_the_resend_gets_the_first_answer_with_the_counts_the_first_node_gave(nodes: Nodes) -> None:
    first, second = await nodes(2, app=replace(TEST_APP, subscription_count=True))  # info=subscription_count needs it
    await subscribed([first, second], "orders")
    body = json.dumps({"name": "created", "channel": "orders", "data": "{}", "info": "subscription_count"}).encode()
    async with httpx.AsyncClient() as http:
        answer = await http.send(signed_publish(first, "/events", body, KEY))
        assert (answer.status_code, answer.json()) == (200, {"channels": {"orders": {"subscription_count": 2}}})
        await until(lambda: remembered(second, events_identity(KEY, ["orders"])))
        late = await subscribed([second], "orders")
        resent = await http.send(signed_publish(second, "/events", body, KEY))
    assert (resent.status_code, resent.content) == (200, answer.content)
    assert resent.headers["content-type"] == "application/json"
    assert await received(late[0]) == []


async def test_a_node_started_after_the_publish_reads_it_from_redis_and_answers_the_resend(nodes: Nodes) -> None:
    (first,) = await nodes(1)
    async with AsyncRelay(emulator_url(first)) as one:
        await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
        await one.publish("orders", "created", {"id": 2}, idempotency_key="another-key")
    (late,) = await nodes(1)  # it did not hear the news: Redis keeps each keyed publish for the window
    assert remembered(late, events_identity(KEY, ["orders"])) and remembered(
        late, events_identity("another-key", ["orders"])
    )
    watchers = await subscribed([first, late], "orders")
    async with AsyncRelay(emulator_url(late)) as other:
        await other.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
        with pytest.raises(IdempotencyKeyReused):
            await other.publish("orders", "created", {"id": 3}, idempotency_key="another-key")
    for watcher in watchers:
        assert await received(watcher) == []
    assert late.node.states[late.app.app_id].meter.publishes == 0


async def test_a_keyed_publish_is_kept_in_redis_for_the_window_and_no_longer(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    (node,) = await nodes(1)
    async with AsyncRelay(emulator_url(node)) as relay:
        await relay.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    stored = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        identity = events_identity(KEY, ["orders"]).hex()
        deadline = asyncio.get_running_loop().time() + 5
        while not (keys := [key async for key in stored.scan_iter(match=f"*published:1:{identity}")]):
            assert asyncio.get_running_loop().time() < deadline, "the publish was not stored in Redis within 5 s"
            await asyncio.sleep(0.02)
        assert 119_000 < await stored.pttl(keys[0]) <= 120_000
        digest, answer = json.loads(await stored.get(keys[0]))
        assert (len(digest), answer) == (64, "{}")
    finally:
        await stored.aclose()


async def test_a_node_whose_bus_subscription_dropped_reads_the_publishes_it_missed_from_redis(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    """Redis closes a subscriber whose unsent output passes its pubsub limit, and the news it was sending is lost:
    the node reads the keyed publishes from Redis when it subscribes again (as the cache channels' events)."""
    first, second = await nodes(2, app=replace(TEST_APP, limits=replace(TEST_APP.limits, max_event_bytes=100_000)))
    subscription = cluster_of(second)._pubsub
    await redis_command(redis_server, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 1024 0 0")
    async with AsyncRelay(emulator_url(first)) as one:  # past the 16 KiB a subscriber's output buffer holds
        await one.publish("orders", "created", "x" * 25_000, idempotency_key=KEY)
    await until(lambda: cluster_of(second)._pubsub is not subscription)
    await redis_command(redis_server, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 33554432 8388608 60")
    await until(lambda: remembered(second, events_identity(KEY, ["orders"])))


async def test_a_node_reads_thousands_of_keyed_publishes_from_redis_at_start(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    """Stored as the nodes store them (a digest of the body and the answer, for the window), more than one round
    trip's worth: each is answered as its first publish was, the one stored with the least time left too."""
    body = json.dumps({"name": "created", "channel": "orders", "data": "{}"}).encode()
    stored = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with stored.pipeline(transaction=False) as pipe:
            for index in range(2500):
                news = json.dumps([hashlib.sha256(body).digest().hex(), "{}"])
                identity = events_identity(f"key-{index}", ["orders"]).hex()
                pipe.set(f"relay:published:1:{identity}", news, px=120_000 - index)
            await pipe.execute()
    finally:
        await stored.aclose()
    (node,) = await nodes(1)
    assert all(remembered(node, events_identity(f"key-{index}", ["orders"])) for index in range(2500))
    (watcher,) = await subscribed([node], "orders")
    async with httpx.AsyncClient() as http:
        for key in ("key-0", "key-2499"):
            answer = await http.send(signed_publish(node, "/events", body, key))
            assert (answer.status_code, answer.content) == (200, b"{}")
    assert await received(watcher) == []
    assert node.node.states[node.app.app_id].meter.publishes == 0
