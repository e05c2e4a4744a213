"""The usage meter across nodes (docs/emulator.md "Usage meter"): a publish, client event or presence change is
counted once, on the node that received it, and its deliveries on each node for its own sockets; workers sharing a
usage file add up to the cluster's usage. And a Redis that cannot be reached at start-up is a one-line
configuration error."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.cost.usage import parse_usage
from relay.emulator.usage import merge_documents
from tests.cli_support import assert_refused, run_relay
from tests.cluster.conftest import RedisServer
from tests.cluster.test_cluster import Client
from tests.conftest import RunningEmulator, StartEmulator, free_port, whole_run
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, eventually, publish, ws_client


async def counted(node: RunningEmulator) -> dict[str, int]:
    """The node's usage so far, over every UTC day it spanned."""
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"{node.http_url}/usage")).json()
    days: dict[str, dict[str, int]] = document["apps"][node.app.app_id]["days"]
    return whole_run(days)


async def usage(node: RunningEmulator) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        document: dict[str, Any] = (await http.get(f"{node.http_url}/usage")).json()
    return document


async def test_each_node_meters_the_deliveries_to_its_own_sockets_and_each_event_once(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """Publishes on A reach subscribers on B: B counts those deliveries (with their 5 KiB units), A counts the
    publishes; the same for a client event and a member joining. Nothing is counted twice."""
    a, b = [await start_emulator(redis_url=redis_server.url) for _ in range(2)]
    on_b = [await Client.open(b) for _ in range(3)]
    on_a = await Client.open(a)
    for client in on_b:
        await client.subscribe("private-room")
    await on_a.subscribe("private-room")
    big = "x" * 6000  # two units of 5 KiB
    await publish(a.http_url, a.app, "private-room", "small", "hi")
    await publish(a.http_url, a.app, "private-room", "big", big)
    for client in on_b:
        await client.expect("small")
        await client.expect("big")
    await on_a.send("client-typing", {"who": "a"}, channel="private-room")
    for client in on_b:
        await client.expect("client-typing")
    await on_a.subscribe("presence-room", user_id="ann")
    replica = b.node.states["1"].remote  # B knows of ann before its first member subscribes: no member_added
    await eventually(lambda: replica.member_info("presence-room", "ann") is not None, what="ann on B")
    for index, client in enumerate(on_b):  # member_added to the 0, 1, 2 already on B, and to ann on A
        await client.subscribe("presence-room", user_id=f"b{index}")
        await on_a.expect("pusher_internal:member_added")
    joiner = await Client.open(a)
    await joiner.subscribe("presence-room", user_id="zoe")  # to ann on A, and to the three on B
    for client in on_b:
        await client.expect("pusher_internal:member_added")

    on_a_day, on_b_day = await counted(a), await counted(b)
    assert (on_a_day["publishes"], on_a_day["deliveries"]) == (2, 2)  # A's own subscriber, twice
    assert (on_b_day["publishes"], on_b_day["deliveries"]) == (0, 6)  # B's three, twice
    assert (on_a_day["client_events"], on_a_day["client_event_deliveries"]) == (1, 0)
    assert (on_b_day["client_events"], on_b_day["client_event_deliveries"]) == (0, 3)
    assert on_a_day["delivered_units_5kib"] == 1 + 2
    assert on_b_day["delivered_units_5kib"] == 3 * (1 + 2) + 3 * 1  # the publishes, then the client event
    assert (on_a_day["presence_events"], on_a_day["presence_deliveries"]) == (2, 3 + 1)
    assert (on_b_day["presence_events"], on_b_day["presence_deliveries"]) == (3, 0 + 1 + 2 + 3)
    # Together they are the cluster's usage: what one node serving everyone would have counted.
    merged = merge_documents(await usage(a), await usage(b))
    day = whole_run(merged["apps"]["1"]["days"])
    assert (day["publishes"], day["deliveries"], day["client_events"], day["client_event_deliveries"]) == (2, 8, 1, 3)
    assert (day["presence_events"], day["presence_deliveries"]) == (5, 10)
    parse_usage(merged)  # what relay cost --usage reads


async def test_an_ably_publish_is_metered_where_it_was_made_and_its_deliveries_where_they_were_written(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """An Ably REST publish of two messages on A (one of two 5 KiB units), then one (of two units) whose extras
    msgpack cannot hold, sent on as Pusher frames instead: B's three Pusher subscribers are B's deliveries."""
    a, b = [await start_emulator(redis_url=redis_server.url) for _ in range(2)]
    on_b = [await Client.open(b) for _ in range(3)]
    for client in on_b:
        await client.subscribe("orders")
    await eventually(lambda: a.node.states["1"].subscription_count("orders") == 3, what="B's subscribers on A")
    basic = {"Authorization": "Basic " + base64.b64encode(a.app.ably_api_key.encode()).decode()}
    batch = [{"name": "big", "data": "x" * 6000}, {"name": "small", "data": "y"}]
    async with httpx.AsyncClient(base_url=a.http_url) as http:
        assert (await http.post("/channels/orders/messages", json=batch, headers=basic)).status_code == 201
        huge = {"name": "huge", "data": "z" * 6000, "extras": {"n": 10**30}}
        assert (await http.post("/channels/orders/messages", json=huge, headers=basic)).status_code == 201
    for client in on_b:
        for name in ("big", "small", "huge"):
            await client.expect(name)
    on_a_day, on_b_day = await counted(a), await counted(b)
    assert (on_a_day["publishes"], on_a_day["deliveries"]) == (3, 0)
    assert (on_b_day["publishes"], on_b_day["deliveries"]) == (0, 3 * 3)
    assert on_b_day["delivered_units_5kib"] == 3 * (2 + 1 + 2)


@pytest.fixture
def usage_file(tmp_path: Path) -> Path:
    return tmp_path / "usage.json"


async def test_workers_sharing_a_usage_file_count_every_delivery_and_add_their_peaks(
    redis_server: RedisServer, usage_file: Path
) -> None:
    """--workers 2: the kernel spreads 20 subscribers over both workers; 5 publishes are 5 + 100 deliveries in the
    file they share (60 were counted when only the publishing worker counted), the peak of connections is the 20
    open together, not one worker's share, and the users are the 20 who joined presence on either worker (the file
    kept the larger worker's count when it had no sketch of their users to merge)."""
    relay = await EmulatorProcess.start(
        "--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret, "--workers", "2",
        "--redis-url", redis_server.url, "--usage-file", str(usage_file),
    )  # fmt: skip
    try:
        url = f"ws://127.0.0.1:{relay.port}/app/{APP.key}"
        subscribers = [await ws_client(url) for _ in range(20)]
        for number, client in enumerate(subscribers):
            await client.subscribe("news", APP)
            await client.subscribe("presence-room", APP, user_id=f"user-{number}")
        await asyncio.sleep(0.5)  # subscription counts reach the other worker
        base = f"http://127.0.0.1:{relay.port}"
        for index in range(5):
            await publish(base, APP, "news", "e", str(index))
        for client in subscribers:
            for _ in range(5):
                await client.expect("e")
        for client in subscribers:
            await client.close()
        assert await relay.stop() == 0
    finally:
        await relay.kill()
    usage = parse_usage(json.loads(await asyncio.to_thread(usage_file.read_text)))
    run = whole_run(usage.apps[APP.app_id].days)  # two days for a run across midnight UTC (a CI run at 00:00 failed)
    assert (run.publishes, run.deliveries, run.peak_connections) == (5, 100, 20)
    assert usage.apps[APP.app_id].unique_users == 20


# -- a Redis that cannot be reached at start-up ---------------------------------------------------------------


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server that wants a password ("rightPW-31"); yields its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", "rightPW-31"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
    yield port
    process.kill()
    process.wait()


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
@pytest.mark.parametrize("log_json", [[], ["--log-json"]])
async def test_a_wrong_redis_password_is_one_line_and_exit_2(
    guarded_redis: int, workers: list[str], log_json: list[str]
) -> None:
    url = f"redis://:wrongPW-77@127.0.0.1:{guarded_redis}/0"
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", url, *workers, *log_json)
    assert_refused(outcome, f"cannot reach Redis at redis://***@127.0.0.1:{guarded_redis}/0: ", "password")
    assert "wrongPW-77" not in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1, outcome.stderr
    # The right password serves.
    right = f"redis://:rightPW-31@127.0.0.1:{guarded_redis}/0"
    served = await run_relay("emulator", "--port", "0", "--redis-url", right, *workers, *log_json)
    assert served.returncode is None, served.stderr


async def test_relay_cost_reads_a_shared_usage_file_after_a_node_was_killed_before_its_checkpoint(
    redis_server: RedisServer, usage_file: Path
) -> None:
    """Two nodes share one usage file. A small publish on B and one of 6,000 bytes (two 5 KiB units) on A both reach
    a subscriber on B; A is then SIGKILLed before its first checkpoint, so its publish and its bytes are lost while B's
    delivery of it (2 units) stays. The file so holds 3 delivered units for 2 deliveries of messages whose counted
    bytes make 1 unit each, and relay cost prices it (Ably: 1.5 units per delivery) instead of refusing it."""
    arguments = ["--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret]
    arguments += ["--redis-url", redis_server.url, "--usage-file", str(usage_file)]
    nodes = [await EmulatorProcess.start(*arguments) for _ in range(2)]
    a, b = nodes
    try:
        subscriber = await ws_client(f"ws://127.0.0.1:{b.port}/app/{APP.key}")
        await subscriber.subscribe("news", APP)
        await asyncio.sleep(0.5)  # the subscription reaches A
        await publish(f"http://127.0.0.1:{b.port}", APP, "news", "small", "hi")
        await publish(f"http://127.0.0.1:{a.port}", APP, "news", "big", "x" * 6000)
        assert (await subscriber.expect("small"))["data"] == "hi"
        assert len((await subscriber.expect("big"))["data"]) == 6000
        await a.kill()
        await subscriber.close()
        assert await b.stop() == 0
    finally:
        for node in nodes:
            await node.kill()
    day = whole_run(json.loads(await asyncio.to_thread(usage_file.read_text))["apps"][APP.app_id]["days"])
    assert (day["publishes"], day["deliveries"], day["delivered_units_5kib"]) == (1, 2, 3)
    assert day["units_5kib"] == 1
    outcome = await run_relay("cost", "--usage", str(usage_file), "--format", "json")
    assert outcome.returncode == 0, outcome.stderr
    workload = json.loads(outcome.stdout)["workload"]
    assert workload["delivery_units_5kib"] == 1.5
