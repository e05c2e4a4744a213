"""Cluster faults found by a bug hunt, with a real redis-server and real nodes: dropped Redis connections (an idle
timeout, CLIENT KILL) must not lose what was being written."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_webhooks import cluster_of, counts_in, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.operations.test_metrics import scrape
from tests.webhook_receiver import Receiver


async def redis_command(server: RedisServer, *args: object) -> object:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        return await client.execute_command(*args)
    finally:
        await client.aclose()


async def bob_on_b_watched_from_a(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> tuple[RunningEmulator, RunningEmulator, Client, Client]:
    """Two nodes A and B: bob a member of presence-room on B, and A's watcher told of him (bob's client is returned
    too, for the test to keep it, and him, connected)."""
    a = await start_emulator(redis_url=redis_server.url, node_ttl=3.0)
    b = await start_emulator(redis_url=redis_server.url, node_ttl=3.0)
    watcher = await Client.open(a)
    await watcher.subscribe("presence-room", "watcher")
    bob = await Client.open(b)
    await bob.subscribe("presence-room", "bob")
    await watcher.expect("pusher_internal:member_added")
    return a, b, watcher, bob


async def test_publishes_after_redis_closed_idle_connections_reach_the_other_node(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """A redis.conf `timeout` closes idle client connections: the next batch written on one used to fail and be
    dropped (the other node missed those publishes); it is now written again on a fresh connection."""
    await redis_command(redis_server, "CONFIG", "SET", "timeout", "1")
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    on_b = await Client.open(b)
    await on_b.subscribe("news")
    for tick in range(3):
        await asyncio.sleep(2.2)  # Redis checks idle clients about every second: past 1 s idle plus that check
        await asyncio.to_thread(sdk(a).trigger, "news", "tick", str(tick))
        frame = await on_b.expect("tick", within=5)
        assert frame["data"] == str(tick)
    assert cluster_of(a).lost_operations == 0


async def test_a_presence_join_written_on_a_killed_connection_reaches_the_cluster_once(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """CLIENT KILL (a proxy reset) drops the nodes' command connections: the join written next is run again on a
    fresh connection, so the other node sees the member, and its counter and webhook count it once."""
    a = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    b = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    watcher = await Client.open(b)
    await watcher.subscribe("presence-room", "watcher")
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) == 1, within=5)
    await until(lambda: cluster_of(a)._queue.empty())
    await redis_command(redis_server, "CLIENT", "KILL", "TYPE", "normal")
    alice = await Client.open(a)
    await alice.subscribe("presence-room", "alice")
    added = await watcher.expect("pusher_internal:member_added", within=5)
    assert '"alice"' in added["data"]
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) == 2, within=5)
    assert await redis_command(redis_server, "HGET", "relay:mem:1:presence-room", "alice") == "1"
    await alice.ws.close()
    await receiver.until(lambda: len(receiver.events(names={"member_removed"})) == 1, within=5)
    await asyncio.sleep(0.5)
    assert [e["user_id"] for e in receiver.events(names={"member_added"})] == ["watcher", "alice"]


async def test_a_stale_hold_timer_on_another_node_does_not_release_a_newer_hold_early(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """alice leaves on A (A holds member_removed for webhook_delay), comes back on B (the hold is cancelled), leaves
    on B (B holds it) and comes back on A before B's hold ends: no absence lasted webhook_delay, so no webhook. A's
    stale timer used to fire first and delete B's pending key, sending member_removed and channel_vacated."""
    delay = 6.0  # room enough on a loaded machine for the steps timed against it
    a = await start_emulator(app=replace(hooked(receiver), webhook_delay=delay), redis_url=redis_server.url)
    b = await start_emulator(app=replace(hooked(receiver), webhook_delay=delay), redis_url=redis_server.url)
    loop = asyncio.get_running_loop()
    first = await Client.open(a)
    await first.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) == 1, within=5)
    await until(lambda: cluster_of(a)._queue.empty())
    start = loop.time()
    await first.ws.close()  # A holds member_removed and channel_vacated until start + delay
    await until(lambda: bool(cluster_of(a)._held))
    second = await Client.open(b)
    await second.subscribe("presence-room", "alice")  # cancels A's hold (its pending key), within delay
    for _ in range(200):
        if not await redis_command(redis_server, "EXISTS", "relay:leaving:1:presence-room:alice"):
            break
        await asyncio.sleep(0.05)
    assert cluster_of(a)._held, "A's timer ran before the return; the test proves nothing"
    await asyncio.sleep(max(0.0, start + delay / 2 - loop.time()))
    await second.ws.close()  # B holds them until start + 1.5 delay
    await until(lambda: bool(cluster_of(b)._held))
    await asyncio.sleep(max(0.0, start + delay * 1.25 - loop.time()))  # A's stale timer has run (at start + delay)
    third = await Client.open(a)
    await third.subscribe("presence-room", "alice")
    assert loop.time() < start + delay * 1.5, "too slow to come back within B's hold; the test proves nothing"
    await until(lambda: not cluster_of(b)._held and cluster_of(a)._queue.empty())
    await asyncio.sleep(0.5)
    names = sorted(event["name"] for event in receiver.events())
    assert names == ["channel_occupied", "member_added"]


async def test_reconnecting_after_a_redis_restart_leaves_one_bus_subscription_per_node(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """The first reconnection attempt used to fail on a pooled connection from before the restart, and each failed
    attempt left its bus subscription open on Redis (PUBSUB NUMSUB grew with every outage)."""
    a = await start_emulator(redis_url=redis_server.url)
    for _ in range(2):
        redis_server.stop()
        await until(lambda: not cluster_of(a)._connected.is_set())
        redis_server.start()
        await until(lambda: cluster_of(a)._connected.is_set())
        # a subscription closed last is gone from Redis soon (within 5 s on a loaded machine, not 0.3 s); one left
        # open stays for good
        deadline = asyncio.get_running_loop().time() + 5
        while (subscribers := await redis_command(redis_server, "PUBSUB", "NUMSUB", "relay:bus")) != ["relay:bus", 1]:
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert subscribers == ["relay:bus", 1]


async def test_a_short_redis_restart_does_not_make_remote_members_leave(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """Redis restarted (its data gone) for well under node_ttl: the node back first used to forget the other at its
    first heartbeat, before that one registered again, and its clients saw every remote member leave and re-join.
    B is made to register 1 s after Redis is back (its own retry back-off may be that long)."""
    a, b, watcher, _bob = await bob_on_b_watched_from_a(redis_server, start_emulator)
    register = cluster_of(b)._register

    async def late_register() -> None:
        await asyncio.sleep(1.0)
        await register()

    cluster_of(b)._register = late_register  # type: ignore[method-assign]
    redis_server.stop()
    await until(lambda: not cluster_of(a)._connected.is_set() and not cluster_of(b)._connected.is_set())
    redis_server.start()
    await until(lambda: cluster_of(a)._connected.is_set())
    await until(lambda: cluster_of(b)._connected.is_set())
    await asyncio.sleep(1.5)  # A's heartbeats (every node_ttl / 3) have run since
    await watcher.silent(within=0.5)
    users = await asyncio.to_thread(sdk(a).users_info, "presence-room")
    assert sorted(user["id"] for user in users["users"]) == ["bob", "watcher"]


async def test_the_cache_is_written_back_to_a_redis_that_lost_it(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """After a Redis restart (its data gone) a node started later found the cache channel empty, though the node that
    holds the entry was back; the reconciliation now writes the node's cache back, with its remaining TTL."""
    a = await start_emulator(redis_url=redis_server.url)
    await asyncio.to_thread(sdk(a).trigger, "cache-price", "tick", "41")
    await until(lambda: cluster_of(a)._queue.empty())
    redis_server.stop()
    await until(lambda: not cluster_of(a)._connected.is_set())
    redis_server.start()
    await until(lambda: cluster_of(a)._connected.is_set())
    ttl = await redis_command(redis_server, "PTTL", "relay:cache:1:cache-price")
    assert isinstance(ttl, int) and 0 < ttl <= 1000 * a.app.cache_ttl
    late = await start_emulator(redis_url=redis_server.url)
    client = await Client.open(late)
    await client.subscribe("cache-price")
    assert (await client.expect("tick"))["data"] == "41"


async def test_metrics_count_the_cluster_operations_a_node_lost(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """What a node could not write to Redis, even on a fresh connection, is reconciled and counted: /metrics shows
    the node's count (0 while nothing was lost, and without --redis-url)."""
    clustered = await start_emulator(redis_url=redis_server.url)
    single = await start_emulator()
    node = (("node", str(clustered.node.node_id)),)
    assert (await scrape(clustered.http_url))[0][("relay_cluster_lost_operations_total", node)] == 0
    assert (await scrape(single.http_url))[0][("relay_cluster_lost_operations_total", ())] == 0
    cluster_of(clustered).lost_operations += 3  # as _failed counts a batch that could not be written
    samples, kinds = await scrape(clustered.http_url)
    assert samples[("relay_cluster_lost_operations_total", node)] == 3
    assert kinds["relay_cluster_lost_operations"] == "counter"


async def test_each_cluster_nodes_metrics_carry_its_node_label(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """The workers of --workers share one port, so successive scrapes reach different nodes: without a label telling
    them apart, Prometheus read one node's counter after another's as a counter reset. Every sample of a cluster
    node, histogram buckets included, carries node="<its id>"; a single node's carry no such label."""
    first = await start_emulator(redis_url=redis_server.url)
    second = await start_emulator(redis_url=redis_server.url)
    single = await start_emulator()
    for running in (first, second):
        samples, _ = await scrape(running.http_url)
        node = ("node", str(running.node.node_id))
        assert samples and all(node in labels for _, labels in samples), samples
        assert samples[("relay_publish_to_write_seconds_count", (node,))] == 0
    assert first.node.node_id != second.node.node_id
    samples, _ = await scrape(single.http_url)
    assert not any(name == "node" for _, labels in samples for name, _ in labels)


async def test_a_publish_redis_runs_twice_reaches_the_other_nodes_once(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """A batch that timed out (a Redis stall past the client's socket timeout) is sent again, and Redis runs the first
    one too when it wakes: each publish then reached the other nodes twice. A publish carries its node's sequence
    number, and a node drops one it has had: here the bus message is published again as Redis would run it."""
    a = await start_emulator(redis_url=redis_server.url)
    b = await start_emulator(redis_url=redis_server.url)
    on_b = await Client.open(b)
    await on_b.subscribe("news")
    listener = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    bus = listener.pubsub()
    await bus.subscribe(cluster_of(a).bus)
    try:
        await asyncio.to_thread(sdk(a).trigger, "news", "tick", "1")
        assert (await on_b.expect("tick"))["data"] == "1"
        published = []
        for _ in range(50):  # a read returns None for the subscription's own confirmation, or after 0.1 s of silence
            message = await bus.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None and message["data"].startswith(("P", "A")):  # "A": with its Ably message
                published.append(message["data"])
                break
        (sent,) = published
        await redis_command(redis_server, "PUBLISH", cluster_of(a).bus, sent)  # Redis runs it again
        await asyncio.to_thread(sdk(a).trigger, "news", "tick", "2")
        assert (await on_b.expect("tick"))["data"] == "2"  # the copy of "1" was dropped, not delivered before "2"
        await on_b.silent()
    finally:
        await bus.aclose()
        await listener.aclose()


async def test_a_webhook_whose_count_answer_redis_lost_is_sent_at_the_reconciliation(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A Redis stall past the client's socket timeout: Redis ran the count script when it woke, but its answer was
    lost, and the batch's second try failed too. The reconciliation found the channel counted and sent nothing, so
    channel_occupied was lost. Now the node looks up the answers it did not get (Redis keeps them a minute).
    Simulated on a real Redis: the first round trip holding counts runs them and loses their answers, the second
    fails before it is sent."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    cluster = cluster_of(node)
    send = cluster._send
    calls = 0

    async def stalled(pipe: Any) -> list[Any]:
        nonlocal calls
        if not counts_in(cluster, pipe):
            return await send(pipe)
        calls += 1
        if calls == 1:
            await send(pipe)
        if calls <= 2:
            raise RedisTimeoutError("Timeout reading from socket")
        return await send(pipe)

    cluster._send = stalled  # type: ignore[method-assign]
    alice = await Client.open(node)
    await alice.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events()) >= 2, within=5)
    await receiver.quiet(len(receiver.deliveries), 0.5)
    assert calls >= 3  # the lost answers, the failed retry, and the count of the join decided by the node alone
    assert sorted(receiver.event_names()) == ["channel_occupied", "member_added"]


async def test_a_reconciliation_during_a_count_in_flight_leaves_the_write_task_running(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """The heartbeat reconciles (operations were lost before) while the write task waits for a count's answer: the
    count's bookkeeping must survive the reconciliation (it once raised KeyError and ended the write task, after
    which the node wrote nothing to Redis again), and the webhook is sent once."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url)
    cluster = cluster_of(node)
    send = cluster._send
    first = True

    async def slow_first(pipe: Any) -> list[Any]:
        nonlocal first
        if first and counts_in(cluster, pipe):
            first = False
            await asyncio.sleep(0.3)
        return await send(pipe)

    cluster._send = slow_first  # type: ignore[method-assign]
    alice = await Client.open(node)
    await alice.subscribe("news")
    await asyncio.sleep(0.05)  # the count is in flight
    cluster._unreconciled = True
    await cluster._beat()
    bob = await Client.open(node)
    await bob.subscribe("sports")
    await receiver.until(lambda: len(receiver.events()) >= 2, within=5)
    await receiver.quiet(len(receiver.deliveries), 0.5)
    assert not cluster._tasks[1].done()
    assert sorted((event["name"], event["channel"]) for event in receiver.events()) == [
        ("channel_occupied", "news"),
        ("channel_occupied", "sports"),
    ]


async def test_a_joining_node_keeps_the_cache_in_the_order_it_expires(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """A node joining loads the cluster's cache channels from Redis, whose SCAN has no order: stored as found, an
    entry expiring late could stand before ones long expired, which the store's sweep (from its front, up to the
    first live entry) then kept up to a TTL longer. Loaded soonest to expire first."""
    a = await start_emulator(redis_url=redis_server.url)
    channels = [f"cache-{number:02d}" for number in range(20)]
    for channel in channels:  # each a few milliseconds later: TTLs left that differ, in this order
        await asyncio.to_thread(sdk(a).trigger, channel, "tick", "1")
        await asyncio.sleep(0.005)
    await until(lambda: cluster_of(a)._queue.empty())
    late = await start_emulator(redis_url=redis_server.url)
    assert list(late.node.states["1"].cache) == channels
