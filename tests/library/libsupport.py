"""Helpers shared by the library tests: sync/async twins, emulator URLs and real WebSocket subscribers.

A :class:`Twin` wraps a :class:`relay.Relay` or :class:`relay.AsyncRelay` so that every method is awaitable and one
test body runs against both clients. Sync calls run in a worker thread (``asyncio.to_thread``) because the emulator
serves from the test's own event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from relay import AsyncRelay, Relay
from relay.emulator.config import App
from relay.emulator.server import EmulatorNode
from relay.senders import RetryPolicy
from tests.conftest import TEST_APP
from tests.conftest import emulator_url as emulator_url

KEY, SECRET, APP_ID = "app-key", "app-secret", "1"
RECV_TIMEOUT = 2.0
FAST_RETRY = RetryPolicy(attempts=3, backoff=0.001, max_delay=1.0, timeout=5.0)
Frame = dict[str, Any]


class Emulator(Protocol):
    """What the tests use of ``tests/conftest.py``'s RunningEmulator."""

    port: int

    def ws_url(self, key: str | None = None, query: str = "protocol=7") -> str: ...


StartEmulator = Callable[..., Awaitable[Emulator]]


@dataclass(frozen=True)
class Sent:
    """One HTTP request as it left the client (recorded by an httpx event hook)."""

    method: str
    url: httpx.URL
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Twin:
    """A :class:`Relay` or :class:`AsyncRelay` whose every method is awaited (sync ones in a worker thread).

    ``requests`` lists every HTTP request the client sent, retries included.
    """

    def __init__(self, client: Relay | AsyncRelay, requests: list[Sent]) -> None:
        self.client = client
        self.requests = requests
        self.is_async = isinstance(client, AsyncRelay)

    def __repr__(self) -> str:
        return f"Twin({self.client!r})"

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if not self.is_async:
                return await asyncio.to_thread(method, *args, **kwargs)
            result = method(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        return call

    async def close(self) -> None:
        if isinstance(self.client, AsyncRelay):
            await self.client.aclose()
        else:
            self.client.close()


MakeRelay = Callable[..., Twin]


@dataclass
class Subscriber:
    """A raw Pusher-protocol WebSocket client (websockets), past ``pusher:connection_established``."""

    ws: ClientConnection
    socket_id: str

    async def send(self, event: str, data: object) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def recv(self, wait: float = RECV_TIMEOUT) -> Frame:
        frame: Frame = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        return frame

    async def expect(self, event: str, channel: str | None = None, wait: float = RECV_TIMEOUT) -> Frame:
        """The next frame that is not a ping/pong; it must be ``event`` (on ``channel``)."""
        while True:
            frame = await self.recv(wait)
            if frame["event"] not in ("pusher:ping", "pusher:pong"):
                break
        assert frame["event"] == event, f"expected {event}, got {frame}"
        if channel is not None:
            assert frame.get("channel") == channel, frame
        return frame

    async def subscribe(self, channel: str, auth: dict[str, Any] | None = None) -> Frame:
        """Subscribe (with the body a channel-auth endpoint returned, for private/presence) and wait for success."""
        await self.send("pusher:subscribe", {"channel": channel, **(auth or {})})
        return await self.expect("pusher_internal:subscription_succeeded", channel)

    async def signin(self, body: dict[str, Any]) -> Frame:
        await self.send("pusher:signin", body)
        return await self.expect("pusher:signin_success")

    async def closed(self, wait: float = 3.0) -> int | None:
        """Read until the server closes the socket; the close code."""
        try:
            async with asyncio.timeout(wait):
                while True:
                    await self.ws.recv()
        except ConnectionClosed:
            pass
        return self.ws.close_code


Subscribe = Callable[[Emulator], Awaitable[Subscriber]]


@dataclass
class StoppableEmulator:
    """An emulator (default test app) that a test can stop: it stops listening and drops every connection."""

    node: EmulatorNode
    server: asyncio.Server
    port: int
    stopped: bool = False
    app: App = TEST_APP
    host: str = "127.0.0.1"

    def ws_url(self, key: str | None = None, query: str = "protocol=7") -> str:
        return f"ws://{self.host}:{self.port}/app/{key or self.app.key}?{query}"

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.close()
            await self.node.close()


StartStoppable = Callable[[], Awaitable[StoppableEmulator]]


class SilentServer:
    """Accepts connections and reads, never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=200)
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def wait_for_connections(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.accepted) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted)} connections of {count}"
            time.sleep(0.01)

    def wait_for_request(self) -> None:
        """Waits until the first connection holds a whole request (its head and the body its Content-Length names),
        read without taking it: a fixed sleep after the connection opened was sometimes before the client, on
        another thread of a loaded machine, had written it."""
        self.wait_for_connections(1)
        conn = self.accepted[0]
        deadline = time.monotonic() + 5
        while True:
            try:
                waiting = conn.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                waiting = b""
            head, ended, body = waiting.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if ended and len(body) >= length:
                return
            assert time.monotonic() < deadline, f"no whole request within 5 s: {waiting!r}"
            time.sleep(0.01)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:  # ends a request the test left waiting, whatever it asserted
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# An answer of the plain-HTTP server below: the bytes to write (the connection then waits for the next request), or
# chunks written in turn and then the end of the connection (a generator may never end), a future of those bytes (the
# answer held until it is set), or None to hang up without an answer
Answer = bytes | Iterable[bytes] | asyncio.Future[bytes] | None


def close_after(request: int, answer: Callable[[int], bytes], close: Callable[[], object]) -> Callable[[int], bytes]:
    """:func:`server`'s ``answer``, with ``close`` called 0.5 s after it answers the ``request``-th request, while the
    client waits to retry (timed from the test's start instead, it was sometimes before a request was sent, on a
    loaded machine)."""

    def answering(n: int) -> bytes:
        if n == request:
            asyncio.get_running_loop().call_later(0.5, close)
        return answer(n)

    return answering


@asynccontextmanager
async def server(answer: Callable[[int], Answer]) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A plain-HTTP server that reads each request whole and gives ``answer(n)`` (an :data:`Answer`) for the n-th
    (from 1): an emulator:// URL of it and the requests it got."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                got.append(head + await reader.readexactly(length))
                reply = answer(len(got))
                if isinstance(reply, asyncio.Future):
                    reply = await reply
                if reply is None:
                    writer.transport.abort()
                    return
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                    continue
                for chunk in reply:
                    writer.write(chunk)
                    await writer.drain()
                writer.close()
                return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()  # not left to the garbage collector, which warns of each connection it closes

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1", got
    finally:
        listening.close()
