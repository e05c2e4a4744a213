"""Helpers for the Ably compatibility tests: the test app's Ably key, a raw Ably-protocol WebSocket client (JSON or
msgpack), a raw Pusher-protocol client, SDK factories and the Node scenario runner.

Facts the tests rely on are in ``shared/reference/ably-and-pricing.md`` §A–§D; the emulator side is docs/ably.md.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import msgpack  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import App
from relay.protocol.ably import jwt_claims
from relay.protocol.signing import channel_auth
from tests.conftest import RunningEmulator
from tests.node_scenarios import NodeRun, StepHandler, app_env, run_scenario

APP = App(app_id="1", key="app-key", secret="app-secret", activity_timeout=120)
KEY_NAME, KEY_SECRET = "1.app-key", "app-secret"
API_KEY = f"{KEY_NAME}:{KEY_SECRET}"
RECV_TIMEOUT = 3.0
SCRIPTS = Path(__file__).resolve().parent / "node"

# ProtocolMessage actions and flags (reference §D.2, §D.4).
HEARTBEAT, ACK, NACK, CONNECTED, DISCONNECTED, CLOSE, CLOSED, ERROR = 0, 1, 2, 4, 6, 7, 8, 9
ATTACH, ATTACHED, DETACH, DETACHED, PRESENCE, MESSAGE, SYNC, AUTH = 10, 11, 12, 13, 14, 15, 16, 17
HAS_PRESENCE = 1
ALL_MODES = 983_040  # PRESENCE | PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE


@dataclass
class AblyWire:
    """A raw Ably realtime connection: one ProtocolMessage per WebSocket message, JSON text or msgpack binary."""

    ws: ClientConnection
    binary: bool
    connected: dict[str, Any]
    serial: int = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(msgpack.packb(message, use_bin_type=True) if self.binary else json.dumps(message))

    async def recv(self, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), wait)
        if self.binary:
            assert isinstance(raw, bytes), f"expected a binary frame, got {raw!r}"
            value: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        else:
            assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
            value = json.loads(raw)
        return value

    async def expect(self, action: int, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The next message that is not a HEARTBEAT; it must be ``action``."""
        while True:
            message = await self.recv(wait)
            if message["action"] != HEARTBEAT:
                break
        assert message["action"] == action, f"expected action {action}, got {message}"
        return message

    async def ping(self, ping_id: str) -> None:
        """A client HEARTBEAT with an id; the server must echo it (ably-js ``connection.ping()``)."""
        await self.send({"action": HEARTBEAT, "id": ping_id})
        while (message := await self.recv())["action"] != HEARTBEAT or "id" not in message:
            pass
        assert message == {"action": HEARTBEAT, "id": ping_id}

    async def attach(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send({"action": ATTACH, "channel": channel, **extra})
        return await self.expect(ATTACHED)

    async def publish(self, channel: str, *messages: dict[str, Any]) -> int:
        serial, self.serial = self.serial, self.serial + 1
        await self.send({"action": MESSAGE, "channel": channel, "msgSerial": serial, "messages": list(messages)})
        return serial

    async def presence(self, channel: str, *items: dict[str, Any]) -> int:
        serial, self.serial = self.serial, self.serial + 1
        await self.send({"action": PRESENCE, "channel": channel, "msgSerial": serial, "presence": list(items)})
        return serial

    async def close(self) -> None:
        """Close as the SDKs' ``connection.close()`` does: CLOSE, then the socket once the server has answered. (A
        socket closed without CLOSE leaves the connection held for a resume, its members present for 15 s.)"""
        await self.send({"action": CLOSE})
        await self.closed()

    async def closed(self, wait: float = 3.0) -> list[dict[str, Any]]:
        """Read until the server closes the socket; the messages read before."""
        seen: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(wait):
                while True:
                    seen.append(await self.recv(wait))
        except ConnectionClosed:
            pass
        return seen


PAGE_LINK = re.compile(r'<(\./\w+\?[^>,]+)>; rel="(first|current|next)"')


def page_links(link_header: str | None) -> dict[str, str]:
    """A paginated answer's ``Link`` header by ``rel``: Ably's ``first``, ``current`` and (more to come) ``next``,
    each in the only form ably-js follows (``./name?query``), separated by ", "."""
    if link_header is None:
        return {}
    links = link_header.split(", ")
    matches = [PAGE_LINK.fullmatch(link) for link in links]
    assert all(matches), link_header
    return {match.group(2): match.group(1) for match in matches if match is not None}


async def open_wire(
    running: RunningEmulator, query: str, *, binary: bool = False
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect to the Ably endpoint; (socket, first message)."""
    fmt = "&format=msgpack" if binary else "&format=json"
    ws = await connect(f"ws://127.0.0.1:{running.port}/?{query}{fmt}", open_timeout=RECV_TIMEOUT, close_timeout=0.5)
    wire = AblyWire(ws, binary, {})
    return ws, await wire.recv()


async def ably_wire(running: RunningEmulator, query: str = f"key={API_KEY}", *, binary: bool = False) -> AblyWire:
    ws, first = await open_wire(running, query, binary=binary)
    assert first["action"] == CONNECTED, first
    return AblyWire(ws, binary, first)


async def connected(client: Any) -> None:
    """Wait until an ably-python realtime client is connected (``once_async`` would miss a connection made already)."""
    if client.connection.state.value != "connected":
        await asyncio.wait_for(client.connection.once_async("connected"), 5)


@dataclass
class PusherWire:
    """A raw Pusher-protocol client."""

    ws: ClientConnection
    socket_id: str

    async def send(self, event: str, data: object, channel: str | None = None) -> None:
        frame: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send(json.dumps(frame))

    async def expect(self, event: str, wait: float = RECV_TIMEOUT) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
            if frame["event"] not in ("pusher:ping", "pusher:pong"):
                break
        assert frame["event"] == event, f"expected {event}, got {frame}"
        return frame

    async def subscribe_private(self, channel: str) -> None:
        """Subscribe to a private channel of APP, signed as its backend would sign it."""
        auth = channel_auth(APP.key, APP.secret, self.socket_id, channel)
        await self.send("pusher:subscribe", {"channel": channel, "auth": auth})
        await self.expect("pusher_internal:subscription_succeeded")


async def pusher_wire(running: RunningEmulator) -> PusherWire:
    ws = await connect(running.ws_url(), open_timeout=RECV_TIMEOUT, close_timeout=0.5)
    frame = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    assert frame["event"] == "pusher:connection_established", frame
    return PusherWire(ws, json.loads(frame["data"])["socket_id"])


# -- Node scenarios ------------------------------------------------------------------------------------------------


async def run_node(
    script: str,
    running: RunningEmulator,
    *,
    env: dict[str, str] | None = None,
    on_step: StepHandler | None = None,
    limit_s: float = 20.0,
) -> NodeRun:
    """Run ``tests/ably/node/<script>`` (ably-js, pusher-js and pusher-http-node from ``tests/node``) against
    ``running`` with its Ably key in ``ABLY_KEY`` (see tests/node_scenarios.py)."""
    app_settings = {**app_env("127.0.0.1", running.port, running.app), "ABLY_KEY": running.app.ably_api_key}
    return await run_scenario(SCRIPTS / script, {**(env or {}), **app_settings}, on_step=on_step, limit_s=limit_s)


def jwt_token(
    capability: dict[str, list[str]] | None = None,
    *,
    client_id: str | None = None,
    ttl_s: int = 600,
    issued_at: int | None = None,
    key_name: str = KEY_NAME,
    secret: str = KEY_SECRET,
) -> str:
    """An Ably JWT signed like an app backend signs one (reference §A.11)."""
    header, claims = jwt_claims(
        key_name,
        capability or {"*": ["*"]},
        issued_at=int(time.time()) if issued_at is None else issued_at,
        ttl_seconds=ttl_s,
        client_id=client_id,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256", headers=header)
