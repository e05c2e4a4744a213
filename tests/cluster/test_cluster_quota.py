"""An app's ``max_connections`` is a quota for the whole cluster, as Pusher's is for the app: each node announces its
connections to the app (coalesced, once per write cycle) and admits a connection only while every node's count,
as last announced, leaves room. Pusher and Ably connections count alike."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from websockets.asyncio.client import connect

from relay.emulator.cluster import NodeState
from tests.ably.ablysupport import API_KEY, ERROR, ably_wire, open_wire
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, Nodes, nodes
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, until
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator

__all__ = ["nodes"]

QUOTA = replace(TEST_APP, max_connections=3)


async def remote_connections(node: RunningEmulator, expected: int, within: float = 5.0) -> None:
    """Wait until ``node`` has heard of ``expected`` connections on the other nodes."""
    state = node.node.states[QUOTA.app_id]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (seen := sum(state.remote.connections.values())) != expected:
        assert loop.time() < deadline, f"{seen} remote connections after {within} s, not {expected}"
        await asyncio.sleep(0.02)


async def refused_with_4004(node: RunningEmulator) -> None:
    async with connect(node.ws_url()) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert error == {
            "event": "pusher:error",
            "data": {"code": 4004, "message": "Application is over connection quota (3)"},
        }
        await asyncio.wait_for(ws.wait_closed(), 3)
        assert ws.close_code == 4004


async def test_the_quota_counts_the_connections_of_every_node(nodes: Nodes) -> None:
    one, two = await nodes(2, app=QUOTA)
    first = [await Client.open(one), await Client.open(one)]
    third = await Client.open(two)
    await remote_connections(two, 2)
    await remote_connections(one, 1)
    await refused_with_4004(one)
    await refused_with_4004(two)
    assert one.node.ops.metrics.refused == {4004: 1}

    await first[0].ws.close()
    await remote_connections(two, 1)
    again = await Client.open(two)  # the room one left on another node
    await third.subscribe("news")
    await again.subscribe("news")
    await first[1].subscribe("news")
    await remote_connections(one, 2)
    await refused_with_4004(one)


async def test_ably_connections_count_toward_the_same_quota_and_are_refused_with_40111(nodes: Nodes) -> None:
    one, two = await nodes(2, app=QUOTA)
    await ably_wire(one)
    await Client.open(one)
    await ably_wire(two)
    await remote_connections(two, 2)
    ws, first = await open_wire(two, f"key={API_KEY}")
    assert first["action"] == ERROR
    assert first["error"]["code"] == 40111
    assert first["error"]["message"] == "Connection limit of 3 exceeded"
    await ws.close()
    await remote_connections(one, 1)  # the other node's Ably connection, heard of (under load it can take a while)
    await refused_with_4004(one)


async def test_a_node_started_later_reads_the_others_connections(
    nodes: Nodes, redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    one, two = await nodes(2, app=QUOTA)
    await Client.open(one)
    await Client.open(two)
    await Client.open(two)
    await remote_connections(one, 2)
    late = await start_emulator(app=QUOTA, redis_url=redis_server.url)
    await remote_connections(late, 3)  # from the others' stored state, not from announcements it missed
    await refused_with_4004(late)


async def test_a_node_that_stops_beating_is_no_longer_counted(nodes: Nodes) -> None:
    """As a node killed with SIGKILL: it announces nothing more, its heartbeat expires, and the others bury it."""
    one, two = await nodes(2, app=QUOTA, node_ttl=1.0)
    await Client.open(one)
    held = [await Client.open(two), await Client.open(two)]
    await remote_connections(one, 2)
    for task in cluster_of(two)._tasks:  # its connections stay open: no count of 0 is announced
        task.cancel()
    await remote_connections(one, 0, within=10)
    await Client.open(one)
    await Client.open(one)
    await refused_with_4004(one)
    assert len(two.node.states[QUOTA.app_id].peers) == len(held)


async def test_a_redis_restart_keeps_every_node_s_count(nodes: Nodes, redis_server: RedisServer) -> None:
    """Redis comes back empty; each node writes what it holds back (its connections included) and the others read
    it, so the quota still counts connections that nobody opened or closed meanwhile."""
    one, two = await nodes(2, app=QUOTA)
    await Client.open(one)
    await Client.open(one)
    await remote_connections(two, 2)
    redis_server.stop()
    await until(lambda: not cluster_of(one)._connected.is_set() and not cluster_of(two)._connected.is_set())
    redis_server.start()
    await until(lambda: cluster_of(one)._connected.is_set() and cluster_of(two)._connected.is_set())
    assert await redis_command(redis_server, "HGET", "relay:nodestate:" + str(one.node.node_id), "n\x1f1\x1f") == "2"
    await remote_connections(two, 2)
    await Client.open(two)
    await refused_with_4004(two)


async def test_announcements_missed_while_the_subscription_was_broken_are_read_again(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    """Redis drops a subscriber that reads too slowly (client-output-buffer-limit pubsub), a proxy may reset it: the
    node subscribes again and re-reads the others' state, or a count announced meanwhile would stay wrong until that
    node's connections change again."""
    one, two = await nodes(2, app=QUOTA)
    clients = [await Client.open(one), await Client.open(one)]
    await remote_connections(two, 2)
    subscribe = cluster_of(two)._subscribe

    async def slow_subscribe() -> object:  # the announcement below goes out before the new subscription
        await asyncio.sleep(0.5)
        return await subscribe()

    cluster_of(two)._subscribe = slow_subscribe  # type: ignore[method-assign]
    await redis_command(redis_server, "CLIENT", "KILL", "TYPE", "pubsub")
    for client in clients:
        await client.ws.close()
    await until(lambda: not one.node.states[QUOTA.app_id].peers)
    await remote_connections(two, 0)
    await Client.open(two)
    await Client.open(two)
    await Client.open(two)
    await refused_with_4004(two)


def test_a_node_s_stored_connections_survive_a_round_trip_and_only_quota_apps_store_them() -> None:
    held = NodeState(connections={"1": 7})
    assert NodeState.parse(held.fields()).connections == {"1": 7}
    assert NodeState.parse(held.fields()).holding("1").connections == 7
    assert NodeState.parse(held.fields()).holding("2").connections == 0


@pytest.mark.parametrize("quota", [None, 5])
async def test_only_apps_with_a_quota_announce_their_connections(nodes: Nodes, quota: int | None) -> None:
    app = replace(TEST_APP, max_connections=quota)
    one, two = await nodes(2, app=app)
    await Client.open(one)
    subscriber = await Client.open(two)
    await subscriber.subscribe("news")  # announced after the connection: once it is seen, so would the connection be
    state = one.node.states[app.app_id]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while state.subscription_count("news") != 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    assert state.remote.connections == ({} if quota is None else {two.node.node_id: 1})
