"""Fixtures for the relay library's tests (helpers in ``libsupport``)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from libsupport import (
    APP_ID,
    FAST_RETRY,
    KEY,
    RECV_TIMEOUT,
    SECRET,
    Emulator,
    MakeRelay,
    Sent,
    StartStoppable,
    StoppableEmulator,
    Subscribe,
    Subscriber,
    Twin,
)
from websockets.asyncio.client import ClientConnection, connect

from relay import AsyncRelay, Relay
from relay.emulator.config import App, EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.senders import AsyncSender, RetryPolicy, SyncSender


@pytest.fixture(params=["sync", "async"])
async def make_relay(request: pytest.FixtureRequest) -> AsyncIterator[MakeRelay]:
    """``make_relay(url, retry=…)`` → a :class:`Twin` over ``Relay`` or ``AsyncRelay`` (closed afterwards).

    The twin records every request sent (an httpx event hook), retries included.
    """
    made: list[Twin] = []

    def make(url: str, retry: RetryPolicy = FAST_RETRY) -> Twin:
        requests: list[Sent] = []

        def record(request: httpx.Request) -> None:
            requests.append(Sent(request.method, request.url, request.content))

        async def record_async(request: httpx.Request) -> None:
            record(request)

        client: Relay | AsyncRelay
        if request.param == "sync":
            http = httpx.Client(timeout=retry.timeout, event_hooks={"request": [record]})
            client = Relay(url, sender=SyncSender(retry, client=http))
        else:
            async_http = httpx.AsyncClient(timeout=retry.timeout, event_hooks={"request": [record_async]})
            client = AsyncRelay(url, sender=AsyncSender(retry, client=async_http))
        twin = Twin(client, requests)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        await twin.close()


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscribe]:
    """``await subscriber(emulator)`` → a connected :class:`Subscriber` (closed afterwards)."""
    opened: list[ClientConnection] = []

    async def open_subscriber(running: Emulator) -> Subscriber:
        ws = await connect(running.ws_url(), open_timeout=RECV_TIMEOUT, close_timeout=0.5)
        opened.append(ws)
        frame = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
        assert frame["event"] == "pusher:connection_established", frame
        return Subscriber(ws, json.loads(frame["data"])["socket_id"])

    yield open_subscriber
    # Together: a subscriber that read none of its frames waits out its close_timeout (101 presence members took 40 s
    # one after another)
    await asyncio.gather(*(ws.close() for ws in opened))


@pytest.fixture
async def start_stoppable() -> AsyncIterator[StartStoppable]:
    """``await start_stoppable()`` → a :class:`StoppableEmulator` on its own ephemeral port (stopped afterwards)."""
    started: list[StoppableEmulator] = []

    async def start() -> StoppableEmulator:
        node = EmulatorNode(EmulatorConfig(apps=(App(app_id=APP_ID, key=KEY, secret=SECRET),)))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await start_server(node, sock=sock)
        running = StoppableEmulator(node, server, sock.getsockname()[1])
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
