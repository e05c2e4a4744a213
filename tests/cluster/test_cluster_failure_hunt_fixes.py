"""Cluster faults found by a hunt with real redis-server processes and real nodes, as an operator running a few nodes
behind a load balancer meets them: a node's last subscriber of a channel leaving, a node killed with SIGKILL."""

from __future__ import annotations

import asyncio

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_webhooks import hooked
from tests.cluster.test_faults import Spawn, spawn
from tests.conftest import StartEmulator
from tests.webhook_receiver import Receiver

__all__ = ["spawn"]


async def sees_count(client: Client, count: int) -> None:
    while True:
        frame = await client.expect("pusher_internal:subscription_count", within=10)
        if frame["data"] == f'{{"subscription_count":{count}}}':
            return


def counts_sent(receiver: Receiver) -> list[int]:
    return [event["subscription_count"] for event in receiver.events(names={"subscription_count"})]


async def test_the_last_subscriber_leaving_a_node_sends_the_cluster_s_new_subscription_count(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """news has a subscriber on A and two on B; both of B's leave. The count went 3, 2, 1 for A's subscriber, but the
    webhook stopped at 2: the node whose last subscriber left deleted its channel without sending the count (on one
    node that is a channel_vacated; in a cluster the channel stays occupied), and the other node's subscribers change
    was not theirs to send."""
    app = hooked(receiver, subscription_count=True)
    a = await start_emulator(app=app, redis_url=redis_server.url)
    b = await start_emulator(app=app, redis_url=redis_server.url)
    watcher = await Client.open(a)
    await watcher.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver) == [1], within=5)  # before b's, whose webhooks race a's
    first, second = await Client.open(b), await Client.open(b)
    await first.subscribe("news")
    await second.subscribe("news")
    await receiver.until(lambda: counts_sent(receiver)[-1:] == [3], within=5)
    await first.ws.close()
    await receiver.until(lambda: counts_sent(receiver)[-1:] == [2], within=5)
    await second.ws.close()
    await receiver.until(lambda: counts_sent(receiver)[-1:] == [1], within=5)
    await asyncio.sleep(0.5)  # nothing more: no second count, no channel_vacated
    assert counts_sent(receiver) == [1, 2, 3, 2, 1]
    assert receiver.events(names={"channel_vacated"}) == []
    info = await asyncio.to_thread(sdk(b).channel_info, "news", ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 1}


async def test_a_killed_node_s_subscribers_are_counted_out_in_one_subscription_count_webhook(
    receiver: Receiver, spawn: Spawn
) -> None:
    """news has a subscriber on each of two survivors and two on a node killed with SIGKILL. The survivors' clients
    got the new count (2) when the dead node was dropped, but no webhook said so: the change was no survivor's own.
    The survivor that settles the dead node's webhook counters sends it, once."""
    # A node whose heartbeats stop for node_ttl is buried, and rightly counted out in a webhook: at 1 s a survivor
    # stalled that long on a loaded machine was, and its 3 came before the kill's 2.
    options, node_ttl = "subscription_count = true\n", 3
    doomed_process, doomed = await spawn(webhook_url=receiver.url, app_options=options, node_ttl=node_ttl)
    survivors = [(await spawn(webhook_url=receiver.url, app_options=options, node_ttl=node_ttl))[1] for _ in range(2)]
    watchers = [await Client.open(node) for node in survivors]
    for watcher in watchers:
        await watcher.subscribe("news")
    for _ in range(2):
        await (await Client.open(doomed)).subscribe("news")
    # One webhook per subscription, from its node, with the count that node knew then (another node's subscription
    # a few ms before may not have reached it yet); the nodes' webhooks race one another to the receiver, so the
    # last to arrive need not be the last sent.
    await receiver.until(lambda: len(counts_sent(receiver)) == 4, within=5)
    for watcher in watchers:
        await sees_count(watcher, 4)
    sent = len(counts_sent(receiver))
    await doomed_process.kill()
    for watcher in watchers:
        await sees_count(watcher, 2)
    await receiver.until(lambda: len(counts_sent(receiver)) > sent, within=3)
    await asyncio.sleep(1.0)  # a second survivor's webhook would have come by then
    assert counts_sent(receiver)[sent:] == [2]
    assert receiver.events(names={"channel_vacated"}) == []
    info = await asyncio.to_thread(sdk(survivors[0]).channel_info, "news", ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 2}
