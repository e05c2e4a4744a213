"""Real servers for the gateway's end-to-end tests: the gateway under uvicorn on a socket the test binds itself
(STYLE pattern 11), in the test's own event loop next to the emulator, plus JWT and Node helpers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import uvicorn
from starlette.types import ASGIApp

from relay.gateway import GatewaySettings, create_app
from tests.conftest import RunningEmulator

TOKEN = "backend-token-0123456789"
JWT_SECRET = "jwt-secret-for-gateway-tests-0123456789"
NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE = shutil.which("node")
ROOT = Path(__file__).resolve().parent.parent.parent


def hs_jwt(sub: str = "alice", *, secret: str = JWT_SECRET, ttl: int = 60, **claims: object) -> str:
    """An HS256 user JWT; ``name`` defaults to the capitalised subject."""
    payload = {"sub": sub, "name": sub.title(), "exp": int(time.time()) + ttl, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def emulator_url(emulator: RunningEmulator) -> str:
    app = emulator.app
    return f"emulator://{app.key}:{app.secret}@127.0.0.1:{emulator.port}/apps/{app.app_id}"


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


# -- Node scenarios -----------------------------------------------------------------------------------------------

StepHandler = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass
class NodeRun:
    summary: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """pusher-js and typescript from tests/node; their absence is a setup error, not a reason to skip."""
    if NODE is None:
        pytest.skip("node is not on PATH")
    modules = NODE_DIR / "node_modules"
    for package in ("pusher-js", "pusher", "typescript"):
        if not (modules / package / "package.json").is_file():
            pytest.fail(f"{modules / package} is missing: run `npm ci --prefix tests/node` first")
    return modules


async def run_node(
    script: str,
    emulator: RunningEmulator,
    env: Mapping[str, str],
    *,
    on_step: StepHandler | None = None,
    limit_s: float = 20.0,
) -> NodeRun:
    """Run ``tests/node/<script>`` (which uses lib.mjs's Scenario and step protocol); assert an ``ok`` summary."""
    assert NODE is not None
    app = emulator.app
    full_env = {
        **os.environ,
        "RELAY_HOST": emulator.host,
        "RELAY_PORT": str(emulator.port),
        "RELAY_APP_ID": app.app_id,
        "RELAY_KEY": app.key,
        "RELAY_SECRET": app.secret,
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / script),
        cwd=NODE_DIR,
        env=full_env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.create_task(process.stderr.read())
    lines: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    other: list[str] = []

    async def drive() -> None:
        assert process.stdin is not None and process.stdout is not None
        async for raw in process.stdout:
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                other.append(text)
                continue
            message = json.loads(text)
            if "step" in message:
                steps.append(message)
                assert on_step is not None, f"{script} asked for step {message['step']!r} but the test has no handler"
                answer = await on_step(message)
                process.stdin.write(answer.encode() + b"\n")
                await process.stdin.drain()
            else:
                lines.append(message)
        await process.wait()

    try:
        await asyncio.wait_for(drive(), limit_s)
    except TimeoutError:
        pytest.fail(f"{script} did not finish within {limit_s} s; output {lines + steps}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = (await stderr_task).decode(errors="replace")
    assert lines, f"{script} printed no summary (exit {process.returncode}); stdout {other}; stderr:\n{stderr}"
    summary = lines[-1]
    assert process.returncode == 0 and summary.get("ok") is True, (
        f"{script} failed (exit {process.returncode}): {summary}\nstderr:\n{stderr}"
    )
    return NodeRun(summary, steps, stderr)
