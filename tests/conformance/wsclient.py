"""Raw Pusher-protocol WebSocket clients for the conformance tests, and the HTTP API calls they make.

Every frame read goes through :func:`check_frame`, so the invariants of checklist items 9 and 18 (an error's data is
an object, a frame with a channel has data) and item 11 (no close code >= 4300) are checked by every test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pusher  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import App
from relay.protocol.signing import channel_auth, sign_rest_request, user_auth
from tests.conftest import RunningEmulator

APP = App(app_id="1", key="app-key", secret="app-secret")
# The published test-vector credentials (reference §3).
VECTOR_KEY = "278d425bdf160c739803"
VECTOR_SECRET = "7ad3773142a6692b25b8"
VECTOR_APP = App(app_id="3", key=VECTOR_KEY, secret=VECTOR_SECRET)
# No automatic keepalive pings (they would count as activity), no compression, no proxy from the environment.
WS_OPTIONS: dict[str, Any] = {
    "ping_interval": None,
    "compression": None,
    "proxy": None,
    "open_timeout": 3,
    "close_timeout": 1,
    "max_size": None,
}
Frame = dict[str, Any]
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


# -- frames -------------------------------------------------------------------------------------------------------


def check_frame(frame: Frame) -> Frame:
    """Invariants of every server frame: items 9 (error data is an object) and 18 (channel frames carry data)."""
    assert isinstance(frame, dict) and isinstance(frame.get("event"), str), frame
    if "channel" in frame:
        assert "data" in frame, f"item 18: a frame with a channel but no data: {frame}"
        if frame["event"] != "pusher:subscription_error":
            assert isinstance(frame["data"], str), f"channel frames carry string data: {frame}"
    if frame["event"] == "pusher:error":
        data = frame["data"]
        assert isinstance(data, dict), f"item 9: pusher:error data must be an object: {frame}"
        assert isinstance(data.get("message"), str) and data["message"], frame
        assert "code" in data and (data["code"] is None or isinstance(data["code"], int)), frame
    return frame


async def recv_json(ws: ClientConnection, wait: float = 2.0) -> Frame:
    raw = await asyncio.wait_for(ws.recv(), wait)
    assert isinstance(raw, str), f"server frames are text frames, got {raw!r}"
    frame = check_frame(json.loads(raw))
    return frame


async def expect_closed(ws: ClientConnection, code: int, wait: float = 3.0) -> None:
    """The next thing on the socket is the close (no further frames), with ``code``."""
    try:
        extra = await asyncio.wait_for(ws.recv(), wait)
    except ConnectionClosed:
        pass
    else:
        pytest.fail(f"expected the close {code}, got another frame: {extra!r}")
    assert ws.close_code == code
    assert ws.close_code < 4300, "item 11: a close code >= 4300 makes pusher-js give up"


async def expect_fatal(ws: ClientConnection, code: int, wait: float = 3.0) -> str:
    """Item 9: a fatal error is ``pusher:error {code, message}`` followed by a close with the same code."""
    frame = await recv_json(ws, wait)
    assert frame["event"] == "pusher:error", frame
    assert frame["data"]["code"] == code, frame
    await expect_closed(ws, code, wait)
    return str(frame["data"]["message"])


# -- clients --------------------------------------------------------------------------------------------------------


async def established(ws: ClientConnection) -> dict[str, Any]:
    """The ``pusher:connection_established`` data a new socket is greeted with (its socket_id, activity_timeout)."""
    frame = await recv_json(ws)
    assert frame["event"] == "pusher:connection_established", frame
    assert isinstance(frame["data"], str), "item 1: connection_established data is a JSON string"
    data: dict[str, Any] = json.loads(frame["data"])
    return data


@dataclass
class Socket:
    """A connected socket's frames, for the modules whose clients add their own steps (test_http_api's, test_webhooks')
    as for :class:`Client`: every frame read is checked by :func:`check_frame`."""

    ws: ClientConnection
    socket_id: str

    async def send(self, event: str, data: object = None, channel: str | None = None) -> None:
        message: dict[str, object] = {"event": event}
        if data is not None:
            message["data"] = data
        if channel is not None:
            message["channel"] = channel
        await self.ws.send(json.dumps(message))

    async def recv(self, wait: float = 2.0) -> Frame:
        return await recv_json(self.ws, wait)


@dataclass
class Client(Socket):
    app: App
    activity_timeout: int

    async def expect(self, event: str, channel: str | None = None, wait: float = 2.0) -> Frame:
        frame = await self.recv(wait)
        assert frame["event"] == event, f"expected {event}, got {frame}"
        if channel is not None:
            assert frame.get("channel") == channel, frame
        return frame

    async def expect_error(self, code: int | None = None, fragment: str = "") -> str:
        """A non-fatal ``pusher:error``; the caller then proves the socket is still open."""
        frame = await self.expect("pusher:error")
        assert frame["data"]["code"] == code, frame
        assert fragment.lower() in frame["data"]["message"].lower(), frame
        return str(frame["data"]["message"])

    async def sync(self) -> None:
        """Round-trip a ping: the pong must be the very next frame, so nothing else was pending for this socket.

        Frames are handled in order, so after ``await other.sync()`` everything ``other`` sent has been processed.
        """
        await self.send("pusher:ping", {})
        frame = await self.recv(3.0)
        assert frame["event"] == "pusher:pong", f"unexpected frame before the pong: {frame}"

    async def send_subscribe(self, channel: str, channel_data: str | None = None) -> None:
        """Send pusher:subscribe with correctly signed auth for the channel's kind."""
        data: dict[str, object] = {"channel": channel, "auth": ""}
        if channel.startswith("presence-"):
            assert channel_data is not None
            data["auth"] = channel_auth(self.app.key, self.app.secret, self.socket_id, channel, channel_data)
            data["channel_data"] = channel_data
        elif channel.startswith("private-"):
            data["auth"] = channel_auth(self.app.key, self.app.secret, self.socket_id, channel)
        await self.send("pusher:subscribe", data)

    async def subscribe(self, channel: str, channel_data: str | None = None) -> Frame:
        """Subscribe with correctly signed auth; return the server's reply."""
        await self.send_subscribe(channel, channel_data)
        return await self.recv()

    async def subscribed(self, channel: str, channel_data: str | None = None) -> Frame:
        frame = await self.subscribe(channel, channel_data)
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        assert frame["channel"] == channel
        return frame

    async def signin(self, user_data: str) -> Frame:
        """pusher:signin with a correct signature; return the server's reply."""
        auth = user_auth(self.app.key, self.app.secret, self.socket_id, user_data)
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})
        return await self.recv()


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(emulator, key=…, query=…, app=…)`` → a :class:`Client` past ``connection_established``."""
    opened: list[ClientConnection] = []

    async def open_client(
        target: RunningEmulator, *, key: str | None = None, query: str = "protocol=7", app: App | None = None
    ) -> Client:
        ws = await ws_connect(target.ws_url(key, query), **WS_OPTIONS)
        opened.append(ws)
        data = await established(ws)
        return Client(ws, data["socket_id"], app or target.app, data["activity_timeout"])

    yield open_client
    for ws in opened:
        await ws.close()


# -- HTTP API ---------------------------------------------------------------------------------------------------------


async def publish(target: RunningEmulator, channel: str, event: str, data: str, *, app: App | None = None) -> None:
    """Trigger through the HTTP API, signed with relay.protocol.signing."""
    app = app or target.app
    body = json.dumps({"name": event, "channel": channel, "data": data}).encode()
    path = f"/apps/{app.app_id}/events"
    params = sign_rest_request(app.key, app.secret, "POST", path, timestamp=int(time.time()), body=body)
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(
            target.http_url + path, params=params, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200, response.text
    assert response.json() == {}


async def api_get(target: RunningEmulator, path: str, **query: str) -> Any:
    app = target.app
    full = f"/apps/{app.app_id}{path}"
    params = sign_rest_request(app.key, app.secret, "GET", full, timestamp=int(time.time()), params=query)
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(target.http_url + full, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def official_client(target: RunningEmulator, **options: Any) -> Any:
    """pusher-http-python pointed at the emulator (its calls block: run them with asyncio.to_thread)."""
    app = target.app
    return pusher.Pusher(
        app_id=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1", port=target.port, ssl=False, **options
    )


async def assert_serves_others(target: RunningEmulator, connect: Connect) -> None:
    """Item 10/13 companion: a fresh connection can still subscribe and receive a publish."""
    other = await connect(target)
    channel = unique("others-")
    await other.subscribed(channel)
    await publish(target, channel, "still-serving", '{"ok":true}')
    frame = await other.expect("still-serving", channel)
    assert frame["data"] == '{"ok":true}'
