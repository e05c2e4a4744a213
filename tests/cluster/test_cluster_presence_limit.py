"""A presence channel's member limit (``limits.max_presence_members``) holds across the cluster: users joining at the
same moment on several nodes are admitted by Redis one at a time (the member counter's script, in the round trip that
counts the member), so the channel never ends with more users than the limit, whatever each node knew of the others.

A node admits a join against the members it knows of, as a single node does, before Redis answers: a user Redis
then refuses gets the refusal a single node gives (after its ``subscription_succeeded``) and leaves the channel; the
other nodes never hear of it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from relay.protocol.channels import Limits
from relay.protocol.signing import channel_auth
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, Nodes, nodes, presence_ids, sdk
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver

__all__ = ["nodes"]

LIMIT = 3
ROOM = "presence-room"
REFUSAL = {
    "event": "pusher:subscription_error",
    "channel": ROOM,
    "data": {"type": "LimitReached", "error": f"presence limit of {LIMIT} reached", "status": 4100},
}


def limited(receiver: Receiver) -> Any:
    return hooked(receiver, limits=Limits(max_presence_members=LIMIT))


async def send_join(client: Client, user_id: str) -> None:
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}})
    auth = channel_auth("app-key", "app-secret", client.socket_id, ROOM, channel_data)
    await client.send("pusher:subscribe", {"channel": ROOM, "channel_data": channel_data, "auth": auth})


async def frames_for(client: Client, within: float) -> list[dict[str, Any]]:
    """Every frame ``client`` gets until it has been silent for ``within`` seconds."""
    got = []
    while True:
        try:
            got.append(await client.recv(within))
        except TimeoutError:
            return got


def seen_members(frames: list[dict[str, Any]]) -> set[str] | None:
    """The members a client's presence channel shows after ``frames``, as pusher-js keeps them; None if its last
    word from the server was a refusal."""
    members: set[str] | None = None
    for frame in frames:
        event = frame["event"]
        if event == "pusher_internal:subscription_succeeded":
            members = set(json.loads(frame["data"])["presence"]["ids"])
        elif event == "pusher:subscription_error":
            members = None
        elif event == "pusher_internal:member_added" and members is not None:
            members.add(json.loads(frame["data"])["user_id"])
        elif event == "pusher_internal:member_removed" and members is not None:
            members.discard(json.loads(frame["data"])["user_id"])
    return members


async def join_at_once(cluster: list[RunningEmulator], per_node: int) -> list[tuple[str, Client]]:
    """``per_node`` users (one connection each) on every node, all subscribing to ROOM in one go."""
    joining = [
        (f"user-{index}-{number}", await Client.open(node))
        for index, node in enumerate(cluster)
        for number in range(per_node)
    ]
    await asyncio.gather(*(send_join(client, user_id) for user_id, client in joining))
    return joining


async def settled(cluster: list[RunningEmulator], within: float = 10.0) -> list[str]:
    """ROOM's members once every node lists the same ones (a node lists the joins it admitted and Redis has not
    answered yet, so the lists differ until then); what the joins brought has been written to the clients by then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        lists = [await presence_ids(node, ROOM) for node in cluster]
        if all(found == lists[0] for found in lists):
            return lists[0]
        assert loop.time() < deadline, f"the nodes still disagree after {within} s: {lists}"
        await asyncio.sleep(0.05)


async def test_users_joining_at_once_on_two_nodes_do_not_pass_the_limit(receiver: Receiver, nodes: Nodes) -> None:
    """Before: each node admitted 3 of its 4 users against its own view, and the channel had 6 members."""
    cluster = await nodes(2, app=limited(receiver))
    joining = await join_at_once(cluster, per_node=4)
    members = await settled(cluster)
    assert len(members) == LIMIT, members
    outcomes = await asyncio.gather(*(frames_for(client, 0.5) for _, client in joining))
    for (user_id, _), frames in zip(joining, outcomes, strict=True):
        refusals = [frame for frame in frames if frame["event"] == "pusher:subscription_error"]
        if user_id in members:
            assert refusals == []
            assert seen_members(frames) == set(members), (user_id, frames)  # the others' view ends as the channel
        else:
            assert refusals == [REFUSAL], (user_id, frames)
            assert seen_members(frames) is None
    # One member_added webhook per member, none for a refused user.
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) >= LIMIT, within=3)
    await receiver.quiet(len(receiver.deliveries), 0.5)
    assert sorted(event["user_id"] for event in receiver.events(names={"member_added"})) == members
    assert not receiver.events(names={"member_removed"})

    # Everyone else is still served: the members hear a publish, the refused do not, and a refused client may join
    # again once a member has left.
    clients = dict(joining)
    await asyncio.to_thread(sdk(cluster[1]).trigger, ROOM, "news", "x")
    for user_id, client in joining:
        if user_id in members:
            await client.expect("news")
        else:
            await client.silent(0.2)
    leaving = members[0]
    await clients[leaving].ws.close()
    outside = next(user_id for user_id, _ in joining if user_id not in members)
    await until(lambda: all(leaving not in node.node.states["1"].presence_hash(ROOM) for node in cluster))
    await send_join(clients[outside], outside)
    await clients[outside].expect("pusher_internal:subscription_succeeded")
    later = sorted([*members[1:], outside])
    assert await presence_ids(cluster[0], ROOM) == later


async def test_a_user_with_connections_on_both_nodes_counts_once(receiver: Receiver, nodes: Nodes) -> None:
    one, two = await nodes(2, app=limited(receiver))
    for user_id in ("alice", "bob"):
        await (await Client.open(one)).subscribe(ROOM, user_id)
    bob_again, carol = await Client.open(two), await Client.open(two)
    await asyncio.gather(send_join(bob_again, "bob"), send_join(carol, "carol"))
    await bob_again.expect("pusher_internal:subscription_succeeded")
    await carol.expect("pusher_internal:subscription_succeeded")
    for client in (bob_again, carol):
        assert "pusher:subscription_error" not in [frame["event"] for frame in await frames_for(client, 0.5)]
    assert await presence_ids(one, ROOM) == ["alice", "bob", "carol"]
    dave = await Client.open(one)
    await send_join(dave, "dave")
    assert await dave.expect("pusher:subscription_error") == REFUSAL


async def test_a_single_node_refuses_with_the_same_error(receiver: Receiver, start_emulator: StartEmulator) -> None:
    node = await start_emulator(app=limited(receiver))
    for user_id in ("alice", "bob", "carol"):
        await (await Client.open(node)).subscribe(ROOM, user_id)
    dave = await Client.open(node)
    await send_join(dave, "dave")
    assert await dave.recv() == REFUSAL


async def test_joins_during_a_redis_outage_are_checked_by_each_node_alone(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer
) -> None:
    """While Redis is away a join is not held up: each node admits against what it knows (docs/emulator.md "During a
    Redis outage"), so the channel may pass the limit, and Redis, back, counts every member the nodes hold."""
    one, two = await nodes(2, app=limited(receiver))
    redis_server.stop()
    await until(lambda: not cluster_of(one)._connected.is_set() and not cluster_of(two)._connected.is_set())
    for node, user_ids in ((one, ("alice", "bob")), (two, ("carol", "dave"))):
        for user_id in user_ids:
            await (await Client.open(node)).subscribe(ROOM, user_id)
    redis_server.start()
    everyone = ["alice", "bob", "carol", "dave"]
    for node in (one, two):
        await until(lambda node=node: sorted(node.node.states["1"].presence_hash(ROOM)) == everyone, within=15)
    counted = await redis_command(redis_server, "HKEYS", f"relay:mem:1:{ROOM}")
    assert isinstance(counted, list) and sorted(counted) == everyone  # the reconciliations count what the nodes hold
    erin = await Client.open(two)
    await send_join(erin, "erin")
    assert await erin.expect("pusher:subscription_error") == REFUSAL
