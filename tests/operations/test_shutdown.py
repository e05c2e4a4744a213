"""Graceful shutdown (issue 4; checklist item 19): a real `relay emulator` process with pusher-js clients gets
SIGTERM. It stops accepting, closes the clients with 4200 in jittered batches (no reconnect stampede), flushes the
webhooks it was holding, writes its usage file and exits 0; the clients reconnect to the emulator that replaced it
on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import sys
import termios
import time
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from relay.cost.usage import parse_usage
from relay.emulator.server import HttpConnection
from relay.emulator.shutdown import batch_plan, graceful_shutdown
from tests.conformance.wsclient import Client, Connect
from tests.conformance.wsclient import connect as connect
from tests.conftest import StartEmulator, whole_run
from tests.emulator.test_http_hunt_fixes import request, signed
from tests.emulator_process import EmulatorProcess
from tests.node_scenarios import NODE, app_env, node_modules
from tests.operations.support import (
    APP,
    NODE_SCRIPTS,
    eventually,
    publish,
)
from tests.webhook_receiver import Receiver

CLIENTS = 8
SPREAD = 1.5


def config_file(path: Path, webhook_url: str) -> Path:
    path.write_text(
        f"""[server]
shutdown_delay = 1.0      # the port closes after it; the replacement below starts then
shutdown_spread = {SPREAD}
shutdown_webhook_grace = 3

[[apps]]
app_id = "{APP.app_id}"
key = "{APP.key}"
secret = "{APP.secret}"
webhook_batch_ms = 20
webhook_delay = 30   # vacate and member_removed are held this long: only the shutdown flush sends them in time

[[apps.webhooks]]
url = "{webhook_url}"
"""
    )
    return path


async def next_line(stream: asyncio.StreamReader, within: float) -> dict[str, Any]:
    while True:
        line = await asyncio.wait_for(stream.readline(), within)
        if not line:
            raise AssertionError("the Node script ended early")
        if line.startswith(b"{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed


@pytest.mark.long
async def test_sigterm_drains_in_jittered_batches_flushes_webhooks_and_clients_reconnect(
    tmp_path: Path, receiver: Receiver
) -> None:
    node_modules("pusher-js")
    config = config_file(tmp_path / "emulator.toml", receiver.url)
    usage_file = tmp_path / "usage.json"
    old = await EmulatorProcess.start("--config", str(config), "--usage-file", str(usage_file))
    new: EmulatorProcess | None = None
    try:
        assert NODE is not None
        node = await asyncio.create_subprocess_exec(
            NODE,
            str(NODE_SCRIPTS / "shutdown_clients.mjs"),
            env={**os.environ, **app_env("127.0.0.1", old.port, APP), "CLIENTS": str(CLIENTS)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert node.stdout is not None and node.stderr is not None
        try:
            ready = await next_line(node.stdout, 15)
            assert ready.get("step") == "ready", ready
            base = f"http://127.0.0.1:{old.port}"
            await publish(base, APP, "news", "before", '{"n": 1}')
            await eventually(lambda: receiver.event_names().count("member_added") == CLIENTS, what="member_added hooks")
            assert "member_removed" not in receiver.event_names()

            old.process.send_signal(signal.SIGTERM)
            await old.wait_for_output("stopped accepting connections")
            # The listening socket is closed once shutdown_delay is over, before the connections are, so the replacement
            # can bind the same port while the old one drains.
            new = await EmulatorProcess.start("--config", str(config), port=old.port)
            assert await asyncio.wait_for(old.process.wait(), 15) == 0
            # Held for 30 s, yet delivered before the old process exited: flushed by the shutdown.
            names = receiver.event_names()
            assert names.count("member_removed") == CLIENTS
            assert names.count("channel_vacated") == 2
            assert receiver.signed_by(APP.secret)

            reconnected = await next_line(node.stdout, 30)
            assert reconnected.get("step") == "reconnected", reconnected
            await publish(base, APP, "news", "after", '{"n": 2}')
            summary = await next_line(node.stdout, 10)
            assert summary["ok"], summary
            assert await asyncio.wait_for(node.wait(), 5) == 0
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
            stderr = (await node.stderr.read()).decode()
        assert summary["closeCodes"] == [4200] * CLIENTS, stderr
        assert set(summary["firstIds"]).isdisjoint(summary["secondIds"])
        assert summary["members"] == CLIENTS
        # Jittered batches: the closes are spread over the window, not one instant.
        closed = sorted(summary["closedAt"])
        assert closed[-1] - closed[0] >= 0.3 * SPREAD * 1000, closed
        assert len({t // 50 for t in closed}) >= 3, closed
        log = "\n".join(old.stderr)
        assert "closing connections with 4200" in log and f"connections={CLIENTS}" in log

        usage = parse_usage(json.loads(usage_file.read_text()))  # what `relay cost --usage` reads
        run = whole_run(usage.apps[APP.app_id].days)  # over two days for a run across midnight UTC
        assert run.peak_connections == CLIENTS
        assert (run.publishes, run.deliveries) == (1, CLIENTS)
        assert run.presence_events == 2 * CLIENTS  # everyone joined, everyone left
        assert run.webhooks >= 2 and usage.apps[APP.app_id].unique_users == CLIENTS

        assert new is not None
        assert await new.stop() == 0
    finally:  # whatever failed, no emulator is left running
        await old.kill()
        if new is not None:
            await new.kill()


def test_batch_plan_spreads_connections_over_the_window() -> None:
    assert batch_plan(0, 2.0) == (0, 0, 0.0)
    assert batch_plan(8, 1.5) == (8, 1, 1.5 / 8)  # few connections: one at a time
    batches, size, interval = batch_plan(10_000, 2.0)
    assert (batches, size, interval) == (40, 250, 0.05)  # many: a batch every 50 ms on average
    assert batch_plan(5, 0.0) == (1, 5, 0.0)  # no spread: all at once


def queued(sock: socket.socket, request: int) -> int:
    return int.from_bytes(fcntl.ioctl(sock.fileno(), request, bytes(4)), sys.byteorder)


def not_read(writer: asyncio.StreamWriter, connection: HttpConnection) -> int:
    """Bytes written by the client that the server has not read, or more: in the client's buffer, its socket's send
    queue (until acknowledged: some may be in the server's receive queue as well) or the server's receive queue."""
    assert connection.transport is not None
    client, server = writer.get_extra_info("socket"), connection.transport.get_extra_info("socket")
    return (
        writer.transport.get_write_buffer_size() + queued(client, termios.TIOCOUTQ) + queued(server, termios.FIONREAD)
    )


async def events_until_closed(subscriber: Client) -> list[int]:
    """The numbers of the events ``subscriber`` gets before the shutdown closes it."""
    numbers: list[int] = []
    with contextlib.suppress(ConnectionClosed):
        while (frame := await subscriber.recv(5.0))["event"] != "pusher:error":
            numbers.append(json.loads(frame["data"])["n"])
    return numbers


async def answers_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """What the server sends up to its end of the connection; then the client closes, as HTTP clients do."""
    answers = await reader.read()
    writer.close()
    return answers


@pytest.mark.parametrize("subscribed", [True, False])
async def test_pipelined_requests_read_before_the_stop_are_answered_then_the_connection_ends(
    start_emulator: StartEmulator, connect: Connect, subscribed: bool
) -> None:
    """A read (up to 256 KiB) is handled 16 KiB a turn of the event loop. Publishes pipelined on one connection, read
    before the shutdown began and waiting for their turn, were dropped: the next one was answered with Connection:
    close after the subscribers had been closed (its event reached none), the rest never; with no WebSocket to wait
    for, the connection was closed at once with requests unread, which reset it, and the client lost answers to
    publishes made. Now each request read whole is answered as without the stop, its event delivered before the
    subscribers are closed, and the connection ends after those answers with a FIN (the rest, unread, is for the
    client to send again). Deterministic: the test runs in the server's event loop and starts the shutdown in the
    step where it sees requests held (a signal to a process lands among the turns, or after them)."""
    emulator = await start_emulator()
    subscriber = await connect(emulator) if subscribed else None
    events = None
    if subscriber is not None:
        await subscriber.subscribed("room")
        events = asyncio.create_task(events_until_closed(subscriber))
    requests = []
    for n in range(300):  # 390 KB: more than a read, which is handled in turns while reading waits
        body = json.dumps({"name": "e", "channel": "room", "data": json.dumps({"n": n, "pad": "x" * 1000})}).encode()
        requests.append(request("POST", signed("POST", "/apps/1/events", body), body))
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    writer.write(b"".join(requests))
    answers = asyncio.create_task(answers_then_close(reader, writer))
    deadline = time.monotonic() + 10
    # Checked every turn of the loop, not every 20 ms (eventually): a read's turns take milliseconds.
    while not (held := [c for c in emulator.node.http_connections if c._held]):
        assert time.monotonic() < deadline, "the server never held requests for a later turn"
        await asyncio.sleep(0)
    (connection,) = held
    read = sum(len(r) for r in requests) - not_read(writer, connection)
    received = sum(1 for end in accumulate(len(r) for r in requests) if end <= read)  # at least: read whole
    await graceful_shutdown(emulator.node, None, spread=0, webhook_grace=0)
    heads = re.findall(rb"HTTP/1\.1 .*?\r\n\r\n", await asyncio.wait_for(answers, 5), re.DOTALL)  # then a FIN
    answered = len(heads)
    assert 16 < received <= answered < len(requests)  # what was held answered; what was not read, not
    assert [head.split(b"\r\n")[0] for head in heads] == [b"HTTP/1.1 200 OK"] * answered
    assert all(b"Connection: keep-alive" in head for head in heads)
    assert emulator.node.ops.metrics.http_responses["200"] == answered  # none handled unanswered
    if events is not None:
        assert await events == list(range(answered))
