"""Cluster consistency with a real redis-server and real nodes: a cache channel's newest event wins on every node and
in Redis, whatever order the nodes' writes arrive in; publishes the bus lost are logged and counted; a presence
channel's first member brings channel_occupied before member_added."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest

from relay.emulator import cluster as cluster_module
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_held_webhooks import APP_TWO
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_presence_admission import send_join
from tests.cluster.test_cluster_webhooks import cluster_of, hooked, until
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.operations.test_metrics import scrape
from tests.webhook_receiver import Receiver


async def started(redis_server: RedisServer, start_emulator: StartEmulator, count: int) -> list[RunningEmulator]:
    return [await start_emulator(redis_url=redis_server.url) for _ in range(count)]


async def stored_event(redis_server: RedisServer, channel: str) -> list[str]:
    value = await redis_command(redis_server, "GET", f"relay:cache:1:{channel}")
    assert isinstance(value, str)
    stored: list[str] = json.loads(value)
    return stored


async def crossed(sender: RunningEmulator, receiver: RunningEmulator) -> None:
    """Wait until what ``sender`` wrote to Redis so far has reached ``receiver``: the bus delivers one node's messages
    in the order it sent them, so a publish sent after them arrives after them."""
    watcher = await Client.open(receiver)
    await watcher.subscribe("crossed")
    await asyncio.to_thread(sdk(sender).trigger, "crossed", "mark", "1")
    await watcher.expect("mark")
    await watcher.ws.close()


async def test_an_older_cache_event_written_last_leaves_the_newer_one_on_every_node_and_in_redis(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """Two nodes publishing to one cache channel at once: b's publish, made first, reached Redis (and a) after a's.
    Each write set the key and each announcement replaced the other node's copy, so Redis and a kept b's older event
    while b kept a's newer one, and new subscribers got either depending on their node. The newer version stays."""
    a, b = await started(redis_server, start_emulator, 2)
    on_a, on_b = a.node.states["1"], b.node.states["1"]
    older = (int(time.time() * 1000) - 5_000, b.node.node_id)
    on_b.cache_store("cache-price", "tick", "older", 60, older)  # b's publish, its write to Redis still queued
    await asyncio.to_thread(sdk(a).trigger, "cache-price", "tick", "newer")
    await until(lambda: on_b.cached("cache-price") == ("tick", "newer"))
    cluster_of(b).cache_set("1", "cache-price", "tick", "older", 60, older)  # b's write, arriving last
    await crossed(b, a)
    assert await stored_event(redis_server, "cache-price") == ["cache-price", "tick", "newer"]
    assert on_a.cached("cache-price") == on_b.cached("cache-price") == ("tick", "newer")
    (later,) = await started(redis_server, start_emulator, 1)
    client = await Client.open(later)
    await client.subscribe("cache-price")
    assert (await client.expect("tick"))["data"] == "newer"


async def test_each_publish_in_turn_on_two_nodes_is_the_one_kept_though_one_clock_is_a_minute_behind(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """A publish made after a node got another node's event supersedes it, even from a node whose clock is behind:
    its version is past the one it holds. Every node and Redis keep the last publish of the sequence."""
    a, b = await started(redis_server, start_emulator, 2)
    a.node.states["1"].wall_clock = lambda: time.time() - 60
    for number, node in enumerate([a, b, a, b, a]):
        published = ("score", str(number))
        await asyncio.to_thread(sdk(node).trigger, "cache-score", *published)
        for each in (a.node.states["1"], b.node.states["1"]):
            await until(lambda each=each, published=published: each.cached("cache-score") == published)
        assert await stored_event(redis_server, "cache-score") == ["cache-score", *published]
    (later,) = await started(redis_server, start_emulator, 1)
    client = await Client.open(later)
    await client.subscribe("cache-score")
    assert (await client.expect("score"))["data"] == "4"


async def test_publishes_a_node_missed_while_its_bus_subscription_was_down_are_logged_and_counted(
    redis_server: RedisServer, start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis closes a subscriber whose unsent output passes its pubsub limit, and what it was sending is lost: the
    node subscribed again with no trace of it. It now logs a warning, counts the gap in the sending node's sequence
    numbers in relay_cluster_missed_messages_total, and reloads the cache channels' events Redis kept."""
    app = replace(TEST_APP, limits=replace(TEST_APP.limits, max_event_bytes=100_000))
    a = await start_emulator(app=app, apps=(APP_TWO,), redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)  # not serving APP_TWO
    watcher = await Client.open(b)
    await watcher.subscribe("cache-news")
    await watcher.expect("pusher:cache_miss")
    await asyncio.to_thread(sdk(a).trigger, "cache-news", "first", "1")
    assert (await watcher.expect("first"))["data"] == "1"
    two = pusher.Pusher(app_id="2", key="two-key", secret="two-secret", host="127.0.0.1", port=a.port, ssl=False)
    await asyncio.to_thread(two.trigger, "elsewhere", "other-app", "1")  # numbered too: not a gap to b
    subscription = cluster_of(b)._pubsub
    # Any bus message too big for a subscriber's output buffer now closes that subscriber, as a slow reader's would be.
    await redis_command(redis_server, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 1024 0 0")
    big = "x" * 25_000  # past the 16 KiB a subscriber's output buffer holds before its limit counts
    await asyncio.to_thread(sdk(a).trigger, "cache-news", "lost", big)
    await until(lambda: cluster_of(b)._pubsub is not subscription)
    await redis_command(redis_server, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 33554432 8388608 60")
    await until(lambda: b.node.states["1"].cached("cache-news") == ("lost", big))  # from Redis, which kept it
    await asyncio.to_thread(sdk(a).trigger, "cache-news", "after", "2")
    frame = await watcher.recv()
    assert (frame["event"], frame["data"]) == ("after", "2")  # the lost publish never came
    node_b, node_a = (("node", str(b.node.node_id)),), (("node", str(a.node.node_id)),)
    assert (await scrape(b.http_url))[0][("relay_cluster_missed_messages_total", node_b)] == 1
    assert (await scrape(a.http_url))[0][("relay_cluster_missed_messages_total", node_a)] == 0  # b sent nothing
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert any(message.startswith("the Redis bus subscription dropped (") for message in warnings)


async def test_a_presence_channels_first_member_brings_channel_occupied_before_member_added(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """In a cluster a user joining a presence channel is admitted by Redis (its member count) before the subscription
    counts the channel: member_added was sent first, and a receiver saw a member join a channel not yet occupied, as
    a single node never reports. member_added now waits for the channel's count."""
    a, b = [await start_emulator(app=hooked(receiver), redis_url=redis_server.url) for _ in range(2)]
    for node, channel in ((a, "presence-room"), (b, "presence-hall")):  # a channel's first member on either node
        client = await Client.open(node)
        await client.subscribe(channel, "alice")
        await receiver.until(lambda channel=channel: len(on(receiver, channel)) == 2, within=3)
        assert [event["name"] for event in on(receiver, channel)] == ["channel_occupied", "member_added"]
    await receiver.quiet(len(receiver.deliveries), 0.3)
    assert len(receiver.events()) == 4


def on(receiver: Receiver, channel: str) -> list[dict[str, Any]]:
    return [event for event in receiver.events() if event["channel"] == channel]


async def test_a_first_member_gone_before_its_admission_was_answered_brings_member_added_then_member_removed(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is held up while a user joins a channel no one is in, and the connection closes before Redis counts the
    user in: the node counts the user out again. The member_added, waiting for a count of the channel that never
    comes, goes out then, before the member_removed, and neither channel_occupied nor channel_vacated is sent."""
    monkeypatch.setattr(cluster_module, "ADMISSION_DEADLINE_SECONDS", 8.0)
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    client = await Client.open(node)
    loop = asyncio.get_running_loop()
    paused_at = loop.time()
    await redis_command(redis_server, "CLIENT", "PAUSE", "2000")
    await send_join(client, "ghost", "presence-hall")
    await asyncio.sleep(0.2)  # the node asked Redis, which answers no one for 2 s
    await client.ws.close()
    assert loop.time() < paused_at + 2.0, "closed after Redis answered: the test proves nothing"
    await receiver.until(lambda: len(receiver.events()) == 2, within=5)
    assert [(event["name"], event["user_id"]) for event in receiver.events()] == [
        ("member_added", "ghost"),
        ("member_removed", "ghost"),
    ]
    await receiver.quiet(len(receiver.deliveries), 0.5)
    assert not cluster_of(node)._awaiting_channel
