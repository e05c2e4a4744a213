"""Webhooks a cluster node holds for its channel's count (see RedisCluster.after_channel_counted) whose count a Redis
outage lost, of a channel left during the outage: they waited for a count that was never coming, until shutdown."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

from relay.emulator.cluster import RedisCluster
from relay.emulator.config import Webhook
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_webhooks import cluster_of, until
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver


async def _frozen_redis_and_a_waiting_client_event(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> tuple[RunningEmulator, RedisCluster, Client]:
    """A node whose Redis is frozen (SIGSTOP), so that its count of ``private-room`` cannot be answered, and a
    subscriber's client event whose webhook waits for that count. The caller stops Redis."""
    app = replace(TEST_APP, webhook_batch_ms=10, webhooks=(Webhook(url=receiver.url),))
    node = await start_emulator(app=app, redis_url=redis_server.url)
    cluster = cluster_of(node)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    client = await Client.open(node)
    await client.subscribe("private-room")
    await client.send("client-typing", {"typing": True}, "private-room")
    await until(lambda: ("1", "private-room") in cluster._awaiting_channel, within=3)
    return node, cluster, client


async def test_a_client_event_waiting_on_a_count_lost_to_an_outage_is_sent(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Redis is frozen (SIGSTOP) so the channel's count cannot be answered and the client event's webhook waits for
    it; the subscriber leaves, Redis dies and comes back empty: nothing counts the channel any more, and the webhook
    must still reach the receiver, and no longer be held."""
    try:
        node, cluster, client = await _frozen_redis_and_a_waiting_client_event(redis_server, start_emulator, receiver)
        await client.ws.close()
        await until(lambda: "private-room" not in node.node.states[TEST_APP.app_id].channels, within=3)
    finally:
        redis_server.stop()  # SIGKILL ends a stopped process too
    await until(lambda: not cluster._connected.is_set(), within=10)
    redis_server.start()
    await until(lambda: cluster._connected.is_set(), within=10)
    await receiver.until(lambda: bool(receiver.events(names={"client_event"})), within=5)
    assert cluster._awaiting_channel == {}


async def test_a_member_s_client_event_waiting_when_redis_goes_away_is_sent_at_once(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """While Redis is away a webhook goes at once (nothing is counted): one that waited before is not kept back for
    a count the outage lost, even with its channel and member still held."""
    try:
        _, cluster, _ = await _frozen_redis_and_a_waiting_client_event(redis_server, start_emulator, receiver)
    finally:
        redis_server.stop()
    await until(lambda: not cluster._connected.is_set(), within=10)
    await receiver.until(lambda: bool(receiver.events(names={"client_event"})), within=5)
    assert cluster._awaiting_channel == {}
