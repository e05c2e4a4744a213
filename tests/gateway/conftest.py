"""Real servers for the gateway's end-to-end tests: the gateway under uvicorn on a socket the test binds itself
(STYLE pattern 11), in the test's own event loop next to the emulator, plus JWT and Node helpers."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.types import ASGIApp

from relay.gateway import GatewaySettings, create_app
from tests.conftest import RunningEmulator, free_port
from tests.conftest import emulator_url as emulator_url
from tests.node_scenarios import NODE_DIR, NodeRun, StepHandler, app_env, run_scenario
from tests.node_scenarios import node_modules as installed_modules

TOKEN = "backend-token-0123456789"
JWT_SECRET = "jwt-secret-for-gateway-tests-0123456789"
ROOT = Path(__file__).resolve().parent.parent.parent


def hs_jwt(sub: str = "alice", *, secret: str = JWT_SECRET, ttl: int = 60, **claims: object) -> str:
    """An HS256 user JWT; ``name`` defaults to the capitalised subject."""
    payload = {"sub": sub, "name": sub.title(), "exp": int(time.time()) + ttl, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


@dataclass
class ServedGateway:
    """`relay serve` in a process of its own: its port, the process, and what it logged."""

    port: int
    process: subprocess.Popen[bytes]
    stderr: Any  # a temporary file: a pipe nobody reads fills, and the process blocks on its next log line

    def log(self) -> bytes:
        self.stderr.seek(0)
        data: bytes = self.stderr.read()
        return data


@contextmanager
def relay_serve(*flags: str, **env: str) -> Iterator[ServedGateway]:
    """`relay serve` as the command line runs it, on a free port, with the API token; ``env`` over the defaults.
    Killed at the end if still running."""
    port = free_port()
    environment = {
        **os.environ,
        "RELAY_URL": "memory://relay-serve",
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_PROVIDER_ATTEMPTS": "1",
        **env,
    }
    command = [sys.executable, "-m", "relay.cli", "serve", "--port", str(port), "--log-level", "warning", *flags]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                pytest.fail(f"relay serve did not start: {ServedGateway(port, process, stderr).log()[-2000:]!r}")
            yield ServedGateway(port, process, stderr)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@asynccontextmanager
async def serve_asgi(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:0 in the running loop; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # bound is not listening yet
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        sock.close()


@contextmanager
def serve_asgi_in_thread(app: ASGIApp) -> Iterator[str]:
    """:func:`serve_asgi` for a test without an event loop: uvicorn runs its own in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn stopped before it started")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


@dataclass
class RunningGateway:
    url: str
    settings: GatewaySettings


StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    """``await start_gateway(settings)`` or ``await start_gateway(env={...})`` (read by ``GatewaySettings.from_env``)
    → a gateway served by uvicorn until the test ends."""
    stack: list[Any] = []

    async def start(settings: GatewaySettings | None = None, *, env: Mapping[str, str] | None = None) -> RunningGateway:
        if settings is None:
            assert env is not None
            settings = GatewaySettings.from_env(env)
        context = serve_asgi(create_app(settings))
        url = await context.__aenter__()
        stack.append(context)
        return RunningGateway(url, settings)

    yield start
    for context in reversed(stack):
        await context.__aexit__(None, None, None)


@pytest.fixture
async def gateway(start_gateway: StartGateway, emulator: RunningEmulator) -> RunningGateway:
    """The gateway in front of the default emulator app: API token, HS256 JWTs, default rules."""
    return await start_gateway(
        GatewaySettings(relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET)
    )


async def gateway_with_key_file(
    start_gateway: StartGateway, emulator: RunningEmulator, key_file: Path, pem: str, **env: str
) -> RunningGateway:
    """A gateway in front of ``emulator`` verifying JWTs with the key ``pem`` (a public key or a certificate), written
    to ``key_file`` and named by RELAY_JWT_PUBLIC_KEY; ``env`` adds settings."""
    key_file.write_text(pem)  # noqa: ASYNC240  (a few bytes in tmp_path, before the gateway starts)
    return await start_gateway(env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_PUBLIC_KEY": str(key_file), **env})


async def gateway_with_jwks_file(
    start_gateway: StartGateway, emulator: RunningEmulator, jwks_file: Path, *keys: dict[str, Any]
) -> RunningGateway:
    """A gateway in front of ``emulator`` verifying JWTs with the JWKs ``keys``, written to ``jwks_file`` (a JWKS)
    and named by RELAY_JWKS_FILE."""
    jwks_file.write_text(json.dumps({"keys": list(keys)}))  # noqa: ASYNC240  (a few bytes in tmp_path, as above)
    return await start_gateway(env={"RELAY_URL": emulator_url(emulator), "RELAY_JWKS_FILE": str(jwks_file)})


# -- Node scenarios -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return installed_modules("pusher-js", "pusher", "typescript")


async def run_node(
    script: str,
    emulator: RunningEmulator,
    env: Mapping[str, str],
    *,
    on_step: StepHandler | None = None,
    limit_s: float = 20.0,
) -> NodeRun:
    """Run ``tests/node/<script>`` against ``emulator`` with ``env`` added (see tests/node_scenarios.py)."""
    emulator_env = app_env(emulator.host, emulator.port, emulator.app)
    return await run_scenario(NODE_DIR / script, {**emulator_env, **env}, on_step=on_step, limit_s=limit_s)
