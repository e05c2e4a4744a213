"""A node's close ends its tasks even when one loses its cancellation: on Python 3.11 redis-py drops a cancellation
that comes as a command completes (see test_cluster_start_cancel.py), and the heartbeat's loop that lost it ran on
past close(), registering the closed node again ("this node was taken for dead by the cluster; registering again"),
until the event loop's end waited on it for ever (a test's teardown hung past its 120 s timeout). close() cancels a
task again while it runs on, for its bounded time."""

from __future__ import annotations

import asyncio
import contextlib

from relay.emulator.cluster import CLOSE_SECONDS, ClusterSettings, RedisCluster
from tests.cluster.conftest import RedisServer


async def test_a_task_that_lost_its_cancellation_is_cancelled_again(redis_server: RedisServer) -> None:
    cluster = RedisCluster(ClusterSettings(redis_server.url, "relay", 15.0), node_id=1)
    await cluster.start({})
    beats = 0

    async def loses_its_first_cancellation() -> None:  # as a loop whose redis-py call dropped the cancellation
        nonlocal beats
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        while True:
            beats += 1
            await asyncio.sleep(0.01)

    lost = asyncio.create_task(loses_its_first_cancellation())
    cluster._tasks.append(lost)
    await asyncio.sleep(0)  # it runs, and waits
    started = asyncio.get_running_loop().time()
    await cluster.close()
    assert lost.cancelled()
    assert beats > 0  # it ran on after the first cancellation
    assert asyncio.get_running_loop().time() - started < CLOSE_SECONDS
