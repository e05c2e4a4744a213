"""A listening socket that stops listening: on uvloop, whose libuv drops a failed ``accept`` unreported, the process
ran on accepting nothing (spinning a core), logging nothing, and /ready answered 200 over connections already open.
The node notices within a second or two: it logs an error, /ready answers 503, and ``relay emulator`` shuts down
gracefully (without waiting ``shutdown_delay``, which keeps a listener open for health checks) and exits with status 1,
for its supervisor to restart it.

The listener is stopped as the kernel stops it on ``shutdown(SHUT_RD)``: every ``accept`` then fails with EINVAL. In a
``relay emulator`` process, from outside it, through a copy of its descriptor (``pidfd_getfd``)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
from dataclasses import replace

import httpx
import pytest
import uvloop
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.emulator.shutdown import serve_until_signalled
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, eventually, ws_client

LOST = "stopped listening"


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def ready_goes_false_over_an_open_connection() -> None:
    node = EmulatorNode(EmulatorConfig(apps=(APP,)))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await start_server(node, sock=sock)
    try:
        # One connection, kept alive: the load balancer's, or the monitoring's, opened before the listener stopped.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            assert (await client.get("/ready")).status_code == 200
            sock.shutdown(socket.SHUT_RD)
            assert await refused(port)
            for _ in range(50):  # the listeners are checked once a second
                answer = await client.get("/ready")
                if answer.status_code != 200:
                    break
                await asyncio.sleep(0.1)
            assert answer.status_code == 503, "/ready still answers 200 though no connection can be accepted"
            assert answer.json() == {"status": "draining"}
            assert node.listener_lost.is_set()
    finally:
        server.close()
        await node.close(webhook_grace=0)


def test_a_listener_that_stops_listening_is_logged_and_ready_answers_503(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.emulator")
    uvloop.run(ready_goes_false_over_an_open_connection())  # the event loop `relay emulator` runs on
    errors = [record for record in caplog.records if record.levelno == logging.ERROR and LOST in record.getMessage()]
    assert len(errors) == 1, caplog.text
    assert errors[0].getMessage().startswith("the listening socket on 127.0.0.1 port ")


async def serving_stops_with_status_1() -> None:
    # A delay a test would not wait out: it is skipped, as health checks can no longer reach a lost listener.
    node = EmulatorNode(replace(EmulatorConfig(apps=(APP,)), shutdown_delay=60.0, shutdown_spread=0.0))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await start_server(node, sock=sock)
    client = await ws_client(f"ws://127.0.0.1:{port}/app/{APP.key}?protocol=7")
    sock.shutdown(socket.SHUT_RD)
    # Awaited here, not in a task of its own: a SystemExit out of a task escapes the event loop
    with pytest.raises(SystemExit) as stopped:
        async with asyncio.timeout(10.0):
            await serve_until_signalled(node, server)
    assert stopped.value.code == 1
    # Its clients were told to reconnect (elsewhere, or to the restarted emulator), as at any graceful shutdown.
    error = await client.expect("pusher:error")
    assert error["data"]["code"] == 4200
    with pytest.raises(ConnectionClosed) as closed:
        await client.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4200
    await eventually(lambda: not server.is_serving(), what="the server closed")


def test_the_emulator_stops_with_exit_status_1_once_its_listener_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.emulator")
    uvloop.run(serving_stops_with_status_1())
    messages = [record.getMessage() for record in caplog.records]
    assert any(LOST in message for message in messages), caplog.text
    assert "shutdown: no longer listening; stopping with exit status 1 for a supervisor to restart the emulator" in (
        messages
    )
    assert "shutdown: draining; /ready answers 503" not in messages  # the delay was skipped
    assert any(message.startswith("shutdown: done") for message in messages)


_PIDFD_GETFD = 438  # the system call's number on every Linux architecture (5.6 and later)


def _listener_inode(pid: int, port: int) -> str:
    """The inode of the socket process ``pid`` listens on at ``port`` (IPv4 or IPv6), as /proc/PID/net lists it."""
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as listed:
            for line in listed.readlines()[1:]:
                columns = line.split()
                if int(columns[1].rsplit(":", 1)[1], 16) == port and columns[3] == "0A":  # 0A: LISTEN
                    return columns[9]
    raise AssertionError(f"process {pid} does not listen on port {port}")


def stop_listening_in(pid: int, port: int) -> None:
    """``shutdown(SHUT_RD)`` on the socket process ``pid`` listens on at ``port``, through a copy of its descriptor."""
    inode = _listener_inode(pid, port)
    fds = [fd for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"]
    assert fds, f"no descriptor of process {pid} is socket:[{inode}]"
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(_PIDFD_GETFD, pidfd, int(fds[0]), 0)
        if copy < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOSYS, errno.EPERM):  # a kernel before 5.6, or one that forbids reaching into a child
                pytest.skip(f"pidfd_getfd is not allowed here: {os.strerror(code)}")
            raise OSError(code, os.strerror(code))
    finally:
        os.close(pidfd)
    with socket.socket(fileno=copy) as listener:
        listener.shutdown(socket.SHUT_RD)


async def test_relay_emulator_exits_with_status_1_once_its_listener_is_lost() -> None:
    """The process a supervisor runs: its listener stopped from outside, it logs why, tells its clients to reconnect
    (4200) and exits with status 1 by itself, which a supervisor restarts (``Restart=on-failure``)."""
    emulator = await EmulatorProcess.start("--app-id", "1")
    try:
        client = await ws_client(f"ws://127.0.0.1:{emulator.port}/app/app-key?protocol=7")
        stop_listening_in(emulator.process.pid, emulator.port)
        assert await refused(emulator.port)
        error = await client.expect("pusher:error", within=10.0)
        assert error["data"]["code"] == 4200
        async with asyncio.timeout(15.0):
            assert await emulator.process.wait() == 1
    finally:
        code = await emulator.stop(grace=5.0)
    assert code == 1
    logs = "\n".join(emulator.stderr)
    assert LOST in logs
    assert "shutdown: no longer listening; stopping with exit status 1 for a supervisor to restart the emulator" in logs
