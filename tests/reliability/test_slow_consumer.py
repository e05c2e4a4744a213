"""A client that stops reading is cut off with 4100 while a thousand others keep receiving everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import unittest.mock

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.ably_realtime import AblySession
from relay.emulator.server import HttpConnection
from relay.protocol.signing import sign_rest_request
from tests.conftest import StartEmulator

SUBSCRIBERS = 1_000
PUBLISHES = 20
SEND_BUFFER = 256 * 1024
ABLY_CONNECTED, ABLY_DISCONNECTED, ABLY_ATTACH, ABLY_ATTACHED = 4, 6, 10, 11


async def subscriber(url: str, *channels: str, max_queue: int | None = None) -> ClientConnection:
    ws = await connect(url, max_queue=max_queue, compression=None)
    await ws.recv()
    for channel in channels:
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await ws.recv()
    return ws


async def unread(ws: ClientConnection) -> list[dict[str, object]]:
    """What a stalled client finds when it reads again: every message it had not read, up to the close."""
    messages: list[dict[str, object]] = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(5):
            async for message in ws:
                messages.append(json.loads(message))
    return messages


async def publish(client: httpx.AsyncClient, channel: str, data: str) -> None:
    body = json.dumps({"name": "tick", "channel": channel, "data": data}).encode()
    params = sign_rest_request("app-key", "app-secret", "POST", "/apps/1/events", timestamp=int(time.time()), body=body)
    response = await client.post("/apps/1/events", params=params, content=body)
    assert response.status_code == 200, response.text


async def test_a_stalled_reader_is_disconnected_and_nobody_else_loses_a_message(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(max_send_buffer=SEND_BUFFER)
    url = emulator.ws_url()
    crowd = [await subscriber(url, "news") for _ in range(SUBSCRIBERS)]
    # max_queue=1 and no recv(): websockets stops reading the socket, as a frozen browser tab would.
    stalled = await subscriber(url, "news", "firehose", max_queue=1)
    slow_session = next(s for s in emulator.node.states["1"].peers.values() if "firehose" in s.subscriptions)  # type: ignore[attr-defined]

    async def drain(ws: ClientConnection) -> int:
        count = 0
        while count < PUBLISHES:
            if json.loads(await ws.recv())["event"] == "tick":
                count += 1
        return count

    readers = [asyncio.create_task(drain(ws)) for ws in crowd]
    # The stalled client reads again as soon as it is cut off: the server waits CLOSE_TIMEOUT (3 s) for the close
    # handshake and then drops what is still unsent, the reason included, as it must for a client frozen for good.
    reading_again: asyncio.Task[list[dict[str, object]]] | None = None
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        big = "x" * 10_000
        for round_ in range(PUBLISHES):
            await publish(client, "news", f"{round_}")
            for _ in range(200):  # ~2 MB a round: the kernel's socket buffers fill first, then ours
                if slow_session.closed:
                    break
                await publish(client, "firehose", big)
            if slow_session.closed and reading_again is None:
                reading_again = asyncio.create_task(unread(stalled))
    assert reading_again is not None, "the stalled reader was never disconnected"
    counts = await asyncio.wait_for(asyncio.gather(*readers), 30)
    assert counts == [PUBLISHES] * SUBSCRIBERS
    # The stalled client finds the reason at the end of what it had not read yet.
    frames = await reading_again
    assert {
        "event": "pusher:error",
        "data": {"code": 4100, "message": "Over capacity: the client is not reading its messages"},
    } in frames
    assert stalled.close_code == 4100
    for ws in crowd:
        await ws.close()


async def test_a_stalled_ably_reader_is_disconnected_for_reconnect_while_others_keep_receiving(
    start_emulator: StartEmulator,
) -> None:
    """The same limit on the Ably endpoint: DISCONNECTED with 80003 (Ably clients reconnect) and the reason."""
    emulator = await start_emulator(max_send_buffer=SEND_BUFFER)
    reader = await subscriber(emulator.ws_url(), "firehose")
    stalled = await connect(
        f"ws://127.0.0.1:{emulator.port}/?key=1.app-key:app-secret&format=json", max_queue=1, compression=None
    )
    assert json.loads(await stalled.recv())["action"] == ABLY_CONNECTED
    await stalled.send(json.dumps({"action": ABLY_ATTACH, "channel": "firehose"}))
    assert json.loads(await stalled.recv())["action"] == ABLY_ATTACHED
    ably_session = next(s for s in emulator.node.states["1"].peers.values() if isinstance(s, AblySession))

    # The reader counts for as long as the publishes go on (or it would stall too) and learns how many to expect only
    # once they are done: the session can close during a publish that has not returned yet.
    ticks = 0
    expected: int | None = None
    all_arrived = asyncio.Event()

    def note_progress() -> None:
        if expected is not None and ticks >= expected:
            all_arrived.set()

    async def count_ticks() -> None:
        nonlocal ticks
        async for message in reader:
            if json.loads(message)["event"] == "tick":
                ticks += 1
                note_progress()

    counting = asyncio.create_task(count_ticks())
    published = 0
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        while not ably_session.closed and published < 2_000:  # 20 MB at most; the cut comes after a few MB
            await publish(client, "firehose", "x" * 10_000)
            published += 1
    assert ably_session.closed, "the stalled Ably reader was never disconnected"
    reading_again = asyncio.create_task(unread(stalled))  # before the close timeout drops the rest
    expected = published
    note_progress()
    await asyncio.wait_for(all_arrived.wait(), 30)
    assert ticks == published
    counting.cancel()
    messages = await reading_again
    assert messages[-1]["action"] == ABLY_DISCONNECTED
    error = messages[-1]["error"]
    assert isinstance(error, dict)
    assert (error["code"], error["message"]) == (80003, "Over capacity: the client is not reading its messages")
    await reader.close()


UPGRADE = (
    b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_a_client_that_does_not_read_its_http_answers_cannot_upgrade_past_the_limit(
    start_emulator: StartEmulator,
) -> None:
    """Pipelined requests whose answers are never read: the server stops reading at the send limit, so the upgrade
    behind them never opens a session that the limit would no longer watch, and its buffer stays bounded."""
    emulator = await start_emulator(max_send_buffer=64 * 1024)
    reader = await subscriber(emulator.ws_url(), "news")
    _, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    writer.write(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 60_000 + UPGRADE)  # ~17 MB of 404s, never read
    connection = next(c for c in emulator.node.connections if c.ws is None and c.transport is not None)
    async with httpx.AsyncClient(base_url=emulator.http_url) as client:
        for round_ in range(20):
            await asyncio.sleep(0.05)
            await publish(client, "news", f"{round_}")
    assert connection.ws is None and connection.session is None
    assert connection.transport is not None
    assert connection.transport.get_write_buffer_size() < 4 * 1024 * 1024
    for round_ in range(20):  # everyone else was served throughout
        assert json.loads(await asyncio.wait_for(reader.recv(), 5))["data"] == f"{round_}"
    writer.close()
    await reader.close()


async def test_a_websocket_opened_while_its_earlier_answers_are_unread_is_closed_with_4100(
    start_emulator: StartEmulator,
) -> None:
    """asyncio reports the crossing of the limit once: a connection already over it when it upgrades (its requests
    and the upgrade came in one read) is closed at once instead of escaping the limit for good."""
    emulator = await start_emulator(max_send_buffer=64 * 1024)
    sent: list[bytes] = []
    # A stand-in transport, not a socket: the case is the limit crossed within the very read that holds the upgrade,
    # and with a real socket where a read ends and when the kernel's buffers fill is the kernel's choice, so no test
    # could time it. The stand-in reports the crossing exactly there, as uvloop would.
    transport = unittest.mock.Mock(spec=asyncio.Transport)
    transport.write.side_effect = sent.append
    transport.is_closing.return_value = False
    connection = HttpConnection(emulator.node)
    connection.connection_made(transport)
    transport.set_write_buffer_limits.assert_called_once_with(high=64 * 1024)
    connection.pause_writing()  # as uvloop does once the answers pile up
    transport.pause_reading.assert_called_once_with()
    connection.data_received(UPGRADE)
    assert connection.session is None
    assert sent[0].startswith(b"HTTP/1.1 101 ")
    close_frame = sent[-1]
    assert close_frame[0] == 0x88 and int.from_bytes(close_frame[2:4], "big") == 4100
    assert close_frame[4:].decode() == "Over capacity: the client is not reading its messages"
    assert emulator.node.states["1"].peers == {}
