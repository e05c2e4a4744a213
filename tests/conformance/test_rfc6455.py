"""RFC 6455 framing, the ground the Autobahn suite covers (checklist item 20), with a raw socket.

The Autobahn testsuite itself is Python 2 software that this machine cannot install; these cases follow its
categories: framing and reserved bits (1, 3), ping/pong (2), opcodes (4), fragmentation (5), UTF-8 (6), closing (7),
and masking. Each case also checks that the server kept serving another client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

import pytest

from relay.protocol.signing import authorize_channel
from tests.conftest import RunningEmulator

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65_536:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def upgrade(cls, emulator: RunningEmulator, target: str) -> RawClient:
        """A WebSocket to ``target`` (a path and query), its handshake done, nothing read after it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        return cls(reader, writer)

    @classmethod
    async def open(cls, emulator: RunningEmulator) -> RawClient:
        client = await cls.upgrade(emulator, "/app/app-key?protocol=7")
        opcode, payload = await client.read()
        assert opcode == TEXT
        assert json.loads(payload)["event"] == "pusher:connection_established"
        return client

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def read(self) -> tuple[int, bytes]:
        async with asyncio.timeout(3):
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not second & 0x80, "server frames are never masked"
            return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self) -> int:
        """Read until the server's close frame; its status code."""
        while True:
            opcode, payload = await self.read()
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])


async def still_served(emulator: RunningEmulator) -> None:
    client = await RawClient.open(emulator)
    client.send(frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')
    client.writer.close()


async def test_fragmented_message_with_a_ping_in_between(emulator: RunningEmulator) -> None:
    client = await RawClient.open(emulator)
    message = b'{"event":"pusher:ping","data":{}}'
    client.send(
        frame(TEXT, message[:5], fin=False),
        frame(CONTINUATION, message[5:20], fin=False),
        frame(PING, b"in the middle"),
        frame(CONTINUATION, message[20:]),
    )
    assert await client.read() == (PONG, b"in the middle")
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')


@pytest.mark.parametrize("size", [0, 125])
async def test_ping_payloads_are_echoed(emulator: RunningEmulator, size: int) -> None:
    client = await RawClient.open(emulator)
    payload = os.urandom(size)
    client.send(frame(PING, payload))
    assert await client.read() == (PONG, payload)


async def test_unsolicited_pong_is_ignored(emulator: RunningEmulator) -> None:
    client = await RawClient.open(emulator)
    client.send(frame(PONG, b"unsolicited"), frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')


async def test_a_large_message_uses_the_64_bit_length(emulator: RunningEmulator) -> None:
    client = await RawClient.open(emulator)
    big = json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 70_000}}).encode()
    client.send(frame(TEXT, big))
    assert await client.read() == (TEXT, b'{"event":"pusher:pong","data":{}}')  # all 70 KB read and parsed


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        pytest.param([frame(PING, b"x" * 126)], 1002, id="2.5 ping payload over 125 bytes"),
        pytest.param([frame(PING, b"", fin=False)], 1002, id="5.1 fragmented ping"),
        pytest.param([frame(TEXT, b"{}", rsv=1)], 1002, id="3.1 RSV1 without an extension"),
        pytest.param([frame(TEXT, b"{}", rsv=4)], 1002, id="3.3 RSV3"),
        pytest.param([frame(0x3, b"")], 1002, id="4.1 reserved data opcode"),
        pytest.param([frame(0xB, b"")], 1002, id="4.2 reserved control opcode"),
        pytest.param([frame(CONTINUATION, b"{}")], 1002, id="5.9 continuation without a start"),
        pytest.param([frame(TEXT, b"{", fin=False), frame(TEXT, b"}")], 1002, id="5.18 new message inside a message"),
        pytest.param([frame(TEXT, b"{}", masked=False)], 1002, id="unmasked client frame"),
        pytest.param(
            [frame(TEXT, b'{"event":"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xb5\xed\xa0\x80"}')], 1007, id="6.3 invalid UTF-8"
        ),
        pytest.param(
            [frame(TEXT, b'{"event":"\xce', fin=False), frame(CONTINUATION, b'\xba"}'), frame(TEXT, b"\xff")],
            1007,
            id="6.4 invalid UTF-8 after a valid fragmented message",
        ),
        pytest.param(
            [frame(TEXT, b'{"event":"\xce\xba\xed\xa0\x80', fin=False)],
            1007,
            id="6.4 invalid UTF-8 in a first fragment, failed before the message ends (fail fast)",
        ),
        pytest.param(
            [frame(TEXT, b'{"event":"\xce', fin=False), frame(CONTINUATION, b"\xff", fin=False)],
            1007,
            id="6.4 invalid UTF-8 across fragments, failed before the message ends",
        ),
        pytest.param([frame(CLOSE, b"\x03")], 1002, id="7.3 close payload of one byte"),
        pytest.param([frame(CLOSE, struct.pack("!H", 999))], 1002, id="7.9 close code 999"),
        pytest.param([frame(CLOSE, struct.pack("!H", 1004))], 1002, id="7.9 reserved close code 1004"),
    ],
)
async def test_protocol_violations_fail_the_connection(
    emulator: RunningEmulator, frames: list[bytes], expected: int
) -> None:
    client = await RawClient.open(emulator)
    client.send(*frames)
    assert await client.close_code() == expected
    await still_served(emulator)


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
async def test_clean_close_is_echoed(emulator: RunningEmulator, code: int) -> None:
    client = await RawClient.open(emulator)
    client.send(frame(CLOSE, struct.pack("!H", code) + b"bye"))
    assert await client.close_code() == code
    assert await asyncio.wait_for(client.reader.read(), 3) == b""  # then the server closes the TCP connection


async def presence_member(emulator: RunningEmulator, channel: str, user_id: str) -> RawClient:
    """A raw WebSocket subscribed to presence ``channel`` as ``user_id``, its subscription_succeeded read."""
    client = await RawClient.upgrade(emulator, "/app/app-key?protocol=7")
    _, established = await client.read()
    socket_id = json.loads(json.loads(established)["data"])["socket_id"]
    channel_data = json.dumps({"user_id": user_id})
    auth = authorize_channel("app-key", "app-secret", socket_id, channel, channel_data=channel_data)
    subscribe = {"event": "pusher:subscribe", "data": {"channel": channel, **auth}}
    client.send(frame(TEXT, json.dumps(subscribe).encode()))
    _, succeeded = await client.read()
    assert json.loads(succeeded)["event"] == "pusher_internal:subscription_succeeded"
    return client


async def test_a_client_that_sent_its_close_frame_leaves_presence_at_once(emulator: RunningEmulator) -> None:
    """RFC 6455 §7.1.1: after the close frames the server closes TCP. The session was released only when the TCP
    connection ended, so a client that sent its close frame and kept its side open (reading paused with frames
    unread, as websockets' client does past 16) stayed a presence member for CLOSE_TIMEOUT (3 s). It leaves with its
    close frame: the other member hears member_removed at once, and the channel's member list no longer has it."""
    observer = await presence_member(emulator, "presence-room", "obs")
    leaver = await presence_member(emulator, "presence-room", "leaver")
    _, added = await observer.read()
    assert json.loads(added)["event"] == "pusher_internal:member_added"
    leaver.send(frame(CLOSE, struct.pack("!H", 1000)))
    async with asyncio.timeout(1.0):  # the abort would come at 3 s
        _, removed = await observer.read()
    assert json.loads(removed) == {
        "event": "pusher_internal:member_removed",
        "channel": "presence-room",
        "data": '{"user_id":"leaver"}',
    }
    assert list(emulator.node.states["1"].channels["presence-room"].members) == ["obs"]
    assert await leaver.close_code() == 1000
    await still_served(emulator)
