"""A Redis that loses its data (restarted without persistence, or flushed) while nodes hold channels and members:
the webhooks the nodes sent before are not sent again, and what left during the outage is announced as gone, once.
With a real redis-server and two nodes."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_webhooks import cluster_of, counts_in, hooked, until
from tests.conftest import RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver

NODE_TTL = 2.0  # departures are held this long after the loss, so the test waits past it


def hooks(receiver: Receiver) -> list[tuple[str, str, str | None]]:
    return sorted((event["name"], event["channel"], event.get("user_id")) for event in receiver.events())


async def restart_empty(redis_server: RedisServer, nodes: list[RunningEmulator], during: Any) -> None:
    """Stop Redis, run ``during`` while every node is cut off, start an empty Redis, wait for every node to count
    itself in again."""
    redis_server.stop()
    await until(lambda: not any(cluster_of(node)._connected.is_set() for node in nodes))
    await during()
    redis_server.start()
    await until(lambda: all(cluster_of(node)._connected.is_set() for node in nodes))


def came_and_went(channel: str, user_id: str) -> list[tuple[str, str, str | None]]:
    """The webhooks of a presence channel that one member joined and left, sorted as ``hooks`` gives them."""
    return [
        ("channel_occupied", channel, None),
        ("channel_vacated", channel, None),
        ("member_added", channel, user_id),
        ("member_removed", channel, user_id),
    ]


async def test_a_redis_that_lost_its_data_hears_departures_and_no_second_arrival(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Before: every node counted what it held into the empty Redis as new (channel_occupied and member_added again
    for everything) and nothing that left during the outage was ever announced as gone."""
    a = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    b = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    alice = await Client.open(a)
    await alice.subscribe("presence-stay", "alice")
    carol, bob = await Client.open(b), await Client.open(b)
    await carol.subscribe("presence-stay", "carol")
    await bob.subscribe("presence-gone", "bob")
    await receiver.until(lambda: len(receiver.events()) == 5, within=5)
    before = hooks(receiver)

    async def both_leave() -> None:
        await carol.ws.close()
        await bob.ws.close()
        await asyncio.sleep(0.2)

    await restart_empty(redis_server, [a, b], both_leave)
    await receiver.until(lambda: len(receiver.events()) == 8, within=NODE_TTL + 5)
    await receiver.quiet(len(receiver.deliveries), 1.0)
    assert hooks(receiver) == sorted(
        [
            *before,
            ("channel_vacated", "presence-gone", None),
            ("member_removed", "presence-gone", "bob"),
            ("member_removed", "presence-stay", "carol"),
        ]
    )
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    occupied = await check.hgetall("relay:occ:1")
    members = await check.hgetall("relay:mem:1:presence-stay")
    await check.aclose()
    assert (occupied, members) == ({"presence-stay": "1"}, {"alice": "1"})
    after_outage = hooks(receiver)
    await alice.ws.close()  # the restored counts end as they should: her leaving empties the channel
    await receiver.until(lambda: len(receiver.events()) == 10, within=5)
    assert hooks(receiver) == sorted(
        [*after_outage, ("channel_vacated", "presence-stay", None), ("member_removed", "presence-stay", "alice")]
    )


async def test_a_departure_is_cancelled_by_a_node_that_comes_back_holding_it(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """The node back first held a member that left it during the outage, but the same user is still present on a
    node that comes back later (within node_ttl): no member_removed, no channel_vacated."""
    # Twice the others' node_ttl: b comes back a second late on purpose, and a loaded machine's reconnection took
    # the rest of a 2 s hold (a then announced dave gone, and b brought him back)
    node_ttl = 2 * NODE_TTL
    a = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=node_ttl)
    b = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=node_ttl)
    on_a, on_b = await Client.open(a), await Client.open(b)
    await on_a.subscribe("presence-room", "dave")
    await on_b.subscribe("presence-room", "dave")
    await receiver.until(lambda: len(receiver.events()) == 2, within=5)
    register = cluster_of(b)._register

    async def late_register() -> None:
        await asyncio.sleep(1.0)
        await register()

    cluster_of(b)._register = late_register  # type: ignore[method-assign]

    async def leave_a() -> None:
        await on_a.ws.close()
        await asyncio.sleep(0.2)

    await restart_empty(redis_server, [a, b], leave_a)
    await asyncio.sleep(node_ttl + 1.0)
    assert hooks(receiver) == [("channel_occupied", "presence-room", None), ("member_added", "presence-room", "dave")]


async def test_a_channel_and_member_new_on_a_node_back_first_are_not_announced_again_when_another_held_them(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """alice holds presence-room on A; during the outage carol, and alice on a second connection, join it on B, which
    counts itself in first. Before: B counted the channel and alice as new in the empty Redis and sent a second
    channel_occupied and member_added, though A had announced both; now B knows from its replica that A holds them."""
    a = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    b = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    alice_on_a = await Client.open(a)
    await alice_on_a.subscribe("presence-room", "alice")
    await receiver.until(lambda: len(receiver.events()) == 2, within=5)
    register = cluster_of(a)._register

    async def late_register() -> None:
        await asyncio.sleep(1.0)
        await register()

    cluster_of(a)._register = late_register  # type: ignore[method-assign]
    carol, alice_on_b = await Client.open(b), await Client.open(b)

    async def join_b() -> None:
        await carol.subscribe("presence-room", "carol")
        await alice_on_b.subscribe("presence-room", "alice")

    await restart_empty(redis_server, [a, b], join_b)
    await asyncio.sleep(NODE_TTL + 1.0)
    assert hooks(receiver) == [
        ("channel_occupied", "presence-room", None),
        ("member_added", "presence-room", "alice"),
        ("member_added", "presence-room", "carol"),
    ]


async def test_a_departure_held_when_redis_lost_its_data_is_still_sent(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """A member left just before the loss: its member_removed and channel_vacated were held in Redis (the webhook
    delay), which lost them. Before: never sent; now the node that held them holds them again."""
    app = replace(hooked(receiver), webhook_delay=2.0)
    a = await start_emulator(app=app, redis_url=redis_server.url, node_ttl=NODE_TTL)
    erin = await Client.open(a)
    await erin.subscribe("presence-brief", "erin")
    await receiver.until(lambda: len(receiver.events()) == 2, within=5)
    await erin.ws.close()
    await until(lambda: len(cluster_of(a)._held) == 2)

    async def nothing() -> None:
        pass

    await restart_empty(redis_server, [a], nothing)
    await receiver.until(lambda: len(receiver.events()) == 4, within=NODE_TTL + 5)
    await receiver.quiet(len(receiver.deliveries), 1.0)
    assert hooks(receiver) == came_and_went("presence-brief", "erin")


async def test_a_restore_cut_short_by_a_redis_error_is_run_again_from_what_was_announced(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """Redis drops the connection as the restore's counts are sent. The next reconciliation used to take the loss as
    over (the node had already noted the new generation) and re-announced everyone, and lost carol's departure."""
    a = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    cluster = cluster_of(a)
    alice, bob, carol = await Client.open(a), await Client.open(a), await Client.open(a)
    await alice.subscribe("presence-one", "alice")
    await bob.subscribe("presence-two", "bob")
    await carol.subscribe("presence-three", "carol")
    await receiver.until(lambda: len(receiver.events()) == 6, within=5)
    before = hooks(receiver)
    send = cluster._send
    calls = 0

    async def dropped_once(pipe: Any) -> list[Any]:
        nonlocal calls
        if counts_in(cluster, pipe):
            calls += 1
            if calls == 1:  # the restore's
                raise RedisConnectionError("Connection reset by peer")
        return await send(pipe)

    async def carol_leaves() -> None:
        await carol.ws.close()
        await asyncio.sleep(0.2)
        cluster._send = dropped_once  # type: ignore[method-assign]

    await restart_empty(redis_server, [a], carol_leaves)
    await receiver.until(lambda: len(receiver.events()) == 8, within=NODE_TTL + 5)
    await receiver.quiet(len(receiver.deliveries), 1.0)
    assert calls >= 2  # the restore cut short, and the one run again
    assert hooks(receiver) == sorted(
        [*before, ("channel_vacated", "presence-three", None), ("member_removed", "presence-three", "carol")]
    )


async def test_a_departure_between_a_flush_and_the_next_heartbeat_is_still_sent(
    redis_server: RedisServer, start_emulator: StartEmulator, receiver: Receiver
) -> None:
    """FLUSHALL with the node connected: it notices at its next heartbeat. A member leaving before then was counted
    out of the empty Redis (nothing to move) and struck from the node's record, so the restore never announced the
    departure. The count now refuses a Redis of another generation, and the record keeps her for the restore."""
    node = await start_emulator(app=hooked(receiver), redis_url=redis_server.url, node_ttl=NODE_TTL)
    frank = await Client.open(node)
    await frank.subscribe("presence-flushed", "frank")
    await receiver.until(lambda: len(receiver.events()) == 2, within=5)
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    await check.flushall()
    await check.aclose()
    await frank.ws.close()
    await receiver.until(lambda: len(receiver.events()) == 4, within=NODE_TTL * 2 + 5)
    await receiver.quiet(len(receiver.deliveries), 1.0)
    assert hooks(receiver) == came_and_went("presence-flushed", "frank")
