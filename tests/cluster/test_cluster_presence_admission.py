"""A presence channel's member limit (``limits.max_presence_members``) holds across the cluster, with the protocol of a
single node: a user who is not a member on the node yet is admitted by Redis (the member counter's script checks the
limit and counts the user in one run) before anything of the join is visible, so a refused client gets only the
single node's ``pusher:subscription_error``, never a ``subscription_succeeded`` first (which pusher-js would keep:
``subscribed`` true, the member list, no way to subscribe again). During a Redis outage each node decides alone."""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import replace
from typing import Any

import pytest

from relay.emulator import cluster as cluster_module
from relay.protocol.channels import Limits
from relay.protocol.signing import channel_auth
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, Nodes, answers, nodes, presence_ids, sdk
from tests.cluster.test_cluster_hunt_fixes import redis_command
from tests.cluster.test_cluster_webhooks import cluster_of, counts_in, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.node_scenarios import NODE_DIR, app_env, node_modules, run_scenario
from tests.webhook_receiver import Receiver

__all__ = ["nodes"]

LIMIT = 3
ROOM = "presence-room"


def refusal(limit: int = LIMIT, channel: str = ROOM) -> dict[str, Any]:
    return {
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": "LimitReached", "error": f"presence limit of {limit} reached", "status": 4100},
    }


def limited(receiver: Receiver, limit: int = LIMIT) -> Any:
    return hooked(receiver, limits=Limits(max_presence_members=limit))


async def send_join(client: Client, user_id: str, channel: str = ROOM) -> None:
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}})
    auth = channel_auth("app-key", "app-secret", client.socket_id, channel, channel_data)
    await client.send("pusher:subscribe", {"channel": channel, "channel_data": channel_data, "auth": auth})


async def frames_for(client: Client, within: float) -> list[dict[str, Any]]:
    """Every frame ``client`` gets until it has been silent for ``within`` seconds."""
    got = []
    while True:
        try:
            got.append(await client.recv(within))
        except TimeoutError:
            return got


async def settled(cluster: list[RunningEmulator], within: float = 10.0) -> list[str]:
    """ROOM's members once every node lists the same ones (the announcements have crossed Redis)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        lists = [await presence_ids(node, ROOM) for node in cluster]
        if all(found == lists[0] for found in lists):
            return lists[0]
        assert loop.time() < deadline, f"the nodes still disagree after {within} s: {lists}"
        await asyncio.sleep(0.05)


async def counted(redis_server: RedisServer, channel: str = ROOM) -> list[str]:
    """The users the member counter in Redis holds for ``channel``."""
    fields = await redis_command(redis_server, "HKEYS", f"relay:mem:1:{channel}")
    assert isinstance(fields, list)
    return sorted(fields)


async def test_users_joining_at_once_on_two_nodes_get_a_single_node_s_answers(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes, limit 3, eight users subscribing at once (four on each). Before: each node admitted against what it
    knew, and the channel had 6 members."""
    monkeypatch.setattr(cluster_module, "ADMISSION_DEADLINE_SECONDS", 5.0)  # a slow Redis still answers in time
    cluster = await nodes(2, app=limited(receiver))
    joining = [(f"user-{index}-{n}", await Client.open(node)) for index, node in enumerate(cluster) for n in range(4)]
    await asyncio.gather(*(send_join(client, user_id) for user_id, client in joining))
    outcomes = await asyncio.gather(*(frames_for(client, 3.0) for _, client in joining))
    members = await settled(cluster)
    assert len(members) == LIMIT, members
    assert await counted(redis_server) == members
    for (user_id, _), frames in zip(joining, outcomes, strict=True):
        events = [frame["event"] for frame in frames]
        assert "pusher_internal:member_removed" not in events, (user_id, frames)
        if user_id in members:
            assert events[0] == "pusher_internal:subscription_succeeded", (user_id, frames)
            assert "pusher:subscription_error" not in events, (user_id, frames)
        else:
            assert frames == [refusal()], (user_id, frames)  # nothing else: no member list, no member event
    # One member_added webhook per member, none for a refused user.
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) >= LIMIT, within=3)
    await receiver.quiet(len(receiver.deliveries), 0.5)
    assert sorted(event["user_id"] for event in receiver.events(names={"member_added"})) == members
    assert not receiver.events(names={"member_removed"})

    # The members hear a publish, the refused do not; a refused client gets in once a member has left.
    clients = dict(joining)
    await asyncio.to_thread(sdk(cluster[1]).trigger, ROOM, "news", "x")
    for user_id, client in joining:
        if user_id in members:
            await client.expect("news")
        else:
            await client.silent(0.2)
    leaving = members[0]
    await clients[leaving].ws.close()
    await until(lambda: all(leaving not in node.node.states["1"].presence_hash(ROOM) for node in cluster))
    outside = next(user_id for user_id, _ in joining if user_id not in members)
    await send_join(clients[outside], outside)
    await clients[outside].expect("pusher_internal:subscription_succeeded")
    assert await settled(cluster) == sorted([*members[1:], outside])


async def pusher_js_admission(nodes: list[RunningEmulator]) -> dict[str, Any]:
    """The pusher-js scenario with four clients on each of two nodes (on a single node: all eight on it)."""
    node_modules("pusher-js", "pusher")

    async def left(message: dict[str, Any]) -> str:
        user = message["user"]
        await until(
            lambda: all(user not in node.node.states["1"].presence_hash("presence-admission") for node in nodes)
        )
        return "ok"

    first = nodes[0]
    env = {**app_env(first.host, first.port, first.app), "RELAY_PORT_2": str(nodes[-1].port), "RELAY_LIMIT": str(LIMIT)}
    run = await run_scenario(NODE_DIR / "pusher_js_presence_admission.mjs", env, on_step=left, limit_s=40)
    assert run.summary["checks"] == ["limit-held", "rejoined"], run.summary
    assert len(run.summary["admitted"]) == LIMIT
    return run.summary


async def test_pusher_js_refused_by_the_cluster_is_answered_as_by_a_single_node(
    receiver: Receiver, nodes: Nodes, start_emulator: StartEmulator
) -> None:
    """Real pusher-js clients, limit 3: a refused channel has ``subscribed === false`` and no member list, on a
    cluster as on a single node, and, once a member has left, subscribes again and gets in. pusher-js 8.6 keeps a
    channel refused by the server pending, so ``pusher.unsubscribe(name); pusher.subscribe(name)`` sends nothing, on
    a single node as well: the scenario records that and then calls the channel's own ``subscribe()``."""
    single = await pusher_js_admission([await start_emulator(app=limited(receiver))])
    clustered = await pusher_js_admission(await nodes(2, app=limited(receiver)))
    assert clustered["unsubscribeSubscribeGotIn"] == single["unsubscribeSubscribeGotIn"]


async def test_a_connection_closed_while_its_admission_is_pending_leaves_nothing_counted(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis is held up (``CLIENT PAUSE``) while a user joins: nothing of the join is visible meanwhile (a publish to
    the channel does not reach it, a second subscribe is answered as for an existing subscription), and when the
    connection closes before Redis answers, the count is undone: a later join, with a limit of 2, is admitted."""
    # Redis held up for 6 s, and a deadline past it: everything below happens while the admission is pending, on
    # however loaded a machine.
    monkeypatch.setattr(cluster_module, "ADMISSION_DEADLINE_SECONDS", 8.0)
    one, two = await nodes(2, app=limited(receiver, limit=2))
    host = await Client.open(one)
    await host.subscribe(ROOM, "host")
    await settled([one, two])
    pending, later = await Client.open(one), await Client.open(two)
    loop = asyncio.get_running_loop()
    paused_at = loop.time()
    await redis_command(redis_server, "CLIENT", "PAUSE", "6000")
    await send_join(pending, "ghost")
    await asyncio.sleep(0.2)  # the node asked Redis, which answers no one for 6 s
    await send_join(pending, "ghost")
    duplicate = await pending.recv()
    assert duplicate["event"] == "pusher:error", duplicate
    assert duplicate["data"]["message"] == f"Existing subscription to channel {ROOM}"
    await asyncio.to_thread(sdk(one).trigger, ROOM, "news", "while-pending")  # delivered here before Redis answers
    assert (await host.expect("news"))["data"] == "while-pending"
    await pending.silent(0.1)
    await pending.ws.close()
    assert loop.time() < paused_at + 6.0, "closed after Redis answered: the test proves nothing"
    await asyncio.sleep(paused_at + 6.0 - loop.time())
    await settled([one, two])
    assert await presence_ids(one, ROOM) == ["host"]
    await until(lambda: not cluster_of(one)._admitting)
    # the undo, queued behind the admission, has run (waited for, not 0.2 s: a round trip to Redis on a loaded machine)
    await asyncio.wait_for(cluster_of(one)._queue.join(), 10)
    assert await counted(redis_server) == ["host"]
    await later.subscribe(ROOM, "latecomer")
    assert await settled([one, two]) == ["host", "latecomer"]
    host_frames = await frames_for(host, 0.3)
    assert [frame["event"] for frame in host_frames] == ["pusher_internal:member_added"]
    assert json.loads(host_frames[0]["data"])["user_id"] == "latecomer"  # never ghost


async def test_joins_during_a_redis_outage_are_decided_by_each_node_at_once(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While Redis is away a join is not held up: each node admits against what it knows, at once (so the channel
    may pass the limit, as documented), and Redis, back, counts every member the nodes hold."""
    # A join held for Redis would take the whole deadline: far longer than the 2 s a slow machine may need at once.
    monkeypatch.setattr(cluster_module, "ADMISSION_DEADLINE_SECONDS", 5.0)
    one, two = await nodes(2, app=limited(receiver))
    redis_server.stop()
    await until(lambda: not cluster_of(one)._connected.is_set() and not cluster_of(two)._connected.is_set())
    loop = asyncio.get_running_loop()
    for node, user_ids in ((one, ("alice", "bob")), (two, ("carol", "dave"))):
        for user_id in user_ids:
            started = loop.time()
            await (await Client.open(node)).subscribe(ROOM, user_id)
            assert loop.time() - started < 2.0
    refused = await Client.open(one)
    await send_join(refused, "erin")  # node one knows 2 members: admitted; a third there refused at once
    await refused.expect("pusher_internal:subscription_succeeded", within=2.0)
    frank = await Client.open(one)
    await send_join(frank, "frank")
    assert await frank.recv(within=2.0) == refusal()
    redis_server.start()
    everyone = ["alice", "bob", "carol", "dave", "erin"]
    for node in (one, two):
        await until(lambda node=node: sorted(node.node.states["1"].presence_hash(ROOM)) == everyone, within=15)
    assert await counted(redis_server) == everyone  # the reconciliations count what the nodes hold
    gina = await Client.open(two)
    await send_join(gina, "gina")
    assert await gina.recv() == refusal()


async def test_a_join_pending_when_redis_goes_away_is_decided_by_its_node(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer
) -> None:
    """Redis stops while a join waits for its answer: the node decides it alone (not held up until Redis is back)."""
    one, _ = await nodes(2, app=limited(receiver))
    waiting = await Client.open(one)
    await redis_command(redis_server, "CLIENT", "PAUSE", "6000")
    await send_join(waiting, "alice")
    await waiting.silent(0.3)  # Redis has not answered
    redis_server.stop()
    await waiting.expect("pusher_internal:subscription_succeeded", within=2.0)
    assert await presence_ids(one, ROOM) == ["alice"]
    redis_server.start()
    await until(lambda: cluster_of(one)._connected.is_set(), within=15)
    await until(lambda: not cluster_of(one)._admitting)
    await answers(lambda: counted(redis_server), ["alice"])  # the reconciliation counts what the node holds


async def test_a_join_is_answered_within_the_admission_deadline_while_redis_is_stalled(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer
) -> None:
    """Redis stalls while connected (SIGSTOP: the connection stays up, nothing answers). Before: a presence join waited
    for the stalled Redis (the whole stall, unbounded with a client without a socket timeout). Each admission has a
    deadline (1 s): the node then decides alone, at once. The scripts answered late are reconciled with what the node
    decided: ghost, whose connection closed before the deadline, was counted by its late script and is counted out
    again; alice, admitted by the node, stays counted."""
    one, two = await nodes(2, app=limited(receiver))
    assert redis_server.process is not None
    ghost, alice = await Client.open(one), await Client.open(one)
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        await send_join(ghost, "ghost")  # its admission is sent to the stalled Redis
        await asyncio.sleep(0.1)
        await send_join(alice, "alice")
        await asyncio.sleep(0.1)
        await ghost.ws.close()  # before its deadline: the node never holds ghost
        # At the 1 s deadline, with room for a loaded machine: the bug waited for the whole stall, which lasts until
        # the SIGCONT below.
        await alice.expect("pusher_internal:subscription_succeeded", within=8.0)
        assert await presence_ids(one, ROOM) == ["alice"]
        await asyncio.sleep(0.5)  # the late answers are still to come
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    await until(lambda: not cluster_of(one)._admitting)
    await answers(lambda: counted(redis_server), ["alice"])
    assert await settled([one, two]) == ["alice"]
    await asyncio.sleep(0.5)
    assert await counted(redis_server) == await presence_ids(one, ROOM) == ["alice"]


async def test_a_second_connection_of_a_user_admitted_after_the_first_left_stays_counted(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer
) -> None:
    """Two connections of one user on a node, both waiting for admission (Redis answers each 0.3 s late). The first is
    admitted, joins and closes while the second's script runs; that script finds the user counted for the node (the
    first's field) and answers 0. Before: the second joined as counted by its admission, and the first's leave, counted
    after, took the user out of Redis while the second held it (the limit then let others in past it). Now the join
    is counted after that leave: Redis holds the user until the user's last connection closes, and the member_removed
    webhook comes only then."""
    one, two = await nodes(2, app=limited(receiver, limit=2))
    cluster = cluster_of(one)
    send = cluster._send

    async def slow(pipe: Any) -> list[Any]:
        if any(count[-1] != "" for count in counts_in(cluster, pipe)):  # an admission (with a limit)
            await asyncio.sleep(0.3)
        return await send(pipe)

    cluster._send = slow  # type: ignore[method-assign]
    first, second = await Client.open(one), await Client.open(one)
    await send_join(first, "u")
    await asyncio.sleep(0.05)
    await send_join(second, "u")
    await first.expect("pusher_internal:subscription_succeeded", within=3)
    await first.ws.close()  # while the second's admission is in flight
    await second.expect("pusher_internal:subscription_succeeded", within=3)
    await until(lambda: not cluster._admitting)
    await asyncio.sleep(0.5)  # the first's leave and the second's join have been counted
    assert await settled([one, two]) == ["u"]
    assert await counted(redis_server) == ["u"]
    # The limit of 2 holds: one more user gets in, a second is refused.
    x, y = await Client.open(two), await Client.open(two)
    await send_join(x, "x")
    await x.expect("pusher_internal:subscription_succeeded")
    await send_join(y, "y")
    assert await y.recv() == refusal(limit=2)
    assert await settled([one, two]) == ["u", "x"]
    await asyncio.sleep(receiver_delay(one) + 0.5)
    assert [event["user_id"] for event in receiver.events(names={"member_removed"})] == []
    await second.ws.close()
    await receiver.until(lambda: bool(receiver.events(names={"member_removed"})), within=receiver_delay(one) + 3)
    assert [event["user_id"] for event in receiver.events(names={"member_removed"})] == ["u"]
    assert await counted(redis_server) == ["x"]


def receiver_delay(node: RunningEmulator) -> float:
    return float(node.app.webhook_delay)


async def test_a_join_waiting_for_admission_counts_as_authorized(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``user_authentication_timeout`` of 1 s, a presence join sent at once, Redis held up (``CLIENT PAUSE``, with a
    deadline longer than the pause so that Redis answers). Before: the connection, not yet subscribed while it waited,
    was closed 4009 as unauthorized; its join passed auth, so it is authorized: Redis's answer admits it."""
    monkeypatch.setattr(cluster_module, "ADMISSION_DEADLINE_SECONDS", 8.0)
    one, _ = await nodes(2, app=replace(limited(receiver), user_authentication_timeout=1.0))
    client = await Client.open(one)
    await redis_command(redis_server, "CLIENT", "PAUSE", "4000")
    await send_join(client, "alice")
    await client.silent(2.0)  # waiting, past the authentication timeout
    await client.expect("pusher_internal:subscription_succeeded", within=4.0)
    await client.silent(1.5)
    assert client.ws.close_code is None
    assert await presence_ids(one, ROOM) == ["alice"]


async def test_a_join_redis_refuses_leaves_the_connection_unauthorized_as_on_a_single_node(
    receiver: Receiver, nodes: Nodes, redis_server: RedisServer
) -> None:
    """The wait does not authorize: refused by Redis (the channel full of a user node one has not heard of), the
    connection has joined nothing and is closed 4009 at the authentication timeout, as a single node closes one."""
    one, _ = await nodes(2, app=replace(limited(receiver, 1), user_authentication_timeout=1.0))
    await redis_command(redis_server, "HSET", f"relay:mem:1:{ROOM}", "ghost", "{}")
    client = await Client.open(one)
    await send_join(client, "alice")
    refusal = await client.expect("pusher:subscription_error", within=3.0)
    assert refusal["data"]["type"] == "LimitReached", refusal
    error = await client.expect("pusher:error", within=3.0)
    assert error["data"] == {"code": 4009, "message": "Connection is unauthorized: sign in or subscribe in time"}
    await asyncio.wait_for(client.ws.wait_closed(), 3.0)
    assert client.ws.close_code == 4009
