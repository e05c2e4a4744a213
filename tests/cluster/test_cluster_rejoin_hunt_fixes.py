"""Cluster faults found by a bug hunt with pusher-js, pusher-http-node and the pusher Python package on three nodes
and a real redis-server: what a node reads of the others when it registers again after Redis lost its data."""

from __future__ import annotations

import asyncio
import json

import pytest

from relay.emulator.cluster import _WRITTEN_FIELD, Operation, _Commands, _written_state
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_hunt_fixes import bob_on_b_watched_from_a, redis_command
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


@pytest.mark.parametrize("b_writes_before_restoring", [False, True], ids=["empty", "partly-written"])
async def test_a_node_whose_bus_drops_while_another_is_yet_to_restore_keeps_that_node_s_members(
    redis_server: RedisServer, start_emulator: StartEmulator, b_writes_before_restoring: bool
) -> None:
    """After a FLUSHALL B registered again (its heartbeat and its place in the node set) but had not yet written what
    it holds (its state empty, or holding only a subscription count B wrote meanwhile) when A's bus subscription
    dropped (CLIENT KILL of that one connection). A, reading the others again once subscribed anew, took B's state for
    all B holds: its watcher saw bob leave and join again on B's announcement. A state not written whole, of a node
    that marks its state, is now read when that node's own announcement comes, as at a registration."""
    a, b, watcher, _bob = await bob_on_b_watched_from_a(redis_server, start_emulator)
    b_id = cluster_of(b).node_id
    b_registered, a_reread_b = asyncio.Event(), asyncio.Event()
    seen_by_a_meanwhile: list[str] = []
    a_resync, b_reconcile = cluster_of(a)._resync, cluster_of(b)._reconcile

    def a_resync_noted(node: int) -> Operation:
        resync = a_resync(node)

        def noted(commands: _Commands) -> None:
            resync(commands)
            if node == b_id:
                commands.then(lambda _: a_reread_b.set())  # once the reply of the read is acted on

        return noted

    async def b_restores_after_a_reread_it(*, new_epoch: bool = True) -> None:
        cluster_of(b)._reconcile = b_reconcile  # type: ignore[method-assign]
        b_registered.set()
        await asyncio.wait_for(a_reread_b.wait(), 10)
        seen_by_a_meanwhile.extend(sorted(a.node.states["1"].presence_hash("presence-room")))
        await b_reconcile(new_epoch=new_epoch)

    cluster_of(a)._resync = a_resync_noted  # type: ignore[method-assign]
    cluster_of(b)._reconcile = b_restores_after_a_reread_it  # type: ignore[method-assign]
    b_state = cluster_of(b)._key("nodestate", b_id)
    await redis_command(redis_server, "FLUSHALL")
    if b_writes_before_restoring:
        reader = await Client.open(b)
        await reader.subscribe("news")
    await until(lambda: b_registered.is_set())
    assert (await redis_command(redis_server, "HLEN", b_state) > 0) is b_writes_before_restoring
    subscription = cluster_of(a)._pubsub
    host, port = subscription.connection._writer.get_extra_info("sockname")[:2]
    assert await redis_command(redis_server, "CLIENT", "KILL", "ADDR", f"{host}:{port}") == 1
    await until(lambda: a_reread_b.is_set() and cluster_of(a)._pubsub is not subscription)
    await until(lambda: cluster_of(a)._connected.is_set() and cluster_of(b)._connected.is_set())
    await until(lambda: not cluster_of(b)._unreconciled and b_registered.is_set())
    assert seen_by_a_meanwhile == ["bob", "watcher"]
    assert sorted(a.node.states["1"].presence_hash("presence-room")) == ["bob", "watcher"]
    await watcher.silent(within=1.0)


BOB = {"m\x1f1\x1f" + json.dumps(["presence-room", "bob"]): '{"name": "Bob"}'}


@pytest.mark.parametrize(
    ("beat", "fields", "empty_holds_nothing", "read"),
    [
        ("2", {**BOB, _WRITTEN_FIELD: "1"}, False, ["bob"]),  # written whole by a reconciliation
        ("2", {_WRITTEN_FIELD: "1"}, False, []),  # written whole, holding nothing
        ("2", {}, True, None),  # Redis lost it, and the node has not restored it yet
        ("2", {"s\x1f1\x1fnews": "1"}, True, None),  # a change written since, not what the node holds
        (None, BOB, True, None),  # no heartbeat: the node is gone, or Redis lost its data
        ("1", BOB, False, ["bob"]),  # an earlier release, which writes no mark: read as it stands
        ("1", {}, True, []),  # ...an empty state holding nothing, at a re-read
        ("1", {}, False, None),  # ...or not written yet, at a registration
    ],
)
def test_a_node_s_state_is_read_when_written_whole(
    beat: str | None, fields: dict[str, str], empty_holds_nothing: bool, read: list[str] | None
) -> None:
    held = _written_state(beat, fields, empty_holds_nothing=empty_holds_nothing)
    assert (None if held is None else [user_id for _, _, user_id in held.members]) == read
