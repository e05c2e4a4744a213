"""The Ably realtime protocol on the wire (reference §D), driven with a raw WebSocket client in JSON and msgpack:
CONNECTED, auth failures as ERROR, ATTACH/DETACH with mode flags, MESSAGE with ACK/NACK, PRESENCE with SYNC,
HEARTBEAT, AUTH, CLOSE, shutdown, and bad input answered in Ably's format while other connections keep working."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from ablysupport import (
    ACK,
    ALL_MODES,
    API_KEY,
    APP,
    AUTH,
    CLOSE,
    CLOSED,
    CONNECTED,
    DETACH,
    DETACHED,
    DISCONNECTED,
    ERROR,
    HAS_PRESENCE,
    HEARTBEAT,
    MESSAGE,
    NACK,
    PRESENCE,
    SYNC,
    AblyWire,
    PusherWire,
    ably_wire,
    jwt_token,
    open_wire,
)

from tests.conftest import RunningEmulator

Wires = list[AblyWire | PusherWire]


async def still_serving(running: RunningEmulator, wires: Wires) -> None:
    """A new connection still connects, attaches and gets its own publish back."""
    wire = await ably_wire(running)
    wires.append(wire)
    await wire.attach("still-serving")
    serial = await wire.publish("still-serving", {"name": "ok", "data": "yes"})
    received = await wire.expect(MESSAGE)
    assert received["messages"][0]["data"] == "yes"
    assert (await wire.expect(ACK))["msgSerial"] == serial


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_connected_with_key(ably_emulator: RunningEmulator, wires: Wires, binary: bool) -> None:
    """§D.1/D.3: ``key=`` with ``clientId``; CONNECTED carries connectionDetails (ably-js throws without them)."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=alice", binary=binary)
    wires.append(wire)
    connected = wire.connected
    details = connected["connectionDetails"]
    assert connected["connectionId"] and details["connectionKey"].startswith(connected["connectionId"] + "!")
    assert details["clientId"] == "alice"
    assert details["maxMessageSize"] == 65536
    assert 0 < details["maxIdleInterval"] <= 15000
    assert details["connectionStateTtl"] == 120000


@pytest.mark.parametrize("param", ["access_token", "accessToken"])
async def test_connect_with_token_either_parameter_name(
    ably_emulator: RunningEmulator, wires: Wires, param: str
) -> None:
    """§C.4: ably-js sends ``access_token``, ably-python ``accessToken``; both carry an Ably JWT's clientId."""
    token = jwt_token(client_id="bob")
    wire = await ably_wire(ably_emulator, f"{param}={token}")
    wires.append(wire)
    assert wire.connected["connectionDetails"]["clientId"] == "bob"


# Tokens made as the tests are collected: a day's TTL outlasts a slow run (with 600 s, a whole suite over ten
# minutes found them expired, 40142, before they met the refusal they test).
DAY = 86_400


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("key=1.app-key:wrong", 40101, "wrong key secret"),
        ("key=9.nobody:app-secret", 40101, "no app has the Ably key name"),
        ("key=1.app-key", 40101, "an Ably API key looks like APPID.KEYID:SECRET"),
        ("key=app-key:app-secret", 40101, "an Ably API key looks like APPID.KEYID:SECRET"),
        ("", 40101, "No key or token"),
        ("access_token=not-a-token", 40144, "Invalid"),
        (f"access_token={jwt_token(issued_at=1_000_000, ttl_s=60)}", 40142, "expired"),
        (f"access_token={jwt_token(secret='another-secret', ttl_s=DAY)}", 40101, "signature"),
        (f"access_token={jwt_token(client_id='bob', ttl_s=DAY)}&clientId=eve", 40102, "does not match"),
        (f"key={API_KEY}&clientId=*", 40012, "not a client id"),
        (f"access_token={jwt_token(client_id='', ttl_s=DAY)}", 40012, "x-ably-clientId can't be an empty string"),
    ],
    ids=[
        "wrong-secret",
        "unknown-key",
        "no-secret",
        "no-key-id",
        "no-credentials",
        "garbage-token",
        "expired",
        "bad-signature",
        "clash",
        "star",
        "empty-jwt-client-id",
    ],
)
async def test_connection_refused_in_ably_format(
    ably_emulator: RunningEmulator, wires: Wires, query: str, code: int, fragment: str
) -> None:
    """§D.1: a refused connection gets ERROR {code, statusCode, message, href} and is closed; others keep working."""
    ws, first = await open_wire(ably_emulator, query)
    wire = AblyWire(ws, False, {})
    assert first["action"] == ERROR, first
    error = first["error"]
    assert error["code"] == code and fragment in error["message"]
    assert error["statusCode"] == (401 if code // 100 == 401 else 400)
    assert error["href"].endswith(str(code))
    await wire.closed()
    assert ws.close_code == 1000
    await still_serving(ably_emulator, wires)


async def test_attach_flags_capability_and_sync(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.4/D.6: ATTACHED carries the mode flags the capability allows; a member present makes it HAS_PRESENCE
    followed by SYNC (empty cursor: complete); a denied channel fails alone (ERROR with channel, 40160)."""
    alice = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=alice")
    reader_token = jwt_token({"room": ["subscribe"]}, client_id="reader")
    reader = await ably_wire(ably_emulator, f"access_token={reader_token}")
    wires += [alice, reader]
    assert (await alice.attach("room"))["flags"] == ALL_MODES
    serial = await alice.presence("room", {"action": 2, "data": "hi"})
    entered = await alice.expect(PRESENCE)
    assert entered["presence"][0]["action"] == 2 and entered["presence"][0]["clientId"] == "alice"
    assert entered["presence"][0]["id"] == f"{alice.connected['connectionId']}:{serial}:0"
    assert (await alice.expect(ACK))["msgSerial"] == serial

    attached = await reader.attach("room")
    assert attached["flags"] == (1 << 18 | 1 << 19 | HAS_PRESENCE)  # SUBSCRIBE | PRESENCE_SUBSCRIBE only
    sync = await reader.expect(SYNC)
    assert sync["channelSerial"].endswith(":")
    [member] = sync["presence"]
    assert (member["action"], member["clientId"], member["data"]) == (1, "alice", "hi")

    await reader.send({"action": 10, "channel": "elsewhere"})
    error = await reader.expect(ERROR)
    assert error["channel"] == "elsewhere" and error["error"]["code"] == 40160
    serial = await reader.publish("room", {"name": "x", "data": "y"})
    nack = await reader.expect(NACK)
    assert nack["msgSerial"] == serial and nack["error"]["code"] == 40160
    await reader.ping("still-here")


async def test_publish_ack_echo_and_nacks(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.5: MESSAGE is fanned out (to the sender too unless ``echo=false``) and ACKed with serials; invalid
    messages are NACKed with Ably's codes and the connection stays."""
    quiet = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=quiet&echo=false")
    loud = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=loud", binary=True)
    wires += [quiet, loud]
    await quiet.attach("news")
    await loud.attach("news")
    serial = await quiet.publish("news", {"name": "greet", "data": '{"a":1}', "encoding": "json"})
    ack = await quiet.expect(ACK)
    assert ack["msgSerial"] == serial and ack["count"] == 1 and len(ack["res"][0]["serials"]) == 1
    received = await loud.expect(MESSAGE)
    assert received["connectionId"] == quiet.connected["connectionId"]
    # the message's serial is the ACK's for it: a publisher matches what it published to what it receives
    (serial_acked,) = ack["res"][0]["serials"]
    greeting = {
        "name": "greet",
        "data": '{"a":1}',
        "encoding": "json",
        "clientId": "quiet",
        "action": 0,
        "serial": serial_acked,
    }
    assert received["messages"] == [greeting]

    too_big = "x" * 70_000
    cases: list[tuple[dict[str, Any], int]] = [
        ({"name": "n", "data": "d", "clientId": "someone-else"}, 40012),
        ({"name": "n", "data": too_big}, 40009),
        ({"name": "pusher:subscribe", "data": "d"}, 40016),
        ({"name": "n", "data": 5}, 40013),
        ({"name": "n", "data": "!!", "encoding": "base64"}, 40013),
    ]
    for message, code in cases:
        serial = await quiet.publish("news", message)
        nack = await quiet.expect(NACK)
        assert (nack["msgSerial"], nack["error"]["code"]) == (serial, code), nack
    serial = await quiet.publish(
        "news", {"name": "bin", "data": base64.b64encode(b"\x00\xff").decode(), "encoding": "base64"}
    )
    assert (await quiet.expect(ACK))["msgSerial"] == serial
    binary = await loud.expect(MESSAGE)
    assert binary["messages"][0]["data"] == b"\x00\xff" and "encoding" not in binary["messages"][0]


async def test_presence_update_leave_and_leave_on_close(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.6: ENTER, UPDATE and LEAVE are broadcast with ``connectionId:msgSerial:index`` ids; a closed connection's
    members leave; a connection without a clientId cannot enter (91000)."""
    watcher = await ably_wire(ably_emulator)
    bob = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=bob")
    wires += [watcher, bob]
    await watcher.attach("lobby")
    await bob.attach("lobby")
    await bob.presence("lobby", {"action": 2, "data": "one"})
    await bob.presence("lobby", {"action": 4, "data": "two"})
    actions = [(await watcher.expect(PRESENCE))["presence"][0] for _ in range(2)]
    assert [(p["action"], p["data"]) for p in actions] == [(2, "one"), (4, "two")]
    serial = await watcher.presence("lobby", {"action": 2})
    nack = await watcher.expect(NACK)
    assert (nack["msgSerial"], nack["error"]["code"]) == (serial, 91000)
    await bob.close()
    left = (await watcher.expect(PRESENCE))["presence"][0]
    assert (left["action"], left["clientId"], left["data"]) == (3, "bob", "two")


async def test_detach_stops_delivery(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.4: DETACH is answered with DETACHED; later publishes are not delivered to the detached connection."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("room")
    await wire.send({"action": DETACH, "channel": "room"})
    assert (await wire.expect(DETACHED))["channel"] == "room"
    serial = await wire.publish("room", {"name": "after", "data": "x"})
    assert (await wire.expect(ACK))["msgSerial"] == serial  # acknowledged, and nothing else arrives first


async def test_heartbeats_and_ping(start_emulator: object, wires: Wires) -> None:
    """§D.3: the server sends HEARTBEAT more often than maxIdleInterval, and echoes a client ping's id."""
    running: RunningEmulator = await start_emulator(app=replace(APP, activity_timeout=1))  # type: ignore[operator]
    wire = await ably_wire(running)
    wires.append(wire)
    assert wire.connected["connectionDetails"]["maxIdleInterval"] == 1000
    assert (await wire.recv(2.5)) == {"action": HEARTBEAT}
    await wire.ping("ping-1")


async def test_malformed_input_fails_only_that_connection(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Bad frames get ERROR 80013 (protocol error) and that connection closes; the server keeps serving others."""
    lone_surrogate = '{"action": 15, "channel": "room", "msgSerial": 0, "messages": [{"name": "\\ud800"}]}'
    for payload in ("not json", '["an array"]', '{"action": "attach"}', b"\xc1", lone_surrogate):
        ws, first = await open_wire(ably_emulator, f"key={API_KEY}")
        assert first["action"] == CONNECTED
        await ws.send(payload)
        error = await AblyWire(ws, False, {}).expect(ERROR)
        assert error["error"]["code"] == 80013 and error["error"]["statusCode"] == 400
        await AblyWire(ws, False, {}).closed()
    await still_serving(ably_emulator, wires)


async def test_close_and_reauthorize(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.7: AUTH with a new token answers a fresh CONNECTED (same connection); CLOSE answers CLOSED."""
    wire = await ably_wire(ably_emulator, f"access_token={jwt_token(client_id='carol', ttl_s=60)}")
    wires.append(wire)
    await wire.send({"action": AUTH, "auth": {"accessToken": jwt_token(client_id="carol", ttl_s=600)}})
    again = await wire.expect(CONNECTED)
    assert again["connectionId"] == wire.connected["connectionId"]
    await wire.send({"action": CLOSE})
    assert (await wire.expect(CLOSED))["action"] == CLOSED
    await wire.closed()


async def test_shutdown_disconnects_for_reconnect(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A graceful shutdown sends DISCONNECTED (80003): Ably clients reconnect, as Pusher clients do after 4200."""
    wire = await ably_wire(ably_emulator)
    for connection in list(ably_emulator.node.connections):
        connection.shutdown()
    seen = await wire.closed()
    assert [m["action"] for m in seen if m["action"] != HEARTBEAT] == [DISCONNECTED]
    assert seen[-1]["error"]["code"] == 80003


async def test_resume_gets_a_new_connection(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """§D.1: state is not kept, so ``resume=`` gets CONNECTED with error 80008 and the client re-attaches."""
    wire = await ably_wire(ably_emulator, f"key={API_KEY}&resume=old!key")
    wires.append(wire)
    assert wire.connected["error"]["code"] == 80008


async def test_other_actions_are_nacked(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Unsupported actions with a msgSerial (OBJECT, ANNOTATION) are NACKed; the connection stays."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.send({"action": 21, "channel": "room", "msgSerial": 0})
    nack = await wire.expect(NACK)
    assert nack["error"]["code"] == 40000
    await asyncio.sleep(0)
    await still_serving(ably_emulator, wires)


async def test_msgpack_values_json_cannot_carry(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """msgpack may carry what JSON subscribers could not be sent (binary inside extras or object data, extension
    types): NACKed with 40000/40013, and the connection and its JSON peers keep working."""
    sender = await ably_wire(ably_emulator, binary=True)
    reader = await ably_wire(ably_emulator)
    wires += [sender, reader]
    await sender.attach("mixed")
    await reader.attach("mixed")
    cases = [
        ({"name": "n", "extras": {"headers": {"raw": b"\x00"}}}, 40000),
        ({"name": "n", "data": {"nested": b"\x00"}}, 40013),
        ({"name": "n", "data": msgpack.ExtType(5, b"x")}, 40013),
    ]
    for message, code in cases:
        serial = await sender.publish("mixed", message)
        nack = await sender.expect(NACK)
        assert (nack["msgSerial"], nack["error"]["code"]) == (serial, code)
    await sender.publish("mixed", {"name": "fine", "data": b"\x01"})
    received = await reader.expect(MESSAGE)
    fine = {
        "name": "fine",
        "data": "AQ==",
        "encoding": "base64",
        "action": 0,
        "serial": f"{received['channelSerial']}:0",
    }
    assert received["messages"][0] == fine
