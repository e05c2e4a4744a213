"""Helpers for the operations tests: signed HTTP API calls, WebSocket clients, a self-signed certificate and the
Node client scripts (``relay emulator`` as a real process is tests/emulator_process.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from relay.emulator.config import App
from relay.protocol.signing import channel_auth, sign_rest_request
from tests.emulator_process import EmulatorProcess

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
NODE_SCRIPTS = Path(__file__).resolve().parent / "node"
APP = App(app_id="1", key="ops-key", secret="ops-secret-value-42")
CREDENTIALS = ["--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret]  # APP as `relay emulator` flags
LISTENING_LOG = re.compile(r"emulator listening .*node_id=(\d+)")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a ``--workers`` supervisor's workers)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def node_ids(process: EmulatorProcess) -> list[str]:
    """The node id of each worker that logged it is listening, in the order they did."""
    return [match.group(1) for line in process.stderr if (match := LISTENING_LOG.search(line))]


async def api(
    base_url: str,
    app: App,
    method: str,
    path: str,
    body: object | None = None,
    *,
    verify: ssl.SSLContext | bool = True,
    secret: str | None = None,
) -> httpx.Response:
    """A signed Pusher HTTP API request (``path`` like ``/apps/1/events``)."""
    raw = b"" if body is None else json.dumps(body).encode()
    params = sign_rest_request(app.key, secret or app.secret, method, path, timestamp=int(time.time()), body=raw)
    async with httpx.AsyncClient(verify=verify, timeout=5.0) as client:
        return await client.request(
            method, base_url + path, params=params, content=raw or None, headers={"Content-Type": "application/json"}
        )


async def publish(base_url: str, app: App, channel: str, event: str, data: str, **options: Any) -> httpx.Response:
    response = await api(
        base_url,
        app,
        "POST",
        f"/apps/{app.app_id}/events",
        {"name": event, "channel": channel, "data": data},
        **options,
    )
    assert response.status_code == 200, response.text
    return response


@dataclass
class Client:
    """A raw Pusher protocol 7 client over the websockets library."""

    ws: ClientConnection
    socket_id: str = ""

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), within))
        return frame

    async def expect(self, event: str, within: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            frame = await self.next(max(0.05, deadline - time.monotonic()))
            if frame["event"] == event:
                return frame

    async def send(self, event: str, data: object, channel: str | None = None) -> None:
        frame: dict[str, object] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send(json.dumps(frame))

    async def subscribe(self, channel: str, app: App, user_id: str | None = None) -> dict[str, Any]:
        data: dict[str, object] = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}}) if user_id else None
            data["auth"] = channel_auth(app.key, app.secret, self.socket_id, channel, channel_data)
            if channel_data is not None:
                data["channel_data"] = channel_data
        await self.send("pusher:subscribe", data)
        return await self.expect("pusher_internal:subscription_succeeded")

    async def close(self) -> None:
        await self.ws.close()


async def ws_client(url: str, **options: Any) -> Client:
    ws = await connect(url, open_timeout=5, **options)
    client = Client(ws)
    established = await client.expect("pusher:connection_established")
    client.socket_id = json.loads(established["data"])["socket_id"]
    return client


async def eventually(predicate: Any, within: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (openssl req -x509)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is not installed: the TLS tests generate their certificate with it"
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@dataclass
class ConsoleLog:
    """The log events of the console's stream (``/console/events``) of one app, as they come."""

    events: asyncio.Queue[dict[str, Any]]

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        """The next log event (the stream's state snapshots are left out); TimeoutError if none comes in time."""
        return await asyncio.wait_for(self.events.get(), within)

    async def until(self, kind: str, within: float = 5.0) -> dict[str, Any]:
        """The next log event of type ``kind``."""
        async with asyncio.timeout(within):
            while (event := await self.events.get())["type"] != kind:
                pass
        return event


@asynccontextmanager
async def console_log(base_url: str, app_id: str) -> AsyncIterator[ConsoleLog]:
    """Watch ``app_id``'s console stream (the emulator on loopback, no console token). The stream is read in a task
    of its own, so that a wait given up does not end it."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(5, read=None)) as http,  # quiet spells are fine
        http.stream("GET", "/console/events", params={"app": app_id}) as stream,
    ):
        assert stream.status_code == 200

        async def read() -> None:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "log":
                    events.put_nowait(json.loads(line[6:]))

        reader = asyncio.create_task(read())
        try:
            yield ConsoleLog(events)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
