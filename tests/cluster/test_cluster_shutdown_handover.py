"""A node's graceful shutdown in a cluster leaves its held channel_vacated / member_removed webhooks to the nodes that
stay, with a real redis-server and nodes as real processes stopped with SIGTERM: a client that moves to another node
within webhook_delay cancels them (no webhook at all, as when it comes back to the same node), and one that does not
come back gets each webhook once, from a survivor, after the delay. The last node to leave sends them itself."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from relay.emulator.cluster import HOLD_GRACE_SECONDS
from tests.cluster.test_cluster import Client
from tests.cluster.test_cluster_held_webhooks import HELD, REMOVED, SWEEPS, VACATED, Spawn
from tests.cluster.test_cluster_held_webhooks import check as check
from tests.cluster.test_cluster_held_webhooks import spawn as spawn
from tests.conftest import RunningEmulator
from tests.emulator_process import EmulatorProcess
from tests.webhook_receiver import Receiver, StartReceiver

DELAY = 2.0  # webhook_delay: the time a client has to come back on the other node
MEMBERS = "relay:mem:1:presence-room"  # the member counter: alice's field goes when her last node counts her out
PENDING = ("relay:vacating:*", "relay:leaving:*")
RETURNS = {"channel_occupied", "member_added"}  # what a return after a sent departure would send again


async def alice_on_a(
    start_receiver: StartReceiver, spawn: Spawn, delay: float = DELAY
) -> tuple[Receiver, Receiver, EmulatorProcess, EmulatorProcess, RunningEmulator, Client]:
    """Nodes A and B (webhook_delay ``delay``), each posting its webhooks to a receiver of its own, and alice in
    presence-room on A, which has sent channel_occupied and member_added: (A's receiver, B's, A, B, B as a client
    reaches it, alice)."""
    to_a, to_b = await start_receiver(), await start_receiver()
    a_process, a = await spawn(to_a.url, delay=delay)
    b_process, b = await spawn(to_b.url, delay=delay)
    alice = await Client.open(a)
    await alice.subscribe("presence-room", "alice")
    await to_a.until(lambda: len(to_a.events()) >= 2, within=5)
    return to_a, to_b, a_process, b_process, b, alice


async def stop_a(a_process: EmulatorProcess, alice: Client) -> tuple[float, float]:
    """SIGTERM A, which closes alice: once A has exited cleanly, when it was signalled and when she saw the close
    (her leave lies between the two)."""
    signalled_at = time.monotonic()
    stopping = asyncio.create_task(a_process.stop())
    left_at = await closed_by_shutdown(alice)
    assert await stopping == 0
    return signalled_at, left_at


async def counted_out(check: aioredis.Redis, within: float = 10.0) -> None:
    """Wait until no node counts alice in presence-room any more (the stopping node has counted her leave)."""
    deadline = time.monotonic() + within
    while await check.hget(MEMBERS, "alice") is not None:
        assert time.monotonic() < deadline, "alice was never counted out"
        await asyncio.sleep(0.01)


async def hold_keys(check: aioredis.Redis) -> list[str]:
    """Every key a hold may leave behind: the holds' sorted set and the pending keys."""
    found = [str(key) for key in await check.keys("relay:holds:*")]
    for pattern in PENDING:
        found += [str(key) for key in await check.keys(pattern)]
    return sorted(found)


def held_events(receiver: Receiver) -> list[dict[str, object]]:
    return sorted(receiver.events(names=HELD), key=lambda event: str(event["name"]))


def arrivals(receiver: Receiver) -> list[float]:
    """When each held webhook's delivery arrived."""
    return [delivery.at for delivery in receiver.deliveries for event in delivery.events if event["name"] in HELD]


async def closed_by_shutdown(client: Client) -> float:
    """Wait for the stopping node to close ``client`` (4200), and return when it did."""
    await asyncio.wait_for(client.ws.wait_closed(), 10)
    assert client.ws.close_code == 4200
    return time.monotonic()


@pytest.mark.long
async def test_a_member_who_moves_to_another_node_within_the_delay_at_a_shutdown_makes_no_webhook(
    start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """The ops audit's case: alice, in a presence channel on A, is closed by A's SIGTERM and subscribes again on B
    within webhook_delay. No member_removed or channel_vacated (A used to send them at once, as it left), and so no
    member_added or channel_occupied from B either: as when she comes back to a node that stays."""
    # A delay longer than a stopping node's slowest exit (each of its five steps of leaving the cluster may take its
    # 3 s bound under load, and its webhooks 5 s), so that she is back within it.
    delay = 21.0
    to_a, to_b, a_process, _, b, alice = await alice_on_a(start_receiver, spawn, delay=delay)
    _, left_at = await stop_a(a_process, alice)  # A is gone: whatever it would send for her leave, it has sent
    await counted_out(check)  # and her leave was counted (held, or sent): a return now is one a hold must absorb
    back = await Client.open(b)
    await back.subscribe("presence-room", "alice")
    assert time.monotonic() < left_at + delay, "not back within the delay: the test proves nothing"

    # B's sweep would have sent a hold still in Redis by then.
    await asyncio.sleep(max(0.0, left_at + delay + HOLD_GRACE_SECONDS + SWEEPS - time.monotonic()))
    assert to_a.events()[2:] == []
    assert to_b.events(names=HELD | RETURNS) == []
    assert await hold_keys(check) == []


async def test_a_member_who_does_not_come_back_after_a_shutdown_is_removed_once_by_a_survivor_after_the_delay(
    start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """alice is closed by A's SIGTERM and does not come back: B, which stays, sends channel_vacated and
    member_removed once each, after the delay; A sends neither. A handed its holds over as due at their own time, so
    B sends them at its next sweep after the delay, not past the grace it gives a live node's timer."""
    to_a, to_b, a_process, _, _, alice = await alice_on_a(start_receiver, spawn)  # B: no client, only its sweep
    signalled_at, left_at = await stop_a(a_process, alice)

    await to_b.until(lambda: len(to_b.events(names=HELD)) >= 2, within=15)
    await asyncio.sleep(SWEEPS)  # not sent again: B has swept once more meanwhile
    assert held_events(to_b) == [VACATED, REMOVED]
    assert to_b.events() == to_b.events(names=HELD)
    assert to_a.events(names=HELD) == []
    assert min(arrivals(to_b)) >= signalled_at + DELAY, "sent before the delay ended"
    assert max(arrivals(to_b)) < left_at + DELAY + HOLD_GRACE_SECONDS, "held past the delay as for a killed node"
    assert await hold_keys(check) == []


async def test_nodes_stopping_together_send_each_held_webhook_once(
    start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """Both nodes get SIGTERM at once (a whole deployment stopped, or --workers): whichever leaves Redis last finds
    no node left to hand the holds to and sends them, its own and those the other left, at once; each once."""
    to_a, to_b, a_process, b_process, _, _alice = await alice_on_a(start_receiver, spawn)
    assert await asyncio.gather(a_process.stop(), b_process.stop()) == [0, 0]

    both = [*to_a.events(names=HELD), *to_b.events(names=HELD)]
    assert sorted(both, key=lambda event: str(event["name"])) == [VACATED, REMOVED]
    assert await hold_keys(check) == []


async def test_the_last_node_to_leave_sends_the_holds_handed_to_it(
    start_receiver: StartReceiver, spawn: Spawn, check: aioredis.Redis
) -> None:
    """A stops and hands alice's holds to B; B stops too before their time: with no node left to hand them to, B
    sends them as it leaves, once each, rather than leaving them to no one. The holds' time is long here, as nothing
    waits for it: two stops on a loaded machine (parallel test processes) took more than 2 s, and a node's leaving is
    bounded at 3 s a step (five steps) and 5 s for its webhooks, which a loaded CI machine once took over 15 s of."""
    long_delay = 40.0
    to_a, to_b, a_process, b_process, _, alice = await alice_on_a(start_receiver, spawn, delay=long_delay)
    _, left_at = await stop_a(a_process, alice)
    assert await b_process.stop() == 0
    assert time.monotonic() < left_at + long_delay, "B left after the holds' time: the test proves nothing"

    assert held_events(to_b) == [VACATED, REMOVED]
    assert to_a.events(names=HELD) == []
    assert await hold_keys(check) == []
