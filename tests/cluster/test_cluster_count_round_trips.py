"""A node's webhook counts cost one Redis round trip per batch, not one each: a burst of presence joins does not hold
up the publishes queued behind it on their way to the other nodes (docs/emulator.md, the cluster's known limits).
Measured over a Redis whose latency the test sets (a TCP proxy delaying each direction), so the cost of a round trip
is far above what the machine's load adds."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from relay.protocol.signing import channel_auth
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, sdk
from tests.cluster.test_cluster_webhooks import cluster_of, counts_in, until
from tests.conftest import StartEmulator

ONE_WAY_DELAY = 0.025  # a round trip to Redis takes 50 ms
JOINS = 50  # each join is two counts (its admission, its join): 100 round trips, 5 s, when each count waits for its own


@contextlib.asynccontextmanager
async def delayed(server: RedisServer, delay: float) -> AsyncIterator[str]:
    """A proxy to ``server`` that passes on what each side sends ``delay`` seconds later, in order: its Redis URL."""

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                chunks.put_nowait((loop.time() + delay, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()

    async def connected(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            forward(client_reader, redis_writer), forward(redis_reader, client_writer), return_exceptions=True
        )

    proxy = await asyncio.start_server(connected, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proxy.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proxy.wait_closed(), 1)


async def join(client: Client, channel: str, user_id: str) -> None:
    """Send a presence subscription without waiting for its answer."""
    channel_data = json.dumps({"user_id": user_id, "user_info": {}})
    auth = channel_auth("app-key", "app-secret", client.socket_id, channel, channel_data)
    await client.send("pusher:subscribe", {"channel": channel, "channel_data": channel_data, "auth": auth})


async def test_a_burst_of_presence_joins_does_not_delay_a_publish_to_the_other_node(
    redis_server: RedisServer, start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the node ran each join's count scripts one after another, each waiting for its answer, and sent the
    batch's publishes only after them: a publish made just after 50 joins reached the other node's subscriber 5 s
    later (100 round trips of 50 ms), and the joins past the first second were admitted by the node alone. Now a
    batch's counts go to Redis in one round trip with its publishes, so the publish takes a few round trips."""
    async with delayed(redis_server, ONE_WAY_DELAY) as redis_url:
        a = await start_emulator(redis_url=redis_url)
        b = await start_emulator(redis_url=redis_url)
        on_b = await Client.open(b)
        await on_b.subscribe("news")
        cluster = cluster_of(a)
        send = cluster._send
        round_trips: list[int] = []  # the counts each round trip holding any carried

        async def counted(pipe: Any) -> list[Any]:
            counts = len(counts_in(cluster, pipe))
            if counts:
                round_trips.append(counts)
            return await send(pipe)

        monkeypatch.setattr(cluster, "_send", counted)
        joining = [await Client.open(a) for _ in range(JOINS)]
        for number, client in enumerate(joining):
            await join(client, f"presence-room-{number % 10}", f"user-{number}")
        await until(lambda: bool(round_trips))  # the first joins' counts are on their way
        loop = asyncio.get_running_loop()
        published_at = loop.time()
        await asyncio.to_thread(sdk(a).trigger, "news", "tick", "after the joins")
        assert (await on_b.expect("tick", within=2.5))["data"] == "after the joins"
        took = loop.time() - published_at
        for client in joining:
            await client.expect("pusher_internal:subscription_succeeded", within=2)
        await until(lambda: not cluster._admitting and cluster._queue.empty())
        # Without the joins a publish reaches the other node in about 3 round trips (the publish, the bus, the HTTP
        # call's); with each count waiting for its own answer it took the joins' 100 (5 s).
        assert took < 1.5, f"the publish took {took:.2f} s"
        # 10 channels' occupied counts, 50 admissions, 50 joins: a few round trips carry them all.
        assert sum(round_trips) == 10 + 2 * JOINS
        assert len(round_trips) <= 15, round_trips
