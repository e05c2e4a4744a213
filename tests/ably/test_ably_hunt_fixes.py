"""Bugs a hunt found on the Ably side, each with its specific error and a delivery to everyone else afterwards:
deeply nested JSON-looking data (a RecursionError inside a delivery's loop), numbers JSON has no room for (NaN,
Infinity, 1e400) re-emitted as invalid JSON, a PRESENCE message applied in part though NACKed, extras sized as
Python's ASCII JSON instead of ably-js's ``JSON.stringify(extras).length``, an unsigned TokenRequest accepted from a
token, an app's ``max_message_bytes`` advertised to Ably clients but not enforced, and an Ably member's clientId
past Pusher's user id limit. § numbers are the reference's (shared/reference/ably-and-pricing.md)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    ERROR,
    KEY_NAME,
    KEY_SECRET,
    MESSAGE,
    NACK,
    PRESENCE,
    SCRIPTS,
    SYNC,
    AblyWire,
    PusherWire,
    ably_wire,
    pusher_wire,
)
from websockets.exceptions import ConnectionClosed

from relay.emulator.ably_hub import user_info_json
from relay.protocol import frames
from relay.protocol.ably import build_token_request
from relay.protocol.channels import Limits
from relay.protocol.signing import authorize_channel
from tests.conformance.wsclient import api_get, publish
from tests.conftest import RunningEmulator, StartEmulator
from tests.node_scenarios import app_env, run_scenario

Wires = list[AblyWire | PusherWire]
SUBSCRIBE_MODES = (1 << 18) | (1 << 19)  # SUBSCRIBE | PRESENCE_SUBSCRIBE: a watcher that enters nothing
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
DEEP = "[" * 3000 + "]" * 3000  # JSON-looking text nested far past Python's parser (about 1,000 levels)


def _strict_json(text: str | bytes) -> Any:
    """Parse as a browser's ``JSON.parse`` does: no NaN, Infinity or -Infinity (RFC 8259 has none)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


async def _pusher(running: RunningEmulator, wires: Wires, channel: str, channel_data: str | None = None) -> PusherWire:
    """A Pusher connection subscribed to ``channel`` (signed for private- and presence- channels)."""
    wire = await pusher_wire(running)
    wires.append(wire)
    data: dict[str, Any] = {"channel": channel}
    if channel.startswith(("private-", "presence-")):
        data.update(authorize_channel("app-key", "app-secret", wire.socket_id, channel, channel_data=channel_data))
    await wire.send("pusher:subscribe", data)
    await wire.expect("pusher_internal:subscription_succeeded")
    return wire


async def _ably(
    running: RunningEmulator, wires: Wires, channel: str, query: str = "", *, binary: bool = False, **attach: Any
) -> AblyWire:
    """An Ably connection (the app's key, so any clientId) attached to ``channel``."""
    wire = await ably_wire(running, f"key={API_KEY}{query}", binary=binary)
    wires.append(wire)
    await wire.attach(channel, **attach)
    return wire


async def _ack_or_nack(wire: AblyWire) -> dict[str, Any]:
    """The next ACK or NACK (the channel's own echo may come first)."""
    while (message := await wire.recv())["action"] not in (ACK, NACK):
        pass
    return message


async def _ack_nack_or_error(wire: AblyWire) -> dict[str, Any]:
    while (message := await wire.recv())["action"] not in (ACK, NACK, ERROR):
        pass
    return message


async def _next(wire: AblyWire, action: int) -> dict[str, Any]:
    """The next message with ``action``, skipping others (heartbeats, echoes, ACKs)."""
    while (message := await wire.recv())["action"] != action:
        pass
    return message


async def _silent(wire: AblyWire | PusherWire, wait: float = 0.3) -> list[Any]:
    """What arrives within ``wait`` besides heartbeats and pings (expected: nothing)."""
    seen: list[Any] = []
    try:
        async with asyncio.timeout(wait):
            while True:
                raw = await wire.ws.recv()
                if isinstance(wire, AblyWire):
                    message = msgpack.unpackb(raw, raw=False) if wire.binary else json.loads(raw)
                    if message["action"] != 0:
                        seen.append(message)
                else:
                    frame = json.loads(raw)
                    if frame["event"] not in ("pusher:ping", "pusher:pong"):
                        seen.append(frame)
    except TimeoutError:
        pass
    return seen


async def _everyone_gets_a_later_publish(
    running: RunningEmulator, channel: str, pushers: list[PusherWire], ablys: list[AblyWire]
) -> None:
    """The server keeps serving: a Pusher HTTP publish afterwards reaches every Pusher and Ably subscriber, and an
    Ably JSON subscriber's frame is strict JSON."""
    await publish(running, channel, "later", '{"ok":true}')
    for pusher_side in pushers:
        assert (await pusher_side.expect("later"))["data"] == '{"ok":true}'
    for ably_side in ablys:
        while True:  # past what the test left unread (presence, SYNC, acknowledgements)
            raw = await asyncio.wait_for(ably_side.ws.recv(), 3)
            message = msgpack.unpackb(raw, raw=False) if ably_side.binary else _strict_json(raw)
            if message["action"] == MESSAGE:
                break
        serial = f"{message['channelSerial']}:0"  # its own, as an Ably publish's
        assert message["messages"] == [
            {"name": "later", "action": 0, "serial": serial, "data": '{"ok":true}', "encoding": "json"}
        ]


# -- 1. deeply nested JSON-looking data ----------------------------------------------------------------------------


async def test_pusher_publish_of_deeply_nested_json_text_reaches_every_subscriber(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """A Pusher HTTP publish whose data looks like JSON nested 3,000 deep, on a channel with Ably subscribers between
    Pusher ones: every subscriber gets it (Ably ones as plain text, without ``encoding: json``: past the parser's
    depth it is not forwarded as JSON), the API answers 200 {} (not 400 "malformed HTTP request")."""
    first = await _pusher(ably_emulator, wires, "deep")
    ably_json = await _ably(ably_emulator, wires, "deep")
    ably_msgpack = await _ably(ably_emulator, wires, "deep", binary=True)
    last = await _pusher(ably_emulator, wires, "deep")
    await publish(ably_emulator, "deep", "nested", DEEP)  # asserts 200 {}
    for pusher_side in (first, last):
        assert (await pusher_side.expect("nested"))["data"] == DEEP
    for ably_side in (ably_json, ably_msgpack):
        message = await ably_side.expect(MESSAGE)
        serial = f"{message['channelSerial']}:0"
        assert message["messages"] == [{"name": "nested", "action": 0, "serial": serial, "data": DEEP}]
    await _everyone_gets_a_later_publish(ably_emulator, "deep", [first, last], [ably_json, ably_msgpack])


async def test_client_event_with_deeply_nested_json_text_keeps_the_sender_connected(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """The same data in a Pusher client event: it reaches the Ably attachment and the Pusher subscriber after it,
    and the sender's socket stays (it was dropped with "Fatal error on transport")."""
    sender = await _pusher(ably_emulator, wires, "private-deep")
    ably_side = await _ably(ably_emulator, wires, "private-deep")
    receiver = await _pusher(ably_emulator, wires, "private-deep")
    await sender.send("client-deep", DEEP, channel="private-deep")
    assert (await receiver.expect("client-deep"))["data"] == DEEP
    message = await ably_side.expect(MESSAGE)
    serial = f"{message['channelSerial']}:0"
    assert message["messages"] == [{"name": "client-deep", "action": 0, "serial": serial, "data": DEEP}]
    await sender.send("client-after", "fine", channel="private-deep")
    assert (await receiver.expect("client-after"))["data"] == "fine"
    assert (await ably_side.expect(MESSAGE))["messages"][0]["name"] == "client-after"
    await _everyone_gets_a_later_publish(ably_emulator, "private-deep", [sender, receiver], [ably_side])


async def test_ably_presence_with_deeply_nested_json_data_on_a_presence_channel(
    start_emulator: StartEmulator, wires: Wires
) -> None:
    """An Ably member of a ``presence-`` channel whose ``encoding: json`` data is nested past the parser: its Pusher
    ``user_info`` is the text as a JSON string (it was 50000 and a closed connection). Over the app's
    ``max_user_info_bytes`` that is 40009, a NACK: the connection stays."""
    limits = replace(Limits(), max_user_info_bytes=20_000)
    running = await start_emulator(app=replace(APP, limits=limits))
    watcher = await _pusher(running, wires, "presence-deep", channel_data='{"user_id":"pat"}')
    member = await _ably(running, wires, "presence-deep", "&clientId=ann")
    serial = await member.presence("presence-deep", {"action": 2, "data": DEEP, "encoding": "json"})
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"]) == (ACK, serial), reply
    added = await watcher.expect("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "ann", "user_info": DEEP}

    small = await start_emulator(app=APP)  # max_user_info_bytes 1,024
    other = await _ably(small, wires, "presence-deep", "&clientId=bo")
    serial = await other.presence("presence-deep", {"action": 2, "data": DEEP, "encoding": "json"})
    reply = await _ack_or_nack(other)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    assert "limited to 1024 bytes" in reply["error"]["message"]
    await _everyone_gets_a_later_publish(running, "presence-deep", [watcher], [member])
    await _everyone_gets_a_later_publish(small, "presence-deep", [], [other])


async def test_extras_nested_near_the_parser_limit_are_refused_or_delivered(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Extras nested just under the parser's limit were accepted where input is checked, then failed to encode in
    the delivery (a deeper stack): 50000, and no subscriber got them. Now each depth is delivered, NACKed 40000
    ("nested too deeply", refused where it is checked, with room to spare) or, past the parser, a protocol error
    (80013): never 50000."""
    subscriber = await _ably(ably_emulator, wires, "nest")
    publisher = await _ably(ably_emulator, wires, "nest", "&echo=false")
    outcomes: set[object] = set()
    # The limits are counted from the stack the server runs on, which is deeper under pytest-xdist: start well below.
    for count, depth in enumerate(range(700, 1000, 2)):
        if count % 40 == 39:  # a new connection before the 50 messages a second Ably lets one publish
            publisher = await _ably(ably_emulator, wires, "nest", "&echo=false")
        extras = '{"headers":' + '{"a":' * depth + "1" + "}" * depth + "}"
        message = '{"name":"deep","data":"x","extras":' + extras + "}"
        await publisher.ws.send('{"action":15,"channel":"nest","msgSerial":0,"messages":[' + message + "]}")
        reply = await _ack_nack_or_error(publisher)
        if reply["action"] == ACK:
            assert (await subscriber.expect(MESSAGE))["messages"][0]["name"] == "deep"
            outcomes.add(ACK)
            continue
        assert (reply["action"], reply["error"]["code"]) in ((NACK, 40000), (ERROR, 80013)), (depth, reply)
        outcomes.add((reply["action"], reply["error"]["code"]))
        if reply["action"] == ERROR:
            publisher = await _ably(ably_emulator, wires, "nest", "&echo=false")
        else:
            assert "nested too deeply" in reply["error"]["message"]
    assert outcomes == {ACK, (NACK, 40000), (ERROR, 80013)}
    await _everyone_gets_a_later_publish(ably_emulator, "nest", [], [subscriber, publisher])


def test_json_checks_near_the_depth_limit_never_raise() -> None:
    """``looks_like_json`` runs inside a delivery's loop and ``user_info_json`` inside a presence change: at any
    depth around the parser's limit (where a document read may be a level too deep to write back) they answer,
    never raise: JSON they cannot hold is text."""
    for depth in range(800, 1100):
        document = "[" * depth + "]" * depth
        assert isinstance(frames.looks_like_json(document), bool)
        assert user_info_json(document, "json") in (document, json.dumps(document))  # as JSON, or as text


async def test_a_failure_inside_an_http_request_is_a_logged_500_not_malformed_http(
    ably_emulator: RunningEmulator, wires: Wires, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """httptools wraps what a callback raises in HttpParserCallbackError, a subclass of HttpParserError: such a
    request was answered 400 "malformed HTTP request" with nothing logged. It is the server's failure: 500, logged
    with the traceback; the server goes on serving."""
    pusher_side = await _pusher(ably_emulator, wires, "boom")
    ably_side = await _ably(ably_emulator, wires, "boom")

    def broken(*args: object) -> None:
        raise RuntimeError("a bug while answering")

    assert ably_emulator.node.api is not None
    monkeypatch.setattr(ably_emulator.node.api, "handle", broken)
    with caplog.at_level(logging.ERROR, logger="relay.emulator"):
        async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
            response = await http.post("/apps/1/events", json={"name": "e", "channel": "boom", "data": "x"})
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert response.headers["connection"] == "close"
    failures = [record for record in caplog.records if record.getMessage() == "HTTP request failed"]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)
    assert getattr(failures[0], "path", None) == "/apps/1/events"
    monkeypatch.undo()
    await _everyone_gets_a_later_publish(ably_emulator, "boom", [pusher_side], [ably_side])


# -- 2. numbers JSON has no room for --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_realtime_json_with_a_non_finite_number_is_a_protocol_error(
    ably_emulator: RunningEmulator, wires: Wires, number: str
) -> None:
    """A JSON ProtocolMessage holding NaN, Infinity or 1e400 (Python's json takes the first ones and reads the last
    as infinity; JSON has none) is not JSON: ERROR 80013 for that connection, which closes. Before, it was published
    and every JSON subscriber (ably-js in a browser) got a frame JSON.parse throws on, losing the whole message."""
    subscriber = await _ably(ably_emulator, wires, "nan")
    pusher_side = await _pusher(ably_emulator, wires, "nan")
    publisher = await ably_wire(ably_emulator)
    wires.append(publisher)
    extras = '{"headers":{"a":' + number + "}}"
    await publisher.ws.send(
        '{"action":15,"channel":"nan","msgSerial":0,"messages":[{"name":"n","data":"x","extras":' + extras + "}]}"
    )
    seen = await publisher.closed()
    assert [(m["action"], m["error"]["code"]) for m in seen] == [(ERROR, 80013)], seen
    assert f"{number} is not a finite number" in seen[0]["error"]["message"]
    assert await _silent(subscriber) == [] and await _silent(pusher_side) == []
    await _everyone_gets_a_later_publish(ably_emulator, "nan", [pusher_side], [subscriber])


async def test_msgpack_non_finite_floats_are_nacked(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """msgpack carries NaN and infinities as floats: inside extras that is 40000, inside object data 40013 (data JSON
    cannot carry), each a NACK; the msgpack connection stays and JSON subscribers only ever get strict JSON."""
    subscriber = await _ably(ably_emulator, wires, "mp-nan")
    publisher = await _ably(ably_emulator, wires, "mp-nan", binary=True)
    serial = await publisher.publish("mp-nan", {"name": "e", "data": "x", "extras": {"headers": {"a": math.nan}}})
    reply = await _ack_or_nack(publisher)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40000), reply
    assert "NaN or infinities" in reply["error"]["message"]
    serial = await publisher.publish("mp-nan", {"name": "d", "data": {"a": math.inf}})
    reply = await _ack_or_nack(publisher)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40013), reply
    serial = await publisher.presence("mp-nan", {"action": 2, "clientId": "c", "data": [-math.inf]})
    reply = await _ack_or_nack(publisher)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40013), reply
    assert await _silent(subscriber) == []
    await _everyone_gets_a_later_publish(ably_emulator, "mp-nan", [], [subscriber, publisher])


async def test_rest_non_finite_numbers_are_refused(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """REST: a JSON body with NaN is not JSON (40000); a msgpack body whose object data holds infinity is 40013."""
    subscriber = await _ably(ably_emulator, wires, "rest-nan")
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers=BASIC) as http:
        response = await http.post(
            "/channels/rest-nan/messages",
            content=b'{"name":"n","data":{"a":NaN}}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == 40000, response.text
        response = await http.post(
            "/channels/rest-nan/messages",
            content=msgpack.packb({"name": "m", "data": {"a": math.inf}}),
            headers={"Content-Type": "application/x-msgpack", "Accept": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"]["code"] == 40013, response.text
    assert await _silent(subscriber) == []
    await _everyone_gets_a_later_publish(ably_emulator, "rest-nan", [], [subscriber])


async def test_pusher_data_with_non_finite_numbers_is_not_labelled_json(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Pusher data is an opaque string: "[NaN]" or "-Infinity" is published as it is, but reaches Ably clients
    without ``encoding: json`` (a browser's JSON.parse refuses it, so ably-js could not decode it)."""
    subscriber = await _ably(ably_emulator, wires, "pnan")
    for data in ("[NaN]", "-Infinity", "[1e400]"):
        await publish(ably_emulator, "pnan", "ev", data)
        message = await subscriber.expect(MESSAGE)
        serial = f"{message['channelSerial']}:0"
        assert message["messages"] == [{"name": "ev", "action": 0, "serial": serial, "data": data}]
    await _everyone_gets_a_later_publish(ably_emulator, "pnan", [], [subscriber])


async def test_client_event_with_nan_data_is_refused(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """A Pusher client event whose data object holds NaN is not JSON: the sender gets the usual ``pusher:error``
    for a malformed frame and nobody gets the event (it reached others as ``{"v":NaN}``)."""
    sender = await _pusher(ably_emulator, wires, "private-nan")
    receiver = await _pusher(ably_emulator, wires, "private-nan")
    ably_side = await _ably(ably_emulator, wires, "private-nan")
    await sender.ws.send('{"event":"client-x","channel":"private-nan","data":{"v":NaN}}')
    error = await sender.expect("pusher:error")
    assert error["data"] == {"code": None, "message": "frame is not valid JSON: NaN is not a finite number"}
    assert await _silent(receiver) == [] and await _silent(ably_side) == []
    await sender.send("client-x", {"v": 1.5}, channel="private-nan")
    assert (await receiver.expect("client-x"))["data"] == '{"v":1.5}'
    assert (await ably_side.expect(MESSAGE))["messages"][0]["data"] == '{"v":1.5}'
    await _everyone_gets_a_later_publish(ably_emulator, "private-nan", [sender, receiver], [ably_side])


# -- 3. a PRESENCE message is applied whole or not at all ----------------------------------------------------------


async def _presence_set(running: RunningEmulator, channel: str) -> list[str]:
    async with httpx.AsyncClient(base_url=running.http_url, headers=BASIC) as http:
        response = await http.get(f"/channels/{channel}/presence")
    return sorted(member["clientId"] for member in response.json())


async def test_presence_message_with_a_too_big_item_changes_nothing(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Two enters in one PRESENCE, the second over the Pusher ``user_info`` limit (40009): the NACK leaves neither
    present; Pusher members get no member_added and Ably watchers no PRESENCE. (The first stayed, heard of by Pusher
    only.) The same enters within the limit then reach both."""
    pusher_side = await _pusher(ably_emulator, wires, "presence-p4", channel_data='{"user_id":"pat"}')
    watcher = await _ably(ably_emulator, wires, "presence-p4", "&clientId=watcher")
    assert [item["clientId"] for item in (await _next(watcher, SYNC))["presence"]] == ["pat"]
    member = await _ably(ably_emulator, wires, "presence-p4")
    carol = {"action": 2, "clientId": "carol", "data": "small"}
    serial = await member.presence("presence-p4", carol, {"action": 2, "clientId": "dave", "data": "x" * 5000})
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    assert await _presence_set(ably_emulator, "presence-p4") == ["pat"]
    assert await _silent(pusher_side) == [] and await _silent(watcher) == []

    serial = await member.presence("presence-p4", carol, {"action": 2, "clientId": "dave", "data": "x" * 500})
    assert (await _ack_or_nack(member))["action"] == ACK
    added = [json.loads((await pusher_side.expect("pusher_internal:member_added"))["data"]) for _ in range(2)]
    assert [entry["user_id"] for entry in added] == ["carol", "dave"]
    entered = await _next(watcher, PRESENCE)
    assert [(item["action"], item["clientId"]) for item in entered["presence"]] == [(2, "carol"), (2, "dave")]
    assert await _presence_set(ably_emulator, "presence-p4") == ["carol", "dave", "pat"]
    await _everyone_gets_a_later_publish(ably_emulator, "presence-p4", [pusher_side], [watcher, member])


async def test_presence_message_over_the_member_limit_changes_nothing(
    start_emulator: StartEmulator, wires: Wires
) -> None:
    """``max_presence_members = 2``: three enters in one PRESENCE are 91003 and none is present, to Ably (REST,
    watchers) or Pusher (the HTTP API's users); two are ACKed; a LEAVE before an ENTER in one message frees its
    place, as applying them in order does."""
    running = await start_emulator(app=replace(APP, limits=replace(Limits(), max_presence_members=2)))
    watcher = await _ably(running, wires, "presence-lim", "&clientId=watcher", flags=SUBSCRIBE_MODES)
    member = await _ably(running, wires, "presence-lim")
    enters = [{"action": 2, "clientId": client_id} for client_id in ("u1", "u2", "u3")]
    serial = await member.presence("presence-lim", *enters)
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 91003), reply
    assert "maximum of 2 members" in reply["error"]["message"]
    assert await _presence_set(running, "presence-lim") == []
    assert (await api_get(running, "/channels/presence-lim/users"))["users"] == []
    assert await _silent(watcher) == []

    await member.presence("presence-lim", *enters[:2])
    assert (await _ack_or_nack(member))["action"] == ACK
    await member.presence("presence-lim", {"action": 3, "clientId": "u1"}, enters[2])
    assert (await _ack_or_nack(member))["action"] == ACK
    assert await _presence_set(running, "presence-lim") == ["u2", "u3"]
    users = (await api_get(running, "/channels/presence-lim/users"))["users"]
    assert sorted(user["id"] for user in users) == ["u2", "u3"]
    first, second = await _next(watcher, PRESENCE), await _next(watcher, PRESENCE)
    assert [(i["action"], i["clientId"]) for i in first["presence"] + second["presence"]] == [
        (2, "u1"),
        (2, "u2"),
        (3, "u1"),
        (2, "u3"),
    ]
    await _everyone_gets_a_later_publish(running, "presence-lim", [], [watcher, member])


async def test_presence_message_over_the_ably_member_limit_changes_nothing(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """On a channel outside Pusher's presence, Ably's 200 members (§A.13): 201 enters in one message are 91003 and
    none is present."""
    member = await _ably(ably_emulator, wires, "crowd")
    serial = await member.presence("crowd", *({"action": 2, "clientId": f"m{n}"} for n in range(201)))
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 91003), reply
    assert await _presence_set(ably_emulator, "crowd") == []
    await member.presence("crowd", *({"action": 2, "clientId": f"m{n}"} for n in range(200)))
    assert (await _ack_or_nack(member))["action"] == ACK
    await _everyone_gets_a_later_publish(ably_emulator, "crowd", [], [member])


# -- 4. extras are sized as ably-js sizes them ---------------------------------------------------------------------


async def _publish_extras(wire: AblyWire, note: str) -> int:
    """A publish whose extras hold ``note``, sent as UTF-8 JSON (``\\u00e9`` escapes would triple the frame)."""
    serial, wire.serial = wire.serial, wire.serial + 1
    message = {"name": "n", "data": "x", "extras": {"headers": {"note": note}}}
    protocol_message = {"action": MESSAGE, "channel": "sizes", "msgSerial": serial, "messages": [message]}
    await wire.ws.send(json.dumps(protocol_message, ensure_ascii=False))
    return serial


async def test_extras_count_json_characters_as_ably_js_does(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """ably-js sizes a message as name + clientId + data + ``JSON.stringify(extras).length`` (UTF-16 code units):
    "é" is one, not the six of its ``\\u00e9`` escape, a character outside the BMP two. At exactly 65,536 the
    publish is ACKed, one more is 40009."""
    subscriber = await _ably(ably_emulator, wires, "sizes")
    publisher = await _ably(ably_emulator, wires, "sizes", "&echo=false")
    overhead = len('{"headers":{"note":""}}') + len("n") + len("x")
    await _publish_extras(publisher, "é" * (65_536 - overhead))
    assert (await _ack_or_nack(publisher))["action"] == ACK
    assert (await subscriber.expect(MESSAGE))["messages"][0]["extras"]["headers"]["note"] == "é" * (65_536 - overhead)
    astral = "😀" * ((65_536 - overhead) // 2)
    await _publish_extras(publisher, astral)
    assert (await _ack_or_nack(publisher))["action"] == ACK
    await subscriber.expect(MESSAGE)
    serial = await _publish_extras(publisher, "é" * (65_536 - overhead + 1))
    reply = await _ack_or_nack(publisher)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    assert "65537 bytes" in reply["error"]["message"]
    await _everyone_gets_a_later_publish(ably_emulator, "sizes", [], [subscriber])


async def test_an_oversized_presence_message_is_refused_in_ably_s_words_as_a_publish_is(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """A presence message over ``maxMessageSize`` is Ably's 40009 in Ably's own words, as an oversized publish is
    ("Maximum message length exceeded (size was N bytes, limit is N bytes)", which users search for): the publish
    got them, the presence NACK kept the emulator's ("presence messages are N bytes; the maximum is N")."""
    member = await _ably(ably_emulator, wires, "sizes-presence")
    serial = await member.presence("sizes-presence", {"action": 2, "clientId": "carol", "data": "x" * 65_540})
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40009), reply
    assert "Maximum message length exceeded (size was 65545 bytes, limit is 65536 bytes)" in reply["error"]["message"]


_ABLY_JS_SCENARIO = """
import {{ Scenario, assert, step }} from '{node}/lib.mjs';
import {{ Ably, ablyOptions, realtime, nextMessage }} from '{ably}/ablylib.mjs';

new Scenario('ably-hunt-fixes').run(async (s) => {{
  const publisher = await realtime(s);
  const browser = await realtime(s, {{ useBinaryProtocol: false }});  // JSON, as in a browser
  const channel = browser.channels.get('js-fixes');
  await channel.attach();

  // 4. extras of 12,000 "é": 12,023 to ably-js, which publishes it; the emulator counted 72,025 and NACKed 40009.
  const extras = {{ headers: {{ note: 'é'.repeat(12000) }} }};
  const arrives = nextMessage(channel, 'accented');
  await publisher.channels.get('js-fixes').publish({{ name: 'accented', data: 'x', extras }});
  assert.equal((await arrives).extras.headers.note.length, 12000);
  const rest = new Ably.Rest(ablyOptions());
  await rest.channels.get('js-fixes').publish({{ name: 'rest-accented', data: 'x', extras }});
  s.check('extras-size');

  // 2. Pusher data that is not strict JSON reaches a JSON-protocol ably-js as text, then JSON data still decodes.
  const got = [];
  channel.subscribe('ev', (message) => got.push(message.data));
  await step('pusher-publishes');
  const deadline = Date.now() + 5000;
  while (got.length < 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(got, ['[NaN]', '-Infinity', '[1e400]', {{ a: 1 }}]);
  assert.equal(browser.connection.state, 'connected');
  s.check('non-finite-as-text');
}});
"""


@pytest.mark.parametrize("ably_format", ["msgpack", "json"])
async def test_ably_js_extras_and_non_json_pusher_data(
    node_modules: Path, ably_emulator: RunningEmulator, tmp_path: Path, ably_format: str
) -> None:
    """ably-js 2.x: a publish whose extras hold 12,000 "é" (realtime and REST) is delivered; Pusher data "[NaN]",
    "-Infinity" and "[1e400]" reach a JSON-protocol ably-js as text, and JSON data after them still decodes."""
    script = tmp_path / "hunt_fixes.mjs"
    script.write_text(_ABLY_JS_SCENARIO.format(node=SCRIPTS.parent.parent / "node", ably=SCRIPTS))

    async def on_step(message: dict[str, Any]) -> str:
        assert message["step"] == "pusher-publishes"
        for data in ("[NaN]", "-Infinity", "[1e400]", '{"a":1}'):
            await publish(ably_emulator, "js-fixes", "ev", data)
        return "ok"

    env = {
        **app_env("127.0.0.1", ably_emulator.port, ably_emulator.app),
        "ABLY_KEY": API_KEY,
        "ABLY_FORMAT": ably_format,
    }
    run = await run_scenario(script, env, on_step=on_step)
    assert run.summary["checks"] == ["extras-size", "non-finite-as-text"]


# -- 5. an unsigned TokenRequest needs the key ---------------------------------------------------------------------


async def test_unsigned_token_request_with_a_token_is_refused(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Ably's TokenRequest spec: Basic auth must be used to request a token with an unsigned TokenRequest. A 10 s
    token could mint itself 24 h successors (and drop its clientId): 40106, status 401. With the key it works, and
    a signed TokenRequest needs no credentials."""
    subscriber = await _ably(ably_emulator, wires, "tokens")
    path = f"/keys/{KEY_NAME}/requestToken"
    now = int(time.time() * 1000)
    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
        signed = build_token_request(
            KEY_NAME, KEY_SECRET, timestamp=now, nonce=f"n-{time.time_ns()}", client_id="al", ttl=10_000
        )
        short = await http.post(path, json=signed)
        assert short.status_code == 200, short.text
        bearer = {"Authorization": "Bearer " + base64.b64encode(short.json()["token"].encode()).decode()}
        for request in ({"keyName": KEY_NAME, "ttl": 86_400_000}, {"keyName": KEY_NAME, "clientId": "bob"}, {}):
            refused = await http.post(path, json=request, headers=bearer)
            error = refused.json()["error"]
            assert (refused.status_code, error["code"], error["statusCode"]) == (401, 40106, 401), refused.text
            assert "needs Basic auth with the API key" in error["message"]
            assert refused.headers["x-ably-errorcode"] == "40106"
        unsigned = await http.post(path, json={"keyName": KEY_NAME, "ttl": 86_400_000}, headers=BASIC)
        assert unsigned.status_code == 200, unsigned.text
        assert unsigned.json()["expires"] - unsigned.json()["issued"] == 86_400_000
        published = await http.post("/channels/tokens/messages", json={"name": "later", "data": "k"}, headers=BASIC)
        assert published.status_code == 201
    assert (await subscriber.expect(MESSAGE))["messages"][0]["name"] == "later"
    await _everyone_gets_a_later_publish(ably_emulator, "tokens", [], [subscriber])


# -- 6. an app's max_message_bytes for Ably connections -------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_app_message_limit_is_the_ably_frame_limit(
    start_emulator: StartEmulator, wires: Wires, binary: bool
) -> None:
    """``max_message_bytes = 4096``: CONNECTED says ``maxFrameSize`` and ``maxMessageSize`` 4096 and the socket
    takes no more (it took 30 KB). A frame over it fails the connection with Ably's ERROR 40009 (a NACK cannot name
    a msgSerial in a frame never read, and ERROR stops the SDK resending it on reconnection), not Pusher's
    ``pusher:error``; everyone else keeps being served."""
    running = await start_emulator(app=replace(APP, max_message_bytes=4096))
    subscriber = await _ably(running, wires, "fs")
    pusher_side = await _pusher(running, wires, "fs")
    publisher = await _ably(running, wires, "fs", "&echo=false", binary=binary)
    details = publisher.connected["connectionDetails"]
    assert (details["maxFrameSize"], details["maxMessageSize"]) == (4096, 4096)
    await publisher.publish("fs", {"name": "fits", "data": "x" * 3000})
    assert (await _ack_or_nack(publisher))["action"] == ACK
    assert (await subscriber.expect(MESSAGE))["messages"][0]["name"] == "fits"
    assert (await pusher_side.expect("fits"))["data"] == "x" * 3000
    await publisher.publish("fs", {"name": "big", "data": "x" * 30_000})
    seen = await publisher.closed()
    assert [(m["action"], m["error"]["code"], m["error"]["statusCode"]) for m in seen] == [(ERROR, 40009, 413)]
    assert "over 4096 bytes" in seen[0]["error"]["message"]
    with pytest.raises(ConnectionClosed) as closed:
        await publisher.ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert await _silent(subscriber) == [] and await _silent(pusher_side) == []
    await _everyone_gets_a_later_publish(running, "fs", [pusher_side], [subscriber])


async def test_server_frame_limit_is_an_ably_error_too(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """Without an app limit the socket takes the server's ``max_frame_bytes`` (CONNECTED's ``maxFrameSize``); a
    larger message is the same ERROR 40009 (it was a bare 1009 close: an SDK takes a dropped socket for DISCONNECTED,
    reconnects and resends the messages awaiting an ACK, RTN19a)."""
    limit = ably_emulator.node.config.max_frame_bytes
    subscriber = await _ably(ably_emulator, wires, "server-fs")
    publisher = await _ably(ably_emulator, wires, "server-fs")
    assert publisher.connected["connectionDetails"]["maxFrameSize"] == limit
    await publisher.publish("server-fs", {"name": "big", "data": "x" * (limit + 1)})
    seen = await publisher.closed()
    assert [(m["action"], m["error"]["code"]) for m in seen] == [(ERROR, 40009)], seen
    assert f"over {limit} bytes" in seen[0]["error"]["message"]
    assert await _silent(subscriber) == []
    await _everyone_gets_a_later_publish(ably_emulator, "server-fs", [], [subscriber])


# -- 7. an Ably member of a presence- channel is a Pusher user ---------------------------------------------------


async def test_presence_client_id_longer_than_a_pusher_user_id_is_refused(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Pusher user ids are at most 128 characters: a 5,000-character clientId entering a ``presence-`` channel is
    40012 (it reached Pusher clients as a user_id); 128 characters enter; elsewhere Ably has no such limit."""
    pusher_side = await _pusher(ably_emulator, wires, "presence-long", channel_data='{"user_id":"pat"}')
    member = await _ably(ably_emulator, wires, "presence-long")
    serial = await member.presence("presence-long", {"action": 2, "clientId": "L" * 5000})
    reply = await _ack_or_nack(member)
    assert (reply["action"], reply["msgSerial"], reply["error"]["code"]) == (NACK, serial, 40012), reply
    assert "5000 characters; Pusher user ids are 1 to 128" in reply["error"]["message"]
    assert await _silent(pusher_side) == []
    await member.presence("presence-long", {"action": 2, "clientId": "L" * 128})
    assert (await _ack_or_nack(member))["action"] == ACK
    added = json.loads((await pusher_side.expect("pusher_internal:member_added"))["data"])
    assert added["user_id"] == "L" * 128
    await member.attach("long-elsewhere")
    await member.presence("long-elsewhere", {"action": 2, "clientId": "L" * 5000})
    assert (await _ack_or_nack(member))["action"] == ACK
    await _everyone_gets_a_later_publish(ably_emulator, "presence-long", [pusher_side], [member])
