"""Shared fixtures: a real emulator on an ephemeral port, in the test's own event loop."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import httpx
import pytest

from relay.emulator.config import App, EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.protocol.signing import sign_rest_request
from tests.webhook_receiver import receiver as receiver
from tests.webhook_receiver import start_receiver as start_receiver

# pusher-http-python insists on a numeric app id.
TEST_APP = App(app_id="1", key="app-key", secret="app-secret", activity_timeout=120)


@dataclass
class RunningEmulator:
    node: EmulatorNode
    port: int
    app: App

    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, key: str | None = None, query: str = "protocol=7") -> str:
        return f"ws://{self.host}:{self.port}/app/{key or self.app.key}?{query}"


StartEmulator = Callable[..., Awaitable[RunningEmulator]]


def free_port() -> int:
    """A port nothing listens on now, for a server that must be told its port before it starts (a subprocess
    without ``--port 0``). Another process may take it before that server binds it: prefer ``--port 0`` and the
    banner where the server has them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServesAnApp(Protocol):
    """An emulator a test started: RunningEmulator, or one of the library tests' stoppable ones."""

    app: App
    host: str
    port: int


def emulator_url(running: ServesAnApp, *, secret: str | None = None, app_id: str | None = None, query: str = "") -> str:
    """The ``RELAY_URL`` of a running emulator's app (``secret``, ``app_id``: another one, to be refused)."""
    app = running.app
    url = f"emulator://{app.key}:{secret or app.secret}@{running.host}:{running.port}/apps/{app_id or app.app_id}"
    return url + (f"?{query}" if query else "")


def signed_publish(running: RunningEmulator, path: str, body: bytes, key: str | None) -> httpx.Request:
    """A publish signed as the Pusher libraries sign one, ``idempotency_key`` among the signed parameters."""
    app = running.app
    full_path = f"/apps/{app.app_id}{path}"
    params = None if key is None else {"idempotency_key": key}
    query = sign_rest_request(
        app.key, app.secret, "POST", full_path, timestamp=int(time.time()), body=body, params=params
    )
    return httpx.Request("POST", f"{running.http_url}{full_path}", params=query, content=body)


@pytest.fixture
async def start_emulator() -> AsyncIterator[StartEmulator]:
    """Start emulators with any config: ``await start_emulator(app=replace(TEST_APP, …), apps=(…), **server)``."""
    running: list[tuple[EmulatorNode, object]] = []

    async def start(app: App = TEST_APP, apps: tuple[App, ...] = (), **server: object) -> RunningEmulator:
        config = replace(EmulatorConfig(apps=(app, *apps)), **server)  # type: ignore[arg-type]
        node = EmulatorNode(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server_handle = await start_server(node, sock=sock)
        running.append((node, server_handle))
        return RunningEmulator(node=node, port=sock.getsockname()[1], app=app)

    yield start
    for node, server_handle in running:
        server_handle.close()  # type: ignore[attr-defined]
        await node.close()


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> RunningEmulator:
    """The emulator with the default test app."""
    return await start_emulator()
