"""Cluster webhooks and Redis outages with a real redis-server: held webhooks at a node's graceful shutdown, the
webhook counters and the bus after an outage, subscription_count webhooks."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from pusher.errors import PusherBadStatus  # type: ignore[import-untyped]

from relay.emulator.cluster import RedisCluster
from relay.emulator.config import Webhook
from relay.emulator.shutdown import graceful_shutdown
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver


def hooked(receiver: Receiver, **options: Any) -> Any:
    return replace(TEST_APP, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=10, webhook_delay=0.3, **options)


async def until(predicate: Any, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def cluster_of(node: RunningEmulator) -> RedisCluster:
    cluster = node.node.cluster
    assert cluster is not None
    return cluster


def counts_in(cluster: RedisCluster, pipe: Any) -> list[tuple[Any, ...]]:
    """The webhook counts a round trip about to be sent holds (each count script's EVALSHA arguments: number of keys,
    keys, then ARGV), for a test that puts a Redis fault where counts are sent (:meth:`RedisCluster._send`)."""
    sha = cluster._count_script.sha
    return [args[2:] for args, _ in pipe.command_stack if args[:2] == ("EVALSHA", sha)]


async def test_cluster_node_graceful_shutdown_sends_the_vacated_and_member_removed_webhooks(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """docs/emulator.md "Graceful shutdown" step 5: the held channel_vacated/member_removed webhooks are sent, on a
    cluster node too (the node runs its queued vacates and releases what it holds before it leaves Redis)."""
    (node,) = [await start_emulator(app=hooked(receiver), redis_url=redis_server.url)]
    client = await Client.open(node)
    await client.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) == 1, within=3)
    await graceful_shutdown(node.node, None, spread=0, webhook_grace=2)
    await asyncio.sleep(1.5)  # five times webhook_delay: even a late release would have arrived
    names = sorted(event["name"] for event in receiver.events())
    assert names == ["channel_occupied", "channel_vacated", "member_added", "member_removed"]


async def test_a_channel_occupied_during_a_redis_outage_is_vacated_once_cluster_wide(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """docs/emulator.md "During a Redis outage": on reconnection each node corrects the webhook counters from what it
    really holds, and what changed during the outage is not replayed on top (it would count the channel twice, and
    the last leave would never make channel_vacated / member_removed)."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    cluster = cluster_of(node)
    redis_server.stop()
    await until(lambda: not cluster._connected.is_set())
    client = await Client.open(node)
    await client.subscribe("presence-during-outage", "alice")
    redis_server.start()
    await until(lambda: cluster._connected.is_set() and cluster._queue.empty())  # it reconciles before it connects
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    occupancy = await check.hget("relay:occ:1", "presence-during-outage")
    await check.aclose()
    assert occupancy == "1"  # the one node holding it, counted once
    await client.ws.close()
    await receiver.until(lambda: {"channel_vacated", "member_removed"} <= set(receiver.event_names()), within=3)
    await receiver.quiet(len(receiver.deliveries), 1.0)  # three times webhook_delay: a late duplicate would be here
    names = sorted(receiver.event_names())
    assert names == ["channel_occupied", "channel_vacated", "member_added", "member_removed"]  # each exactly once


async def test_publishes_made_during_a_redis_outage_are_not_sent_on_the_bus_after_it(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """docs/emulator.md: "publishes and client events made during the outage do not reach other nodes (they are not
    queued)": nothing is held for the bus while Redis is away (memory stays bounded) and nothing stale is published
    once the node is back. Watched on the bus itself, which a raw subscriber joins before the node reconnects."""
    (a,) = [await start_emulator(redis_url=redis_server.url)]
    on_a = await Client.open(a)
    await on_a.subscribe("news")
    redis_server.stop()
    await until(lambda: not cluster_of(a)._connected.is_set())
    await asyncio.to_thread(sdk(a).trigger, "news", "during-outage", "x")
    await on_a.expect("during-outage")
    await asyncio.sleep(1.0)  # the node's back-off is now past 0.4 s
    redis_server.start()
    watcher = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    bus = watcher.pubsub(ignore_subscribe_messages=True)
    await bus.subscribe("relay:bus")
    await until(lambda: cluster_of(a)._connected.is_set() and cluster_of(a)._queue.empty())
    messages: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline:
        message = await bus.get_message(timeout=0.1)
        if message is not None:
            messages.append(message["data"])
    await bus.aclose()
    await watcher.aclose()
    assert [text for text in messages if "during-outage" in text] == []


async def test_terminate_connections_during_a_redis_outage_answers_503_and_succeeds_once_redis_is_back(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """terminate_connections, a security action, used to answer 200 during an outage though the user's connections
    on the other nodes stayed open (the operation is dropped while Redis is away). It now closes this node's and
    answers 503, so the caller retries; once Redis is back the retry reaches every node."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    on_a, on_b = await Client.open(a), await Client.open(b)
    for client in (on_a, on_b):
        await client.sign_in("42")
    redis_server.stop()
    await until(lambda: not cluster_of(a)._connected.is_set())
    with pytest.raises(PusherBadStatus, match=r"^503: .*Redis is unavailable"):
        await asyncio.to_thread(sdk(a).terminate_user_connections, "42")
    assert (await on_a.expect("pusher:error"))["data"]["code"] == 4009
    await on_b.silent()
    redis_server.start()
    await until(lambda: cluster_of(a)._connected.is_set() and cluster_of(b)._connected.is_set())
    await asyncio.to_thread(sdk(a).terminate_user_connections, "42")
    assert (await on_b.expect("pusher:error"))["data"]["code"] == 4009


async def test_subscription_count_webhook_is_sent_with_a_cluster(
    redis_server: RedisServer, receiver: Receiver, start_emulator: StartEmulator
) -> None:
    """docs/configuration.md: ``subscription_count`` sends "pusher:subscription_count and its webhook": on a cluster
    node too (the node whose subscribers changed sends it)."""
    node = await start_emulator(app=hooked(receiver, subscription_count=True), redis_url=redis_server.url)
    first, second = await Client.open(node), await Client.open(node)
    await first.subscribe("news")
    await second.subscribe("news")
    assert json.loads((await first.expect("pusher_internal:subscription_count"))["data"])["subscription_count"] >= 1
    await receiver.until(lambda: "subscription_count" in {event["name"] for event in receiver.events()}, within=3)


async def test_one_cache_miss_webhook_for_the_whole_cluster_and_a_fill_re_arms_it(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Subscribers missing an empty cache channel on two nodes bring one cache_miss webhook, not one per node; a
    publish that fills the cache (on either node) re-arms it cluster-wide, so the next miss is posted at once."""
    app = replace(hooked(receiver), webhooks=(Webhook(url=receiver.url, event_types=frozenset({"cache_miss"})),))
    a, b = [await start_emulator(app=replace(app, cache_ttl=0.5), redis_url=redis_server.url) for _ in range(2)]
    for node in (a, b, a, b):
        client = await Client.open(node)
        await client.subscribe("cache-score")
        await client.expect("pusher:cache_miss")
    await receiver.until(lambda: len(receiver.events()) == 1, within=3)
    await receiver.quiet(1, 0.3)

    await asyncio.to_thread(sdk(a).trigger, "cache-score", "score", "1-0")
    # b times the cached event from when the publish reaches it over Redis; the test waits for both ends.
    on_b = b.node.states["1"]
    await until(lambda: "cache-score" in on_b.cache)
    await until(lambda: on_b.cached("cache-score") is None)
    late = await Client.open(b)
    await late.subscribe("cache-score")
    await late.expect("pusher:cache_miss")
    await receiver.until(lambda: len(receiver.events()) == 2, within=3)
    assert receiver.events() == [{"name": "cache_miss", "channel": "cache-score"}] * 2


async def test_a_command_redis_refuses_does_not_lose_what_the_rest_of_its_round_trip_did(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's commands share one round trip, and Redis runs them all: one refused (a count on a key someone
    overwrote, WRONGTYPE) made the node throw every reply away, so a release in the same round trip, which had deleted
    its hold in Redis, never sent its channel_vacated (nor left a hold for another node to send)."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    cluster = cluster_of(node)
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await check.set("relay:mem:1:presence-overwritten", "not a hash")
    await check.aclose()
    leaving, joining = await Client.open(node), await Client.open(node)
    await leaving.subscribe("news")
    await receiver.until(lambda: receiver.event_names() == ["channel_occupied"], within=3)
    gate = asyncio.Event()
    send = cluster._send

    async def held(pipe: Any) -> list[Any]:
        await gate.wait()
        return await send(pipe)

    await leaving.send("pusher:unsubscribe", {"channel": "news"})
    await until(lambda: bool(cluster._held))  # counted out: channel_vacated is held 0.3 s
    monkeypatch.setattr(cluster, "_send", held)  # round trips wait: what is queued meanwhile goes in one batch
    await asyncio.to_thread(sdk(node).trigger, "elsewhere", "tick", "x")  # a round trip, waiting at the gate
    await asyncio.sleep(0.5)  # the hold's release is queued behind it
    await joining.subscribe("presence-overwritten", "alice")  # decided by the node alone once Redis refuses it
    gate.set()
    await receiver.until(lambda: "channel_vacated" in receiver.event_names(), within=5)
    await receiver.quiet(len(receiver.deliveries), 1.0)
    news = [event["name"] for event in receiver.events() if event["channel"] == "news"]
    assert news == ["channel_occupied", "channel_vacated"], receiver.events()
