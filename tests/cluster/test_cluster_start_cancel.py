"""Cancelling a node's start (Ctrl-C: ``asyncio.run`` cancels the main task) while it connects to a Redis that does
not answer ends it at once, though redis-py loses the cancellation on Python 3.11: it sends each command through
``asyncio.wait_for``, which drops a cancellation that comes as the send completes (fixed in 3.12). The start then
waited for the socket timeout (5 s) and ended as "cannot reach Redis …: Timeout reading", status 2, not 130."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio.connection as redis_connection

from relay.emulator.cluster import ClusterSettings, RedisCluster, check_reachable


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """The URL of a server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, writer: held.append(writer), "127.0.0.1", 0)
    async with server:
        yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
        for writer in held:
            writer.close()


def _start_node(url: str) -> Coroutine[Any, Any, None]:
    return RedisCluster(ClusterSettings(url, "relay", 15.0), node_id=1).start({})


@pytest.mark.parametrize("start", [check_reachable, _start_node], ids=["check_reachable", "RedisCluster.start"])
async def test_a_cancel_as_the_first_command_is_sent_ends_the_start_at_once(
    silent_redis: str, monkeypatch: pytest.MonkeyPatch, start: Callable[[str], Coroutine[Any, Any, None]]
) -> None:
    """The cancellation comes in the one window where wait_for drops it, as the first command (HELLO) is sent: for
    the starting task, and for the task waiting on that send (the same task, or the call's own one)."""
    starting: asyncio.Task[None] | None = None
    sending = redis_connection.AbstractConnection.send_packed_command
    send = redis_connection.AbstractConnection._send_packed_command
    waiting: list[asyncio.Task[Any]] = []

    async def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        waiting.append(asyncio.current_task())  # type: ignore[arg-type]  # the task that awaits wait_for
        await sending(self, *args, **kwargs)

    async def send_then_interrupted(self: Any, command: Any) -> None:
        await send(self, command)
        if starting is not None and not starting.cancelling():  # once: as Ctrl-C does, while the send completes
            starting.cancel()
            waiting[-1].cancel()

    monkeypatch.setattr(redis_connection.AbstractConnection, "send_packed_command", send_packed_command)
    monkeypatch.setattr(redis_connection.AbstractConnection, "_send_packed_command", send_then_interrupted)
    began = time.monotonic()
    starting = asyncio.create_task(start(silent_redis))
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(starting, 10)
    assert time.monotonic() - began < 2  # not the 5 s socket timeout
