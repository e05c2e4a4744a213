"""Cluster faults found by a bug hunt with pusher-js, pusher-http-node and the pusher Python package on three nodes
and a real redis-server: what a node reads of the others when it registers again after Redis lost its data."""

from __future__ import annotations

import asyncio

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_hunt_fixes import bob_on_b_watched_from_a
from tests.cluster.test_cluster_webhooks import cluster_of, until
from tests.conftest import StartEmulator


async def test_a_node_registering_while_another_is_yet_to_restore_keeps_that_node_s_members(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """Redis restarted (its data gone): B registered again (its heartbeat and its place in the node set) but had not
    yet written what it holds when A registered and read it. A took B's empty state for the truth: its watcher saw
    bob leave and join again, and A's API answers lost him meanwhile. A node not yet restored is now read when its
    own announcement of what it holds comes."""
    a, b, watcher, _bob = await bob_on_b_watched_from_a(redis_server, start_emulator)
    b_registered = asyncio.Event()
    a_register, b_reconcile = cluster_of(a)._register, cluster_of(b)._reconcile

    async def a_registers_after_b_joined_the_node_set() -> None:
        await b_registered.wait()
        await a_register()

    async def b_restores_after_a_registered(*, new_epoch: bool = True) -> None:
        b_registered.set()
        await until(lambda: cluster_of(a)._connected.is_set())
        await b_reconcile(new_epoch=new_epoch)

    cluster_of(a)._register = a_registers_after_b_joined_the_node_set  # type: ignore[method-assign]
    cluster_of(b)._reconcile = b_restores_after_a_registered  # type: ignore[method-assign]
    redis_server.stop()
    await until(lambda: not cluster_of(a)._connected.is_set() and not cluster_of(b)._connected.is_set())
    redis_server.start()
    await until(lambda: cluster_of(a)._connected.is_set() and cluster_of(b)._connected.is_set())
    assert sorted(a.node.states["1"].presence_hash("presence-room")) == ["bob", "watcher"]
    await watcher.silent(within=1.0)
    users = await asyncio.to_thread(sdk(a).users_info, "presence-room")
    assert sorted(user["id"] for user in users["users"]) == ["bob", "watcher"]


async def test_a_node_registering_after_a_flush_does_not_take_what_another_wrote_before_restoring_for_all_it_holds(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """After a FLUSHALL (the connections stay open) B went on writing its changes into its state, a subscription
    count here, until its heartbeat found it had been forgotten: that state held one field, not what B holds. A,
    registering before B had restored, read it as B's whole state and its watcher saw bob leave and join again.
    Only a state a reconciliation wrote whole is read."""
    a, b, watcher, _bob = await bob_on_b_watched_from_a(redis_server, start_emulator)
    b_registered, a_read = asyncio.Event(), asyncio.Event()
    a_register, b_reconcile = cluster_of(a)._register, cluster_of(b)._reconcile

    async def a_registers_after_b_joined_the_node_set() -> None:
        await b_registered.wait()
        await a_register()
        a_read.set()

    async def b_restores_after_a_registered(*, new_epoch: bool = True) -> None:
        cluster_of(b)._reconcile = b_reconcile  # type: ignore[method-assign]
        b_registered.set()
        await asyncio.wait_for(a_read.wait(), 10)
        await b_reconcile(new_epoch=new_epoch)

    cluster_of(a)._register = a_registers_after_b_joined_the_node_set  # type: ignore[method-assign]
    cluster_of(b)._reconcile = b_restores_after_a_registered  # type: ignore[method-assign]
    redis = cluster_of(b)._redis
    b_state = cluster_of(b)._key("nodestate", cluster_of(b).node_id)
    await redis.flushall()
    reader = await Client.open(b)
    await reader.subscribe("news")
    await until(lambda: b_registered.is_set())
    assert await redis.hlen(b_state) > 0  # what B wrote before it registered again: a field, not its members
    await until(lambda: a_read.is_set() and cluster_of(b)._connected.is_set())
    await until(lambda: not cluster_of(b)._unreconciled)
    assert sorted(a.node.states["1"].presence_hash("presence-room")) == ["bob", "watcher"]
    await watcher.silent(within=1.0)
