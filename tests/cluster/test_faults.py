"""Cluster faults with real processes: a node killed with SIGKILL, Redis going away and coming back, --workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client, Nodes, nodes, sdk, settle
from tests.conftest import RunningEmulator
from tests.emulator_process import EmulatorProcess
from tests.leftovers import running
from tests.operations.support import children
from tests.webhook_receiver import Receiver

__all__ = ["nodes"]

Spawn = Callable[..., Awaitable[tuple[EmulatorProcess, RunningEmulator]]]


@pytest.fixture
async def spawn(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Spawn]:
    processes: list[EmulatorProcess] = []

    async def start(
        *extra: str, webhook_url: str | None = None, app_options: str = "", node_ttl: int = 1
    ) -> tuple[EmulatorProcess, RunningEmulator]:
        config = tmp_path / f"node{len(processes)}.toml"
        hooks = f'webhooks = [{{ url = "{webhook_url}" }}]\n' if webhook_url else ""
        config.write_text(
            '[[apps]]\napp_id = "1"\nkey = "app-key"\nsecret = "app-secret"\n'
            f"webhook_delay = 0.3\nwebhook_batch_ms = 10\n{app_options}{hooks}"
        )
        process = await EmulatorProcess.start(
            "--config", str(config), "--redis-url", redis_server.url, "--node-ttl", str(node_ttl), *extra
        )
        processes.append(process)
        from tests.conftest import TEST_APP

        return process, RunningEmulator(node=None, port=process.port, app=TEST_APP)  # type: ignore[arg-type]

    yield start
    for process in processes:
        await process.stop()


async def test_a_killed_node_s_members_expire_and_survivors_hear_it(receiver: Receiver, spawn: Spawn) -> None:
    doomed_process, doomed = await spawn(webhook_url=receiver.url)
    _, survivor = await spawn(webhook_url=receiver.url)
    watcher = await Client.open(survivor)
    await watcher.subscribe("presence-room", "watcher")
    victim = await Client.open(doomed)
    await victim.subscribe("presence-room", "alice")
    await watcher.expect("pusher_internal:member_added")
    await receiver.until(lambda: len(receiver.events(names={"member_added"})) == 2)
    await doomed_process.kill()
    removed = await watcher.expect("pusher_internal:member_removed", within=4)
    assert json.loads(removed["data"]) == {"user_id": "alice"}
    await receiver.until(lambda: len(receiver.events(names={"member_removed"})) == 1, within=3)
    await asyncio.sleep(0.5)
    assert [event["user_id"] for event in receiver.events(names={"member_removed"})] == ["alice"]
    users = await asyncio.to_thread(sdk(survivor).users_info, "presence-room")
    assert users == {"users": [{"id": "watcher"}]}


async def test_workers_share_one_port_and_deliver_across_processes(spawn: Spawn) -> None:
    _, workers = await spawn("--workers", "2")
    clients: list[Client] = []
    nodes_seen: set[str] = set()
    while len(nodes_seen) < 2 and len(clients) < 40:
        client = await Client.open(workers)
        await client.subscribe("news")
        clients.append(client)
        nodes_seen.add(client.socket_id.split(".")[0])
    assert len(nodes_seen) == 2, "the kernel never handed a connection to the second worker"
    await settle()
    await asyncio.to_thread(sdk(workers).trigger, "news", "hello", "x")
    for client in clients:
        await client.expect("hello")
        await client.silent(0.05)


async def test_sigterm_under_load_stops_the_supervisor_and_every_worker(spawn: Spawn) -> None:
    """Shutting down while publishes are flowing through Redis: the supervisor and both workers exit, none is left
    serving (a worker once hung in leaving the cluster after its supervisor had gone)."""
    supervisor, workers = await spawn("--workers", "2", "--shutdown-spread", "0")
    worker_pids = children(supervisor.process.pid)
    assert len(worker_pids) == 2
    clients = [await Client.open(workers) for _ in range(20)]
    for client in clients:
        await client.subscribe("news")
    await settle()
    publisher = sdk(workers)
    stop = asyncio.Event()

    async def publish_until_stopped() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the last publishes meet a server that is going away
                await asyncio.to_thread(publisher.trigger, "news", "tick", "x")

    load = [asyncio.create_task(publish_until_stopped()) for _ in range(4)]
    await clients[0].expect("tick")
    # Signalled and awaited directly: stop() would also wait for the workers' output, hiding a worker that lingers.
    supervisor.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(supervisor.process.wait(), 15) == 0
    stop.set()
    await asyncio.gather(*load)
    deadline = asyncio.get_running_loop().time() + 5
    while any(running(pid) for pid in worker_pids):
        assert asyncio.get_running_loop().time() < deadline, "a worker outlived its supervisor"
        await asyncio.sleep(0.05)


async def test_redis_outage_keeps_local_delivery_and_resumes_cross_node(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = await nodes(2)
    on_a, on_b = await Client.open(a), await Client.open(b)
    await on_a.subscribe("news")
    await on_b.subscribe("news")
    await settle()
    redis_server.stop()
    await asyncio.to_thread(sdk(a).trigger, "news", "during-outage", "x")
    await on_a.expect("during-outage")
    await on_b.silent()
    late = await Client.open(b)
    await late.subscribe("presence-room", "bob")
    redis_server.start()
    for _ in range(100):
        await asyncio.sleep(0.1)
        users = await asyncio.to_thread(sdk(a).users_info, "presence-room")
        if users["users"]:
            break
    assert users == {"users": [{"id": "bob"}]}
    await asyncio.to_thread(sdk(a).trigger, "news", "after-outage", "y")
    await on_a.expect("after-outage")
    await on_b.expect("after-outage")


async def test_workers_listen_on_an_ipv6_host(redis_server: RedisServer) -> None:
    """--host is any address to listen on and --workers N shares it: on an IPv6 address every worker binds an IPv6
    socket (create_server's default family is IPv4), and the banner writes the address in brackets."""
    process = await EmulatorProcess.start("--host", "::1", "--workers", "2", "--redis-url", redis_server.url)
    try:
        port = process.port
        assert f"listening on http://[::1]:{port} " in process.banner
        assert f"RELAY_URL:   emulator://app-key:app-secret@[::1]:{port}/apps/app-id" in process.banner
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://[::1]:{port}/health")).json() == {"status": "ok"}
    finally:
        await process.stop()


async def test_a_node_stalled_past_node_ttl_rejoins_the_cluster_when_it_resumes(spawn: Spawn) -> None:
    """docs/emulator.md: other nodes "re-add its members when it returns". A node that stalled without losing Redis
    (SIGSTOP here; a VM pause or a half-open TCP connection in production) is buried by the survivors; when it
    resumes, its heartbeat finds it is no longer in the node set and it registers again, members and all."""
    stalled_process, stalled = await spawn()
    _, survivor = await spawn()
    alice = await Client.open(stalled)
    await alice.subscribe("presence-room", "alice")
    users: dict[str, Any] = {}
    for _ in range(50):  # alice's join crosses Redis from one process to the other
        users = await asyncio.to_thread(sdk(survivor).users_info, "presence-room")
        if users["users"]:
            break
        await asyncio.sleep(0.1)
    assert users == {"users": [{"id": "alice"}]}
    stalled_process.process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(60):  # node_ttl is 1 s: the survivor buries it within about 1.3 s
            await asyncio.sleep(0.1)
            if (await asyncio.to_thread(sdk(survivor).users_info, "presence-room"))["users"] == []:
                break
        else:
            pytest.fail("the survivor never buried the stalled node")
    finally:
        stalled_process.process.send_signal(signal.SIGCONT)
    await alice.send("pusher:ping", {})
    await alice.expect("pusher:pong", within=5)  # alice is connected and still a member of her node's channel
    for _ in range(40):  # several heartbeats of the resumed node
        await asyncio.sleep(0.1)
        users = await asyncio.to_thread(sdk(survivor).users_info, "presence-room")
        if users["users"]:
            break
    assert users == {"users": [{"id": "alice"}]}
