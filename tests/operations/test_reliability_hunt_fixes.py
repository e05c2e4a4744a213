"""Fixes from the reliability hunt: bytes sent to permessage-deflate connections counted as written, a webhook
receiver that trickles its answer no longer stalls its URL's queue, and /ready answers 503 to new connections during
shutdown_delay (the listener keeps accepting until it ends)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import struct
import zlib
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relay.emulator import webhooks
from relay.emulator.config import Webhook
from relay.protocol.signing import user_auth
from tests.conftest import StartEmulator, whole_run
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, api, eventually, publish, ws_client
from tests.operations.test_metrics import APP_LABEL, scrape
from tests.webhook_receiver import Receiver, serving

# -- bytes sent to permessage-deflate connections ---------------------------------------------------------------


@dataclass
class WireClient:
    """A Pusher client on a bare TCP stream: RFC 6455 framing and RFC 7692 inflating done here, so every byte the
    emulator writes after its 101 is seen and counted."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    extensions: str | None
    socket_id: str = ""
    frames: list[tuple[str, int]] = field(default_factory=list)  # (text, bytes on the wire with the header) each

    @property
    def received(self) -> int:
        return sum(size for _, size in self.frames)

    @classmethod
    async def open(cls, port: int, offer: str | None = None) -> WireClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /app/{APP.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if offer is not None:
            head += f"Sec-WebSocket-Extensions: {offer}\r\n"
        writer.write((head + "\r\n").encode())
        response = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
        assert response.startswith("HTTP/1.1 101 "), response
        fields = dict(line.split(": ", 1) for line in response.split("\r\n")[1:] if ": " in line)
        client = cls(reader, writer, fields.get("Sec-WebSocket-Extensions"))
        established = await client.expect("pusher:connection_established")
        client.socket_id = json.loads(established["data"])["socket_id"]
        return client

    async def next(self) -> dict[str, Any]:
        header = await asyncio.wait_for(self.reader.readexactly(2), 5)
        length, size = header[1] & 0x7F, 2
        if length >= 126:
            extended = await self.reader.readexactly(2 if length == 126 else 8)
            length, size = int.from_bytes(extended), size + len(extended)
        payload = await self.reader.readexactly(length)
        if header[0] & 0x40:  # RSV1: a compressed message, without the 4 bytes of the sync flush's tail
            assert self.extensions is not None
            payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        assert header[0] & 0x0F == 0x1  # text
        self.frames.append((payload.decode(), size + length))
        frame: dict[str, Any] = json.loads(payload)
        return frame

    async def expect(self, event: str) -> dict[str, Any]:
        while (frame := await self.next())["event"] != event:
            pass
        return frame

    async def send(self, event: str, data: object) -> None:
        payload = json.dumps({"event": event, "data": data}).encode()
        mask = os.urandom(4)
        length = len(payload)
        head = struct.pack("!BB", 0x81, 0x80 | length) if length < 126 else struct.pack("!BBH", 0x81, 0xFE, length)
        self.writer.write(head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload)))

    async def sign_in(self, user_data: dict[str, object]) -> None:
        text = json.dumps(user_data)
        auth = user_auth(APP.key, APP.secret, self.socket_id, text)
        await self.send("pusher:signin", {"user_data": text, "auth": auth})
        await self.expect("pusher:signin_success")

    def close(self) -> None:
        self.writer.close()


async def sent_so_far(base_url: str) -> tuple[float, float, int]:
    """relay_messages_sent_total, relay_bytes_sent_total and the bytes_out in /usage (a cluster node's samples
    carry its node label too)."""
    samples, _ = await scrape(base_url)
    async with httpx.AsyncClient() as http:
        run = whole_run((await http.get(f"{base_url}/usage")).json()["apps"][APP.app_id]["days"])

    def of_the_app(name: str) -> float:
        (value,) = [value for (sample, labels), value in samples.items() if sample == name and APP_LABEL[0] in labels]
        return value

    return of_the_app("relay_messages_sent_total"), of_the_app("relay_bytes_sent_total"), run["bytes_out"]


async def test_bytes_sent_to_deflate_connections_are_counted_as_written(start_emulator: StartEmulator) -> None:
    """docs/emulator.md: relay_bytes_sent_total and bytes_out are the bytes written, frame headers included
    (`relay cost --usage` prices egress from bytes_out). The frames written to a connection that negotiated
    permessage-deflate were counted at their uncompressed size: here nearly twice what was written."""
    emulator = await start_emulator(app=APP)
    plain = await WireClient.open(emulator.port)
    browser = await WireClient.open(emulator.port, "permessage-deflate; client_max_window_bits")  # what browsers offer
    narrow = await WireClient.open(emulator.port, "permessage-deflate; server_max_window_bits=9")
    assert browser.extensions is not None and "permessage-deflate" in browser.extensions
    assert narrow.extensions is not None and "server_max_window_bits=9" in narrow.extensions
    clients = (plain, browser, narrow)
    for client in clients:
        await client.send("pusher:subscribe", {"channel": "acct"})
        await client.expect("pusher_internal:subscription_succeeded")
    await browser.sign_in({"id": "ann", "watchlist": ["bob"]})
    await browser.expect("pusher_internal:watchlist_events")  # bob is offline
    for client in clients:
        client.frames = []
    messages_before, bytes_before, bytes_out_before = await sent_so_far(emulator.http_url)

    # A block repeated 600 bytes apart: a 32 KiB window finds the repeats, a 512-byte one cannot.
    letters = random.Random(7)
    block = "".join(letters.choice("abcdefghijklmnop") for _ in range(600))
    for data in ("x", json.dumps({"pad": "a" * 300}), block * 5):
        await publish(emulator.http_url, APP, "acct", "e", data)
    body = {"name": "e", "channel": "acct", "data": json.dumps({"not": "ann" * 50}), "socket_id": browser.socket_id}
    assert (await api(emulator.http_url, APP, "POST", "/apps/1/events", body)).status_code == 200  # all but ann
    await publish(emulator.http_url, APP, "#server-to-user-ann", "e", json.dumps({"for": "ann" * 50}))
    for _ in range(4):
        await plain.expect("e")
        await narrow.expect("e")
    for _ in range(4):
        await browser.expect("e")
    await plain.sign_in({"id": "bob"})  # ann watches bob: she is told he is online
    await browser.expect("pusher_internal:watchlist_events")

    messages, bytes_sent, bytes_out = await sent_so_far(emulator.http_url)
    wire = sum(client.received for client in clients)
    frames = sum(len(client.frames) for client in clients)
    assert (messages - messages_before, bytes_sent - bytes_before, bytes_out - bytes_out_before) == (
        frames,
        wire,
        wire,
    )
    # The same messages, the repeated block compressed far less well in the narrow window.
    assert [text for text, _ in browser.frames[:3]] == [text for text, _ in plain.frames[:3]]
    assert [text for text, _ in narrow.frames[:3]] == [text for text, _ in plain.frames[:3]]
    assert browser.frames[2][1] < narrow.frames[2][1] < plain.frames[2][1]

    # A deflate connection that leaves the channel no longer counts in its fan-outs.
    await narrow.send("pusher:unsubscribe", {"channel": "acct"})
    await narrow.send("pusher:ping", {})
    await narrow.expect("pusher:pong")  # the unsubscribe, sent before, is done
    for client in clients:
        client.frames = []
    messages_before, bytes_before, _ = await sent_so_far(emulator.http_url)
    await publish(emulator.http_url, APP, "acct", "e", block)
    await plain.expect("e")
    await browser.expect("e")
    messages, bytes_sent, _ = await sent_so_far(emulator.http_url)
    assert (messages - messages_before, bytes_sent - bytes_before) == (2, plain.received + browser.received)
    for client in clients:
        client.close()


async def test_protocol_replies_to_a_deflate_connection_are_counted_as_written(start_emulator: StartEmulator) -> None:
    """A connection's own replies (subscription_succeeded, which lists a presence channel's members, errors, pongs)
    go out compressed too, and were metered at their uncompressed size."""
    emulator = await start_emulator(app=APP)
    browser = await WireClient.open(emulator.port, "permessage-deflate; client_max_window_bits")
    browser.frames = []
    messages_before, bytes_before, bytes_out_before = await sent_so_far(emulator.http_url)
    await browser.send("pusher:subscribe", {"channel": "a" * 160})
    await browser.expect("pusher_internal:subscription_succeeded")
    await browser.send("pusher:subscribe", {"channel": "b" * 160 + "!"})
    await browser.expect("pusher:subscription_error")
    await browser.send("pusher:ping", {})
    await browser.expect("pusher:pong")
    messages, bytes_sent, bytes_out = await sent_so_far(emulator.http_url)
    written = browser.received
    assert written < sum(len(text) for text, _ in browser.frames)  # compressed on the wire: the test can fail
    assert (messages - messages_before, bytes_sent - bytes_before, bytes_out - bytes_out_before) == (
        3,
        written,
        written,
    )


# -- a webhook receiver that trickles its answer ----------------------------------------------------------------

TRICKLE_INTERVAL = 0.5  # seconds between the bytes of a trickled answer: no single read waits long
OCCUPIED = frozenset({"channel_occupied"})  # no channel_vacated sent at the end, when the receiver is gone


class TricklingReceiver(Receiver):
    """Answers 200 with a 100-byte body sent a byte at a time (50 s in all), as long as the client stays."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def trickle(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                return
            await send({**message, "headers": [(b"content-length", b"100")]})
            gone = asyncio.create_task(receive())  # the request is read: what comes next is the client leaving
            for _ in range(100):
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(TRICKLE_INTERVAL)
            gone.cancel()

        await super().__call__(scope, receive, trickle)


def webhook_samples(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """relay_webhook_requests_total by status, and relay_webhook_failures_total as "failures"."""
    found = {labels[1][1]: value for (name, labels), value in samples.items() if name == "relay_webhook_requests_total"}
    return {**found, "failures": samples[("relay_webhook_failures_total", APP_LABEL)]}


async def test_a_receiver_trickling_its_body_does_not_hold_up_the_next_webhooks(start_emulator: StartEmulator) -> None:
    """httpx's timeout bounds each read, and the body was read in full: a receiver answering 200 and then sending its
    body a byte every few seconds held its URL's queue (here 50 s). The status is all a webhook needs."""
    async with serving(TricklingReceiver()) as receiver:
        app = replace(APP, webhooks=(Webhook(url=receiver.url, event_types=OCCUPIED),), webhook_batch_ms=10)
        emulator = await start_emulator(app=app)
        client = await ws_client(emulator.ws_url())
        await client.subscribe("first", app)
        await receiver.wait_for(1)
        await client.subscribe("second", app)
        await receiver.wait_for(2, within=3.0)
        assert [(event["name"], event["channel"]) for event in receiver.events()] == [
            ("channel_occupied", "first"),
            ("channel_occupied", "second"),
        ]
        dispatcher = emulator.node.states[APP.app_id].webhooks
        await eventually(lambda: dispatcher.pending == 0, what="the second answer")
        samples, _ = await scrape(emulator.http_url)
        assert webhook_samples(samples) == {"200": 2, "failures": 0}  # delivered, once each
        await client.close()


@dataclass
class HeaderTrickler:
    """A bare HTTP receiver: requests for the channel "stuck" get a status line and then one byte of a header every
    TRICKLE_INTERVAL, forever; the others get 204 at once."""

    port: int = 0
    channels: list[str] = field(default_factory=list)  # the channel of each request's first event, in order

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                channel = json.loads(await reader.readexactly(length))["events"][0]["channel"]
                self.channels.append(channel)
                if channel != "stuck":
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    await asyncio.sleep(TRICKLE_INTERVAL)
                    writer.write(b"z")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def header_trickler() -> AsyncIterator[HeaderTrickler]:
    receiver = HeaderTrickler()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver


async def test_a_webhook_request_is_bounded_whole_failed_when_over_and_retried(
    start_emulator: StartEmulator, header_trickler: HeaderTrickler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver whose headers never end, a byte at a time, got a request with no end: its URL's queue stalled and
    /metrics showed nothing. Now the whole request is bounded (4 s; shortened here): past it, the request is a
    failure, retried for webhook_retry_for like any other, then dropped, and the queue moves on."""
    monkeypatch.setitem(webhooks.REQUEST_TIMEOUT, "pusher", 1.0)
    url = f"http://127.0.0.1:{header_trickler.port}/hooks"
    app = replace(APP, webhooks=(Webhook(url=url, event_types=OCCUPIED),), webhook_batch_ms=10, webhook_retry_for=2.5)
    emulator = await start_emulator(app=app)
    client = await ws_client(emulator.ws_url())
    await client.subscribe("stuck", app)
    await eventually(lambda: header_trickler.channels == ["stuck"], what="the first request")
    await client.subscribe("next", app)
    # 1 s, a retry 0.5 to 1 s later, 1 s again: past 2.5 s, the event is dropped and the next one is sent.
    await eventually(lambda: "next" in header_trickler.channels, within=6.0, what="the next webhook")
    assert header_trickler.channels == ["stuck", "stuck", "next"]
    dispatcher = emulator.node.states[APP.app_id].webhooks
    await eventually(lambda: dispatcher.pending == 0, what="the answer to the next webhook")
    samples, _ = await scrape(emulator.http_url)
    assert webhook_samples(samples) == {"error": 2, "204": 1, "failures": 2}
    await client.close()


async def test_webhooks_answered_with_a_short_body_share_one_connection(start_emulator: StartEmulator) -> None:
    """A short answer's body is read, so its connection carries the next webhook (a TLS handshake saved each time);
    left unread, httpx closed the connection after every webhook."""
    connections: list[list[str]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channels: list[str] = []
        connections.append(channels)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                channels.append(json.loads(await reader.readexactly(length))["events"][0]["channel"])
                writer.write(
                    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
                )

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    async with server:
        app = replace(APP, webhooks=(Webhook(url=url, event_types=OCCUPIED),), webhook_batch_ms=10)
        emulator = await start_emulator(app=app)
        client = await ws_client(emulator.ws_url())
        for count, channel in enumerate(("first", "second", "third"), start=1):
            await client.subscribe(channel, app)
            await eventually(lambda count=count: sum(map(len, connections)) == count, what=f"the webhook for {channel}")
        assert connections == [["first", "second", "third"]]
        await client.close()


# -- /ready during shutdown_delay -------------------------------------------------------------------------------


async def test_new_connections_during_shutdown_delay_get_ready_503_then_the_port_closes(tmp_path: Path) -> None:
    """docs/deploy.md: `shutdown_delay = 2  # let nginx and load balancers see /ready = 503 before closing`. The
    listener closed at once, so a health check (a new connection) was refused and only kept-alive connections saw
    503. Now, during the delay, new connections are served: /ready is 503, the HTTP API answers, a new WebSocket gets
    a 503 (pusher-js backs off); the listener closes when the delay ends."""
    config = tmp_path / "emulator.toml"
    config.write_text(
        f'[server]\nshutdown_delay = 5\nshutdown_spread = 0\n\n[[apps]]\napp_id = "{APP.app_id}"\n'
        f'key = "{APP.key}"\nsecret = "{APP.secret}"\n'
    )
    relay = await EmulatorProcess.start("--config", str(config))
    base = f"http://127.0.0.1:{relay.port}"
    ws_url = f"ws://127.0.0.1:{relay.port}/app/{APP.key}?protocol=7"
    try:
        subscriber = await ws_client(ws_url)
        await subscriber.subscribe("news", APP)
        relay.process.send_signal(signal.SIGTERM)
        await relay.wait_for_output("shutdown: ")  # the drain has begun

        async def on_a_new_connection(path: str) -> httpx.Response:
            async with httpx.AsyncClient(base_url=base) as http:
                return await http.get(path)

        ready = await on_a_new_connection("/ready")
        assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
        assert (await on_a_new_connection("/health")).status_code == 200
        await publish(base, APP, "news", "during-the-delay", "{}")  # still served: a backend's route is stale
        assert (await subscriber.expect("during-the-delay"))["channel"] == "news"
        # A failed handshake, not a 101 closed with 4200: pusher-js reconnects at once after 4200, and spun for the
        # whole delay (920 handshakes in 2 s from one page); after a failed handshake it backs off.
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url, open_timeout=5)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body or b"") == {
            "error": "Server is shutting down: connect again shortly"
        }

        await relay.wait_for_output("stopped accepting connections", within=10)
        assert (await subscriber.expect("pusher:error"))["data"]["code"] == 4200  # closed after the delay
        with pytest.raises(httpx.ConnectError):
            await on_a_new_connection("/ready")
        assert await asyncio.wait_for(relay.process.wait(), 10) == 0  # drained on its own
    finally:
        await relay.kill()
