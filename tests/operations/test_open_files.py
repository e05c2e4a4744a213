"""Open files: ``relay emulator`` raises its soft open-file limit to the hard one (each connection is a descriptor,
and services start with 1024), warns when its connections come near the limit it has, and reports both in /metrics.
Past the limit new connections are dropped while the open ones keep being served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import socket
import time
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidMessage

from relay.emulator.descriptors import (
    MACOS_OPEN_MAX,
    UNLIMITED_CEILING,
    crowded_at,
    quota_past_limit,
    raise_open_files_limit,
    soft_limit_wanted,
)
from relay.protocol.signing import sign_rest_request
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, CREDENTIALS, Client, publish, ws_client
from tests.operations.test_metrics import scrape

INFINITY = resource.RLIM_INFINITY
CROWDED = "near the open-file limit"

if not Path("/proc/self/limits").is_file():
    pytest.skip("reading a process's limits needs Linux's /proc", allow_module_level=True)


def test_the_soft_limit_wanted_is_the_hard_one() -> None:
    assert soft_limit_wanted(1024, 524_288, INFINITY) == 524_288
    assert soft_limit_wanted(1024, 1024, INFINITY) == 1024
    assert soft_limit_wanted(1024, INFINITY, INFINITY) == UNLIMITED_CEILING
    assert soft_limit_wanted(2 * UNLIMITED_CEILING, INFINITY, INFINITY) == 2 * UNLIMITED_CEILING
    assert soft_limit_wanted(INFINITY, INFINITY, INFINITY) == INFINITY


def test_crowding_leaves_a_tenth_of_the_limit_or_32_descriptors_free() -> None:
    assert crowded_at(None) is None
    assert crowded_at(100) == 68
    assert crowded_at(1024) == 922
    assert crowded_at(1_048_576) == 943_719
    assert crowded_at(20) == 1


def test_a_quota_is_past_the_limit_when_it_is_past_where_the_limit_is_crowded() -> None:
    assert quota_past_limit({}, 100) is None
    assert quota_past_limit({"1": 10_000}, None) is None
    assert quota_past_limit({"1": 68}, 100) is None
    warning = quota_past_limit({"1": 69}, 100)
    assert warning is not None and warning.startswith("app 1's max_connections (69) is more than the open-file limit")


def soft_open_files_limit(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
    assert match is not None, limits
    return int(match.group(1))


async def test_the_soft_limit_is_raised_to_the_hard_one_so_connections_can_outnumber_it() -> None:
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # raising a hard limit needs root
    relay = await EmulatorProcess.start(*CREDENTIALS, open_files=(64, hard))
    clients = []
    try:
        line = await relay.wait_for_output(r"open-file limit raised")
        assert f"open-file limit raised from 64 to {hard}" in line
        assert f"open_files_limit={hard}" in await relay.wait_for_output("emulator listening")
        assert soft_open_files_limit(relay.process.pid) == hard
        url = f"ws://127.0.0.1:{relay.port}/app/{APP.key}?protocol=7"
        clients = list(await asyncio.gather(*(ws_client(url) for _ in range(100))))
        for client in (clients[0], clients[-1]):
            await client.subscribe("news", APP)
        await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "update", "past 64")
        for client in (clients[0], clients[-1]):
            assert (await client.expect("update"))["data"] == "past 64"
        samples, kinds = await scrape(f"http://127.0.0.1:{relay.port}")
        assert kinds["process_max_fds"] == "gauge"
        assert samples[("process_max_fds", ())] == hard
        assert samples[("relay_tcp_connections", ())] == 101  # the clients and the scrape's own
        assert not any(CROWDED in line for line in relay.stderr)
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        await relay.kill()


def raw_connection(port: int) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.setblocking(False)
    return connection


async def dropped(connection: socket.socket) -> bool:
    """Whether the server closed ``connection`` (it was accepted past the limit) rather than left it open."""
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(connection, 1), 0.5) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def connect_when_freed(url: str, within: float = 5.0) -> Client:
    """A client connected once the server has seen the flood's connections close and freed their descriptors."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await ws_client(url)
        except InvalidMessage:  # dropped: the descriptors are not free yet
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def publish_on(http: httpx.AsyncClient, data: str) -> None:
    """A signed publish to ``news`` on ``http``'s kept-alive connection, which a full descriptor table leaves open."""
    path = f"/apps/{APP.app_id}/events"
    body = json.dumps({"name": "update", "channel": "news", "data": data}).encode()
    params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=body)
    response = await http.post(path, params=params, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


async def test_near_the_limit_it_warns_once_and_past_it_drops_new_connections_but_serves_the_open_ones() -> None:
    relay = await EmulatorProcess.start(*CREDENTIALS, "--log-json", open_files=(100, 100))
    flood: list[socket.socket] = []
    stack = contextlib.AsyncExitStack()
    try:
        assert not any("open-file limit raised" in line for line in relay.stderr)
        base, url = f"http://127.0.0.1:{relay.port}", f"ws://127.0.0.1:{relay.port}/app/{APP.key}?protocol=7"
        sentinel = await ws_client(url)
        await sentinel.subscribe("news", APP)
        publisher = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=5))
        await publish_on(publisher, "before the flood")
        assert (await sentinel.expect("update"))["data"] == "before the flood"
        for _ in range(80):  # the warning comes at 68 connections
            flood.append(raw_connection(relay.port))
        warning = json.loads(await relay.wait_for_output(CROWDED))
        assert warning["level"] == "warning"
        assert warning["open_files_limit"] == 100
        assert warning["connections"] == 68
        assert "raise it (ulimit -n, or LimitNOFILE= in a systemd unit)" in warning["msg"]

        for _ in range(40):  # past 100 descriptors
            flood.append(raw_connection(relay.port))
        deadline = time.monotonic() + 5  # one round of 0.5 s can end before a loaded machine's server drops one
        while not any(outcomes := await asyncio.gather(*(dropped(connection) for connection in flood[80:]))):
            if time.monotonic() > deadline:
                break
        assert any(outcomes), "no connection past the open-file limit was dropped"
        assert not any(await asyncio.gather(*(dropped(connection) for connection in flood[:60])))

        await publish_on(publisher, "still served")
        assert (await sentinel.expect("update"))["data"] == "still served"
        assert sum(CROWDED in line for line in relay.stderr) == 1  # once a minute at most

        for connection in flood:
            connection.close()
        flood.clear()
        late = await connect_when_freed(url)
        await late.subscribe("news", APP)
        await publish(base, APP, "news", "update", "after the flood")
        assert (await late.expect("update"))["data"] == "after the flood"
    finally:
        for connection in flood:
            connection.close()
        await stack.aclose()
        await relay.kill()


QUOTA_PAST_LIMIT = "is more than the open-file limit"


def apps_config(directory: Path, *quotas: int) -> Path:
    """A config file with an app of each ``max_connections`` in ``quotas``, ids 1, 2, …"""
    path = directory / "apps.toml"
    path.write_text(
        "".join(
            f'[[apps]]\napp_id = "{number}"\nkey = "key-{number}"\nsecret = "secret-{number}"\n'
            f"max_connections = {quota}\n"
            for number, quota in enumerate(quotas, start=1)
        )
    )
    return path


async def test_a_connection_quota_past_what_the_open_file_limit_holds_is_warned_of_at_start(tmp_path: Path) -> None:
    """Past the limit connections are dropped unanswered, so a larger max_connections would never answer 4004."""
    relay = await EmulatorProcess.start("--config", str(apps_config(tmp_path, 50, 40)), open_files=(100, 100))
    try:
        await relay.wait_for_output("emulator listening")
        [warning] = [line for line in relay.stderr if QUOTA_PAST_LIMIT in line]
        assert "WARNING" in warning
        assert (
            "the max_connections of apps 1, 2 add up to 90, which is more than the open-file limit of 100 holds "
            "(about 68 connections, leaving descriptors for the rest): connections past it are dropped unanswered "
            "instead of refused with 4004; raise the limit (ulimit -n, or LimitNOFILE= in a systemd unit) or lower "
            "max_connections"
        ) in warning
    finally:
        await relay.kill()

    relay = await EmulatorProcess.start("--config", str(apps_config(tmp_path, 68)), open_files=(100, 100))
    try:
        await relay.wait_for_output("emulator listening")
        assert not any(QUOTA_PAST_LIMIT in line for line in relay.stderr)
    finally:
        await relay.kill()


def test_where_the_hard_limit_cannot_be_reached_the_soft_one_goes_as_far_as_macos_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """macOS reports an unlimited hard limit but refuses a soft one over kern.maxfilesperproc."""
    asked: list[tuple[int, int]] = []

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        asked.append(limits)
        if limits[0] > MACOS_OPEN_MAX:
            raise ValueError("current limit exceeds maximum limit")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, INFINITY))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert raise_open_files_limit() == (256, MACOS_OPEN_MAX)
    assert asked == [(UNLIMITED_CEILING, INFINITY), (MACOS_OPEN_MAX, INFINITY)]

    asked.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (20_000, INFINITY))
    assert raise_open_files_limit() is None  # refused, and 10240 would be lower than what it has
    assert asked == [(UNLIMITED_CEILING, INFINITY)]
