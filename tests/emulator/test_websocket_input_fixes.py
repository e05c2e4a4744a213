"""What a hunt with malformed WebSocket input found (2026-12-05): a client failed while still sending lost its
pusher:error and close frame to a TCP reset; an Ably text frame that is not UTF-8 closed with 1000, not 1007; an
Ably message or presence member with the client id "" was delivered; a presence action of ``true`` entered."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from relay.emulator.server import MAX_MESSAGE_FRAGMENTS
from tests.ably.ablysupport import ACK, MESSAGE, NACK, PRESENCE, ably_wire
from tests.conformance.test_rfc6455 import CLOSE, TEXT, frame, still_served
from tests.conftest import RunningEmulator
from tests.reliability.test_resource_hunt_fixes import ably_raw


async def fragments(count: int) -> AsyncIterator[str]:
    for _ in range(count):
        yield "x"


async def test_a_client_failed_while_still_sending_gets_its_error_and_close_frame(emulator: RunningEmulator) -> None:
    """The server closed the socket with the client's frames unread, and the kernel's reset threw away the
    pusher:error and the close frame before the client read them (five times in six with a websockets client)."""
    for _ in range(3):
        async with websockets.connect(emulator.ws_url(), max_size=None) as ws:
            await ws.recv()  # pusher:connection_established
            # The server closes while the fragments are still going out: what this is about
            with contextlib.suppress(ConnectionClosed):
                await ws.send(fragments(MAX_MESSAGE_FRAGMENTS + 78))
            error = json.loads(await ws.recv())
            assert error["event"] == "pusher:error" and error["data"]["code"] == 1009, error
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await still_served(emulator)


async def test_an_ably_text_frame_that_is_not_utf8_closes_with_1007(emulator: RunningEmulator) -> None:
    client = await ably_raw(emulator)
    client.send(frame(TEXT, b'{"action":0,"id":"\xff"}'))
    opcode, payload = await client.read()
    message = json.loads(payload)
    assert (opcode, message["action"], message["error"]["code"]) == (TEXT, 9, 80013)
    assert message["error"]["message"] == "Protocol error: a WebSocket text message that is not UTF-8"
    opcode, payload = await client.read()
    assert (opcode, struct.unpack("!H", payload[:2])[0]) == (CLOSE, 1007)  # RFC 6455 §8.1, as a Pusher connection's
    client.writer.close()
    await still_served(emulator)


async def test_an_empty_client_id_and_a_boolean_presence_action_are_nacked(emulator: RunningEmulator) -> None:
    """A connection with a key (no client id of its own) may name one per message, but not "": such a message was
    delivered, and such a member entered; ``"action": true`` (equal to 1, PRESENT) entered too."""
    sender = await ably_wire(emulator, "key=1.app-key:app-secret&echo=false")
    watcher = await ably_wire(emulator, "key=1.app-key:app-secret")
    try:
        for wire in (sender, watcher):
            await wire.attach("room")
        cases = [
            (await sender.publish("room", {"name": "n", "data": "d", "clientId": ""}), 40012),
            (await sender.presence("room", {"action": 2, "clientId": ""}), 40012),
            (await sender.presence("room", {"action": True, "clientId": "ann"}), 40000),
            (await sender.presence("room", {"action": 2.0, "clientId": "ann"}), 40000),
        ]
        for serial, code in cases:
            nack = await sender.expect(NACK)
            assert (nack["msgSerial"], nack["error"]["code"]) == (serial, code), nack
        serial = await sender.publish("room", {"name": "n", "data": "d", "clientId": "ann"})
        assert (await sender.expect(ACK))["msgSerial"] == serial
        delivered = await watcher.expect(MESSAGE)  # the first the watcher hears: nothing of the refused ones
        assert delivered["messages"][0]["clientId"] == "ann"
        await sender.presence("room", {"action": 2, "clientId": "ann"})
        assert (await watcher.expect(PRESENCE))["presence"][0]["clientId"] == "ann"
    finally:
        await sender.ws.close()
        await watcher.ws.close()
