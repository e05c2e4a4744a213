"""The subscription_count webhook in a cluster carries a total in the order Redis put the nodes' changes in, so the
last one sent is the cluster's count, however the changes of several nodes crossed on their way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_failure_hunt_fixes import counts_sent, sees_count
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver


def hold_bus(node: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Keep what Redis's bus brings ``node`` (its own messages too) until the returned function is called, then hand
    it over in the order it came: the node hears of the others' changes late, as over a slow link."""
    cluster = cluster_of(node)
    receive, held = cluster._receive, list[str]()
    monkeypatch.setattr(cluster, "_receive", held.append)

    def release() -> None:
        monkeypatch.setattr(cluster, "_receive", receive)
        for data in held:
            receive(data)

    return release


async def test_a_node_that_heard_late_of_another_s_subscriber_sends_the_total_with_it(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b's subscriber joins while a has not heard of it yet, then a's. a's webhook said 1 (its own subscriber, and
    none known on b), b's said 1: the count 2 never reached the receiver. Sent when a's own change comes back over
    Redis, behind b's, a's webhook counts both."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    release = hold_bus(a, monkeypatch)
    on_b = await Client.open(b)
    await on_b.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1], within=5)
    on_a = await Client.open(a)
    await on_a.subscribe("news")
    await asyncio.sleep(0.3)  # a's change is in Redis, behind b's, and a has heard of neither
    release()
    await receiver.until(lambda: counts_sent(receiver) == [1, 2], within=5)
    await sees_count(on_a, 2)
    await asyncio.sleep(0.5)  # nothing more
    assert counts_sent(receiver) == [1, 2]
    info = await asyncio.to_thread(sdk(a).channel_info, "news", ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 2}


async def test_subscribers_joining_two_nodes_at_once_bring_a_webhook_with_the_cluster_s_total(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Eight subscribers on each of two nodes at once: one webhook counts all sixteen (each node counted its own eight
    and what it had heard of the other's, and neither had heard all of them), and none counts more than there are."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    clients = [await Client.open(node) for _ in range(8) for node in (a, b)]
    await asyncio.gather(*(client.subscribe("news") for client in clients))
    await receiver.until(lambda: 16 in counts_sent(receiver), within=5)
    await asyncio.sleep(0.5)  # every node's last webhook has come
    assert max(counts_sent(receiver)) == 16


async def test_a_node_whose_last_subscriber_leaves_sends_what_the_others_hold_once_it_has_heard_of_them(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a's only subscriber leaves while a has not heard of b's second one: the webhook says 2, what b holds when a's
    leave took its place in Redis's order, not the 1 a knew of."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    on_a, first_on_b = await Client.open(a), await Client.open(b)
    await on_a.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1], within=5)
    await first_on_b.subscribe("news")
    await sees_count(on_a, 2)
    await receiver.until(lambda: counts_sent(receiver) == [1, 2], within=5)
    release = hold_bus(a, monkeypatch)
    second_on_b = await Client.open(b)
    await second_on_b.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1, 2, 3], within=5)
    await on_a.ws.close()
    await asyncio.sleep(0.3)
    release()
    await receiver.until(lambda: counts_sent(receiver) == [1, 2, 3, 2], within=5)
    await asyncio.sleep(0.5)
    assert counts_sent(receiver) == [1, 2, 3, 2]
    assert receiver.events(names={"channel_vacated"}) == []


async def test_a_node_keeps_no_webhook_timing_for_channels_it_no_longer_holds(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Each node remembers when it last sent a channel's webhook (for the throttle past 100 subscribers): a node whose
    subscribers of many short-lived channels left while another node's stayed kept an entry per channel for good."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    names = [f"order-{number}" for number in range(5)]
    for name in names:
        await (await Client.open(b)).subscribe(name)
        leaving = await Client.open(a)
        await leaving.subscribe(name)
        # Ten webhooks through two nodes and Redis: 5 s ran out once in a loaded CI run, all of them waiting
        await receiver.until(lambda: counts_sent(receiver)[-1:] == [2], within=15)
        await leaving.ws.close()
        await receiver.until(lambda: counts_sent(receiver)[-1:] == [1], within=15)
    state = a.node.states["1"]
    assert (state._echoed_counts, state._count_webhook_sent_at, state._count_webhooks_pending) == ({}, {}, set())


async def test_a_change_made_while_the_node_s_bus_subscription_was_down_still_brings_its_webhook(
    redis_server: RedisServer,
    start_emulator: StartEmulator,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The webhook is sent when the node's announcement comes back over the bus: one published while its bus
    subscription was down (Redis drops a subscriber that reads too slowly) never came back, so the change's webhook
    was never sent. Subscribed again, the node announces again each count the bus has not echoed."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    await (await Client.open(b)).subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1], within=5)
    cluster = cluster_of(a)
    subscribe, waiting, gate = cluster._subscribe, asyncio.Event(), asyncio.Event()

    async def held() -> object:
        waiting.set()
        await gate.wait()
        return await subscribe()

    monkeypatch.setattr(cluster, "_subscribe", held)
    await redis_command(redis_server, "CLIENT", "KILL", "TYPE", "pubsub")
    await asyncio.wait_for(waiting.wait(), 5)
    on_a = await Client.open(a)
    await on_a.subscribe("news")  # announced while a hears nothing of the bus
    await until(lambda: b.node.states["1"].subscription_count("news") == 2)
    await asyncio.sleep(0.3)
    assert counts_sent(receiver) == [1]
    gate.set()
    await receiver.until(lambda: counts_sent(receiver) == [1, 2], within=5)
    await asyncio.sleep(0.5)
    assert counts_sent(receiver) == [1, 2]
