"""The emulator's hot path (issue 9): shared deflated frames, the handshake fast path and write coalescing.

Behaviour only: the same bytes a client would get from the slow path, and nothing lost or reordered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import zlib

import pytest

from relay.emulator import wire
from tests.conftest import RunningEmulator, StartEmulator


def payload_of(frame: bytes) -> tuple[int, bytes]:
    length = frame[1] & 0x7F
    offset = 2 if length < 126 else 4 if length == 126 else 10
    return frame[0], frame[offset:]


@pytest.mark.parametrize("size", [100, 5_000, 70_000])
def test_a_deflated_frame_inflates_to_the_original_with_rsv1_set(size: int) -> None:
    frame = wire.encode_text(json.dumps({"event": "e", "channel": "c", "data": "ab" * (size // 2)}))
    compressed = wire.deflated(frame, 15)
    first, data = payload_of(compressed)
    assert first == 0x81 | 0x40  # FIN, RSV1 (compressed), text
    assert len(compressed) < len(frame)
    # RFC 7692 §7.2.2: the receiver appends 00 00 ff ff and inflates with a window of server_max_window_bits.
    assert zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff") == payload_of(frame)[1]
    assert zlib.decompressobj(-9).decompress(data + b"\x00\x00\xff\xff") == payload_of(frame)[1] or size > 512


def test_deflate_compresses_once_per_frame_and_leaves_small_and_control_frames_alone() -> None:
    frame = wire.encode_text("x" * 300)
    assert wire.deflated(frame, 15) is wire.deflated(frame, 15)  # shared by every recipient of one publish
    small = wire.encode_text('{"event":"pusher:pong","data":{}}')
    assert wire.deflated(small, 15) is small
    ping = bytes((0x89, 4)) + b"ping"
    assert wire.deflated(ping, 15) is ping
    assert wire.deflated(frame, 8) is frame  # zlib cannot honour a 256-byte window: send it uncompressed


def test_fast_accept_answers_the_rfc_example_and_leaves_odd_requests_to_websockets() -> None:
    headers = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    assert wire.fast_accept(b"GET", "1.1", headers) == (b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", None)  # RFC 6455 §1.3
    offer = [*headers, ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    assert wire.fast_accept(b"GET", "1.1", offer) == (
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "permessage-deflate; client_max_window_bits",
    )
    odd = [
        [*headers, ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")],  # repeated
        [h for h in headers if h[0] != "Sec-WebSocket-Key"],
        [*headers[:3], ("Sec-WebSocket-Key", "c2hvcnQ="), headers[4]],  # not 16 bytes
        [*headers[:4], ("Sec-WebSocket-Version", "8")],
        [*headers, ("Content-Length", "0")],
        [*headers, ("Sec-WebSocket-Protocol", "chat")],
        [*headers, ("Origin", "https://a.example"), ("Origin", "https://b.example")],
    ]
    for request in odd:
        assert wire.fast_accept(b"GET", "1.1", request) is None, request
    assert wire.fast_accept(b"POST", "1.1", headers) is None
    assert wire.fast_accept(b"GET", "1.0", headers) is None


async def handshake(emulator: RunningEmulator, *extra: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET /app/{emulator.app.key}?protocol=7 HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        *extra,
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    return head, reader, writer


async def test_the_handshake_negotiates_deflate_only_when_offered(emulator: RunningEmulator) -> None:
    head, reader, writer = await handshake(emulator, "Sec-WebSocket-Version: 13")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Extensions" not in head
    writer.close()
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    head, reader, writer = await handshake(emulator, "Sec-WebSocket-Version: 13", offer)
    assert (
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        in head
    )
    first = await asyncio.wait_for(reader.readexactly(2), 3)
    body = await reader.readexactly(first[1])
    if first[0] & 0x40:  # connection_established is long enough to be sent compressed
        body = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    assert json.loads(body)["event"] == "pusher:connection_established"
    writer.close()


async def test_a_handshake_the_fast_path_declines_gets_websockets_answer(emulator: RunningEmulator) -> None:
    head, reader, writer = await handshake(emulator, "Sec-WebSocket-Version: 8")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    body = await asyncio.wait_for(reader.read(), 3)
    assert b"invalid Sec-WebSocket-Version header: 8" in body  # websockets' own wording
    writer.close()
    head, _, writer = await handshake(emulator, "Sec-WebSocket-Version: 13")
    assert head.startswith(b"HTTP/1.1 101")  # and the server kept serving
    writer.close()


async def test_frames_queued_in_one_iteration_keep_their_order_around_control_frames(
    start_emulator: StartEmulator,
) -> None:
    from websockets.asyncio.client import connect

    emulator = await start_emulator()
    state = emulator.node.states[emulator.app.app_id]
    async with connect(emulator.ws_url(), compression=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "order"}}))
        await ws.recv()
        for round_ in range(3):
            for seq in range(50):  # one loop iteration: the second frame turns on coalescing
                state.publish("order", "tick", str(round_ * 100 + seq))
            pong = ws.ping()
            received = [json.loads(await ws.recv())["data"] for _ in range(50)]
            assert received == [str(round_ * 100 + seq) for seq in range(50)]
            await asyncio.wait_for(pong, 3)
