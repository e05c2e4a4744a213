"""Ably realtime edges an ably-js or ably-python user meets: AUTH widening or ending an attached channel's modes,
channel names, the advertised frame size, and a presence set too big for one SYNC. § numbers are the reference's
(shared/reference/ably-and-pricing.md); Ably's own SDK integration tests are cited where they are the source."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import replace
from typing import Any

import pytest
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    ATTACH,
    ATTACHED,
    AUTH,
    CONNECTED,
    DETACHED,
    ERROR,
    HEARTBEAT,
    MESSAGE,
    NACK,
    SYNC,
    AblyWire,
    PusherWire,
    ably_wire,
    jwt_token,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from relay.protocol.ably import renewal_time
from tests.conftest import RunningEmulator, StartEmulator

Wires = list[AblyWire | PusherWire]
PRESENCE_MODE, PUBLISH_MODE, SUBSCRIBE_MODE, PRESENCE_SUBSCRIBE_MODE = 1 << 16, 1 << 17, 1 << 18, 1 << 19
HAS_PRESENCE_FLAG, RESUMED_FLAG = 1, 4
ABLY_PYTHON_MAX_FRAME = 2**20  # ably-python 3.x opens its WebSocket with websockets' default max_size (1 MiB)


async def next_non_heartbeat(wire: AblyWire, wait: float = 2.0) -> dict[str, Any] | None:
    """The next message other than a HEARTBEAT, ``None`` when nothing comes within ``wait``, or
    ``{"closed": …}`` when the server closes the socket instead."""
    try:
        while (message := await wire.recv(wait))["action"] == HEARTBEAT:
            pass
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return {"closed": str(exc)}
    return message


async def _ack_or_nack(wire: AblyWire) -> dict[str, Any]:
    """The next ACK or NACK (the channel's own MESSAGE echo may come first)."""
    while True:
        message = await wire.recv()
        if message["action"] in (ACK, NACK):
            return message


async def test_reauth_upgrade_adds_publish_to_an_attached_channel(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§B.1/§D.7: AUTH replaces the connection's token in place. Ably applies the new capability to attached
    channels: ably-js's own integration test ``reauthCapabilityUpgradeAddPublish`` (test/realtime/reauth.test.js,
    RTC8a1) attaches with ``subscribe``, re-authorizes with ``subscribe`` + ``publish`` and then publishes without
    re-attaching: the modes the ATTACH asked for are granted anew from the new capability."""
    first = jwt_token({"room": ["subscribe"]}, client_id="c")
    wire = await ably_wire(ably_emulator, f"access_token={first}")
    wires.append(wire)
    await wire.attach("room")
    upgraded = jwt_token({"room": ["subscribe", "publish"]}, client_id="c")
    await wire.send({"action": AUTH, "auth": {"accessToken": upgraded}})
    await wire.expect(CONNECTED)
    serial = await wire.publish("room", {"name": "n", "data": "d"})
    reply = await _ack_or_nack(wire)
    assert reply["action"] == ACK and reply["msgSerial"] == serial, reply


async def test_reauth_narrowing_modes_sends_attached_with_the_new_modes(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """RTL12/RTC8a1: AUTH with a token that leaves an attached channel fewer modes tells the client with an
    ATTACHED flagged RESUMED (ably-js then shows the new ``channel.modes`` and keeps its presence set); a channel
    whose modes are unchanged gets nothing; a publish where the new token refuses it is NACKed 40160. The
    ATTACHED says HAS_PRESENCE when the channel has members, as the first one did."""
    first = jwt_token({"room": ["subscribe", "publish", "presence"], "lobby": ["subscribe"]}, client_id="c")
    wire = await ably_wire(ably_emulator, f"access_token={first}")
    wires.append(wire)
    await wire.attach("room")
    await wire.attach("lobby")
    entered = await wire.presence("room", {"action": 2, "clientId": "c"})
    reply = await _ack_or_nack(wire)
    assert (reply["action"], reply["msgSerial"]) == (ACK, entered), reply
    narrowed = jwt_token({"room": ["subscribe", "presence"], "lobby": ["subscribe"]}, client_id="c")
    await wire.send({"action": AUTH, "auth": {"accessToken": narrowed}})
    await wire.expect(CONNECTED)
    update = await next_non_heartbeat(wire)
    while update is not None and update["action"] != ATTACHED:  # the member's own PRESENCE echo may come first
        update = await next_non_heartbeat(wire)
    assert update is not None and update["channel"] == "room", update
    modes = SUBSCRIBE_MODE | PRESENCE_SUBSCRIBE_MODE | PRESENCE_MODE  # "subscribe" grants both subscribe modes
    assert update["flags"] == modes | RESUMED_FLAG | HAS_PRESENCE_FLAG, update
    assert await next_non_heartbeat(wire, 0.5) is None, "lobby's modes did not change: no ATTACHED for it"
    serial = await wire.publish("room", {"name": "n", "data": "d"})
    reply = await _ack_or_nack(wire)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40160), reply


async def test_reauth_downgrade_fails_a_channel_the_new_token_excludes(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """§B.1/§D.7 and ably-js ``reauthCapabilityDowngradeFullChannel`` (RTC8a1): after AUTH with a token that no
    longer covers an attached channel, Ably fails that channel with 40160 (ably-js waits for state ``failed`` and
    ``errorReason.code == 40160``), and the connection stays."""
    first = jwt_token({"room": ["*"], "other": ["*"]}, client_id="c")
    wire = await ably_wire(ably_emulator, f"access_token={first}")
    wires.append(wire)
    await wire.attach("room")
    await wire.send({"action": AUTH, "auth": {"accessToken": jwt_token({"other": ["*"]}, client_id="c")}})
    await wire.expect(CONNECTED)
    notice = await next_non_heartbeat(wire)
    assert notice is not None, "no ERROR/DETACHED for the channel the new token no longer covers"
    assert notice["action"] in (ERROR, DETACHED) and notice.get("channel") == "room", notice
    assert notice["error"]["code"] == 40160, notice


async def test_channel_name_starting_with_a_colon_is_invalid(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Ably's channel naming rules (ably.com/docs/channels; error page 40010): names must not be empty, must not
    start with ``[`` or ``:``, and must not contain newlines; such an ATTACH fails that channel with 40010.
    REST shares the check. The connection goes on (it attaches a valid name, publishes and gets its echo), and
    another one is served too."""
    other = await ably_wire(ably_emulator)
    wire = await ably_wire(ably_emulator)
    wires.extend((other, wire))
    await other.attach("room")
    await wire.send({"action": ATTACH, "channel": ":room"})
    reply = await next_non_heartbeat(wire)
    assert reply is not None and reply["action"] == ERROR, reply
    assert reply["channel"] == ":room" and reply["error"]["code"] == 40010, reply
    await wire.attach("room")
    serial = await wire.publish("room", {"name": "after", "data": "d"})
    first, second = await next_non_heartbeat(wire), await next_non_heartbeat(wire)
    assert first is not None and second is not None, (first, second)
    ack, echo = sorted((first, second), key=lambda message: message["action"])  # either may come first
    assert (ack["action"], ack["msgSerial"]) == (ACK, serial), ack
    assert (echo["action"], echo["channel"], [m["name"] for m in echo["messages"]]) == (MESSAGE, "room", ["after"])
    relayed = await other.expect(MESSAGE)
    assert (relayed["channel"], [m["name"] for m in relayed["messages"]]) == ("room", ["after"]), relayed


async def test_connected_advertises_the_frame_size_the_socket_accepts(
    start_emulator: StartEmulator, wires: Wires
) -> None:
    """§D.3: CONNECTED's ``maxFrameSize`` is what the server takes: the socket's limit (``max_frame_bytes``, or an
    app's smaller ``max_message_bytes``), so a client that keeps to it is never closed with 1009 instead of getting
    a NACK; a publish between ``maxMessageSize`` and that is NACKed 40009 and the connection stays."""
    default = await start_emulator(app=APP)
    wire = await ably_wire(default)
    wires.append(wire)
    assert wire.connected["connectionDetails"]["maxFrameSize"] == default.node.config.max_frame_bytes
    serial = await wire.publish("room", {"name": "n", "data": "x" * 200_000})
    reply = await _ack_or_nack(wire)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    limited = await start_emulator(app=replace(APP, max_message_bytes=100_000))
    assert (await ably_wire(limited)).connected["connectionDetails"]["maxFrameSize"] == 100_000


async def test_presence_sync_is_paged_so_ably_python_can_read_it(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.6: SYNC carries ``channelSerial`` ``<syncId>:<cursor>`` and an empty cursor marks the final page, so a big
    presence set spans several SYNC messages: 20 members with 60 000 bytes of data each (every one within the 64 KiB
    message limit, §A.3) would make one ~1.2 MB frame, over the 1 MiB ably-python's WebSocket accepts (its
    ``presence.get()`` then never completed)."""
    for index in range(20):
        member = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=m{index}")
        wires.append(member)
        await member.attach("big", flags=PRESENCE_MODE | PUBLISH_MODE)  # no PRESENCE_SUBSCRIBE: no SYNC for them
        await member.presence("big", {"action": 2, "data": "x" * 60_000})
        assert (await member.expect(ACK))["action"] == ACK
    ws = await connect(f"ws://127.0.0.1:{ably_emulator.port}/?key={API_KEY}&format=json", max_size=None)
    try:
        await ws.recv()  # CONNECTED
        await ws.send(json.dumps({"action": ATTACH, "channel": "big"}))
        pages: list[tuple[int, dict[str, Any]]] = []
        while not pages or not pages[-1][1]["channelSerial"].endswith(":"):
            raw = await asyncio.wait_for(ws.recv(), 3)
            message = json.loads(raw)
            if message["action"] == SYNC:
                pages.append((len(raw), message))
    finally:
        await ws.close()
    assert sum(len(page["presence"]) for _, page in pages) == 20
    sizes = [size for size, _ in pages]
    assert max(sizes) <= ABLY_PYTHON_MAX_FRAME, f"SYNC frames of {sizes} bytes: one frame over 1 MiB"


async def test_presence_data_over_the_message_size_is_nacked(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Presence messages are messages (§A.3, 64 KiB): a 70,000-byte enter is NACKed 40009 and the connection stays,
    so a presence set cannot grow past what a SYNC page can carry."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=big")
    wires.append(wire)
    await wire.attach("room")
    serial = await wire.presence("room", {"action": 2, "data": "x" * 70_000})
    reply = await _ack_or_nack(wire)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    await wire.presence("room", {"action": 2, "data": "x" * 1_000})
    assert (await _ack_or_nack(wire))["action"] == ACK


@pytest.mark.parametrize(
    ("expires_ms", "now_ms", "asked_at"),
    [
        (None, 0, None),  # key auth: nothing expires
        (3_600_000, 0, 3_570_000),  # an hour's token: asked for 30 s before it ends
        (35_000, 0, 5_000),  # ably-js's sandbox tests renew 35 s tokens: asked for 5 s in
        (30_000, 0, None),  # a token of 30 s or less: not asked for, it expires into DISCONNECTED 40142
        (4_000, 0, None),
        (1_000, 2_000, None),  # already past: the expiry check ends the connection
    ],
)
def test_when_the_server_asks_for_the_next_token(expires_ms: int | None, now_ms: int, asked_at: int | None) -> None:
    assert renewal_time(expires_ms, now_ms) == asked_at


async def test_refused_ably_connections_are_logged_at_most_once_a_second(
    ably_emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone can open refused Ably connections (a wrong key), as many as they like: as for Pusher's, one line a
    second, counted all the same in relay_connections_refused_total."""
    caplog.set_level(logging.INFO, logger="relay.emulator")
    key_name = API_KEY.partition(":")[0]
    started = time.monotonic()
    for _ in range(20):
        async with connect(f"ws://127.0.0.1:{ably_emulator.port}/?key={key_name}:wrong&format=json") as ws:
            assert json.loads(await ws.recv())["error"]["code"] == 40101
    elapsed = time.monotonic() - started
    logged = [record for record in caplog.records if record.getMessage() == "connection refused"]
    assert 1 <= len(logged) <= math.ceil(elapsed) + 1, (len(logged), elapsed)
    assert ably_emulator.node.ops.metrics.refused[40101] == 20
