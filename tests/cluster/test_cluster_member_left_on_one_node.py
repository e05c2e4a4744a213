"""A presence member connected through two nodes who leaves one of them is still a member: no ``member_removed``."""

from __future__ import annotations

import asyncio
import json

from tests.cluster.test_cluster import Nodes, presence_ids
from tests.cluster.test_cluster import nodes as nodes
from tests.conformance.wsclient import Connect
from tests.conformance.wsclient import connect as connect
from tests.conftest import RunningEmulator

CHANNEL = "presence-room"


def member(user_id: str) -> str:
    return json.dumps({"user_id": user_id, "user_info": {"name": user_id.title()}})


async def local_members_gone(node: RunningEmulator, user_id: str) -> None:
    """Wait until ``node`` has processed the close of ``user_id``'s last connection to it."""
    async with asyncio.timeout(3.0):
        while user_id in node.node.states["1"].channels[CHANNEL].members:  # noqa: ASYNC110  (the node's own state)
            await asyncio.sleep(0.005)


async def test_leaving_one_node_while_still_present_through_another_sends_no_member_removed(
    nodes: Nodes, connect: Connect
) -> None:
    """Alice is in a presence channel through node A and node B. When her connection to A closes she is still a
    member (through B): a watcher on A hears no ``member_removed`` and both nodes' HTTP API still list her. When her
    connection to B closes too, the watcher on A hears ``member_removed`` for her."""
    a, b = await nodes(2)
    watcher = await connect(a)
    await watcher.subscribed(CHANNEL, member("watcher"))
    alice_on_b = await connect(b)
    await alice_on_b.subscribed(CHANNEL, member("alice"))
    added = await watcher.expect("pusher_internal:member_added", CHANNEL, wait=5.0)
    assert json.loads(added["data"]) == {"user_id": "alice", "user_info": {"name": "Alice"}}
    alice_on_a = await connect(a)
    joined = await alice_on_a.subscribed(CHANNEL, member("alice"))
    assert sorted(json.loads(joined["data"])["presence"]["ids"]) == ["alice", "watcher"]
    await watcher.sync()  # alice's second connection is no new member either

    await alice_on_a.ws.close()
    await local_members_gone(a, "alice")
    # Had node A sent member_removed, it would be queued for the watcher ahead of the pong.
    await watcher.sync()
    assert await presence_ids(a) == ["alice", "watcher"], "node A's users list lost alice, still present through B"
    assert await presence_ids(b) == ["alice", "watcher"], "node B's users list lost alice"

    await alice_on_b.ws.close()
    removed = await watcher.expect("pusher_internal:member_removed", CHANNEL, wait=5.0)
    assert json.loads(removed["data"]) == {"user_id": "alice"}
    await watcher.sync()
    assert await presence_ids(a) == ["watcher"]
