"""A real HTTP receiver for webhooks: a small ASGI app served by uvicorn on a socket the test binds itself.

It records each POST's headers, raw body and arrival time, and answers from a configurable status sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from relay.emulator.webhooks import WebhookDispatcher
from relay.protocol.signing import webhook_signature


@dataclass
class Delivery:
    method: str
    path: str
    raw_headers: list[tuple[str, str]]
    body: bytes
    at: float

    @property
    def headers(self) -> dict[str, str]:
        return {name: value for name, value in self.raw_headers}

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.raw_headers if key == name.lower()]

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events


@dataclass
class Receiver:
    """An ASGI app recording every request and answering ``statuses`` in turn (``status`` once they run out), each
    after the next of ``delays`` seconds (at once once they run out), with ``headers`` besides its Content-Type."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    status: int = 200
    delays: deque[float] = field(default_factory=deque)
    headers: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        self.deliveries.append(Delivery(scope["method"], scope["path"], headers, body, time.monotonic()))
        async with self.changed:
            self.changed.notify_all()
        status = self.statuses.popleft() if self.statuses else self.status
        if self.delays:
            await asyncio.sleep(self.delays.popleft())
        answer = [(b"content-type", b"text/plain")] + [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": b"ok"})

    async def until(self, predicate: Callable[[], bool], within: float = 2.0) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(predicate)

    async def wait_for(self, count: int, within: float = 2.0) -> list[Delivery]:
        """Wait until ``count`` deliveries have arrived (and return them all)."""
        await self.until(lambda: len(self.deliveries) >= count, within)
        return self.deliveries

    async def quiet(self, count: int, seconds: float) -> None:
        """No delivery beyond the first ``count`` arrives within ``seconds``."""
        await asyncio.sleep(seconds)
        extra = [d.events for d in self.deliveries[count:]]
        assert not extra, f"unexpected webhooks {extra}"

    def events(self, path: str | None = None, names: set[str] | None = None) -> list[dict[str, Any]]:
        """Every event received (at ``path``), in arrival order, optionally only those named in ``names``."""
        return [
            event
            for delivery in self.deliveries
            if path is None or delivery.path == path
            for event in delivery.events
            if names is None or event["name"] in names
        ]

    def signed_by(self, secret: str) -> bool:
        """Every delivery so far carries X-Pusher-Signature = HMAC-SHA256(secret, body)."""
        return all(d.headers.get("x-pusher-signature") == webhook_signature(secret, d.body) for d in self.deliveries)

    def event_names(self) -> list[str]:
        return [event["name"] for event in self.events()]

    async def wait_for_event(self, predicate: Callable[[dict[str, Any]], bool], within: float = 2.0) -> float:
        """Wait for an event matching ``predicate``; return the arrival time of its delivery."""

        def matching() -> list[Delivery]:
            return [delivery for delivery in self.deliveries if any(predicate(event) for event in delivery.events)]

        await self.until(lambda: bool(matching()), within)
        return matching()[0].at


async def until_dropped(dispatcher: WebhookDispatcher, count: int, within: float = 1.0) -> None:
    """Wait up to ``within`` seconds for ``dispatcher`` to have dropped ``count`` events (a drop comes after the
    answer that ends its retries, or once the queue is full); the caller asserts the count."""
    deadline = time.monotonic() + within
    while dispatcher.dropped < count and time.monotonic() < deadline:  # noqa: ASYNC110  (the dispatcher has no event)
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def serving(app: Receiver) -> AsyncIterator[Receiver]:
    """``app`` served by uvicorn on a port of its own (``app.url``) until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110  (uvicorn offers no event for "listening")
        await asyncio.sleep(0.01)
    try:
        yield app
    finally:
        server.should_exit = True
        await task


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as app:
        yield app


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    """``await start_receiver(status=500)``: more receivers, each on its own port, stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**fields: Any) -> Receiver:
            return await stack.enter_async_context(serving(Receiver(**fields)))

        yield start
