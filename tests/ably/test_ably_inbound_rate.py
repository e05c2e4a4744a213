"""Ably's per-connection inbound rate on the emulator's realtime connections: 50 messages or presence items a second
(§A.13, CONNECTED's ``maxInboundRate``, §D.3), a burst of one second's worth, and past it NACK 42911 / 429 "max
per-connection publish rate limit exceeded (nonfatal)" (ably-common errors.json) for the whole ProtocolMessage, the
connection staying up; and Ably's limit on every ProtocolMessage a connection sends (about 2000 a second, error 42924),
past which the connection is closed. Raw Ably-protocol clients, which choose how messages are grouped into
ProtocolMessages and how fast they are sent."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import httpx
import pytest
from ablysupport import (
    ACK,
    API_KEY,
    ATTACH,
    DETACH,
    ERROR,
    HEARTBEAT,
    MESSAGE,
    NACK,
    PRESENCE,
    AblyWire,
    PusherWire,
    ably_wire,
)
from websockets.exceptions import ConnectionClosed

from relay.emulator.ably_realtime import MAX_PROTOCOL_MESSAGE_RATE, AblySession
from relay.protocol.ably import MAX_INBOUND_RATE
from tests.conftest import RunningEmulator

Wires = list[AblyWire | PusherWire]
PRESENCE_MODE, PUBLISH_MODE, PRESENCE_SUBSCRIBE_MODE = 1 << 16, 1 << 17, 1 << 19
ENTER = 2
QUIET = 0.3  # nothing more within this long: everything sent before has been delivered (loopback, one node)


async def replies(wire: AblyWire, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages other than HEARTBEATs."""
    seen: list[dict[str, Any]] = []
    while len(seen) < count:
        if (message := await wire.recv())["action"] != HEARTBEAT:
            seen.append(message)
    return seen


async def received(wire: AblyWire, action: int, field: str) -> list[dict[str, Any]]:
    """The items (``messages`` or ``presence``) of every ``action`` message that came until ``QUIET`` passed with
    nothing; any other message fails the test."""
    items: list[dict[str, Any]] = []
    while True:
        try:
            message = await wire.recv(QUIET)
        except TimeoutError:
            return items
        if message["action"] != HEARTBEAT:
            assert message["action"] == action, message
            items.extend(message[field])


def named(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "data": "d"} for name in names]


class HeldClock:
    """A connection's clock, held still: its bucket refills only when the test moves it on, not when a slow machine
    takes long between two frames."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def hold_clock(emulator: RunningEmulator, wire: AblyWire) -> HeldClock:
    connection_id = wire.connected["connectionId"]
    [session] = [
        connection.session
        for connection in emulator.node.connections
        if isinstance(connection.session, AblySession) and connection.session.socket_id == connection_id
    ]
    clock = session._clock = HeldClock(session._clock())
    return clock


def assert_rate_limited(reply: dict[str, Any], serial: int) -> None:
    assert (reply["action"], reply["msgSerial"], reply["count"]) == (NACK, serial, 1), reply
    error = reply["error"]
    assert (error["code"], error["statusCode"]) == (42911, 429), error
    assert error["message"].startswith("max per-connection publish rate limit exceeded (nonfatal)"), error


async def test_a_burst_over_the_rate_is_nacked_42911_and_only_what_was_acked_is_delivered(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Six MESSAGEs of 10 messages each, back to back: the first five (50 messages, the burst) are ACKed and
    delivered, the sixth is NACKed 42911 whole and none of it reaches the subscriber. Another connection publishes
    meanwhile; the limited one publishes again once the bucket has refilled (10 messages take 0.2 s)."""
    subscriber = await ably_wire(ably_emulator)
    publisher = await ably_wire(ably_emulator)
    bystander = await ably_wire(ably_emulator)
    wires.extend((subscriber, publisher, bystander))
    assert publisher.connected["connectionDetails"]["maxInboundRate"] == MAX_INBOUND_RATE == 50
    await subscriber.attach("room")
    for wire in (publisher, bystander):
        await wire.attach("room", flags=PUBLISH_MODE)  # they hear nothing back but their ACKs and NACKs
    clock = hold_clock(ably_emulator, publisher)

    serials = [await publisher.publish("room", *named(*(f"m{i}" for i in range(b, b + 10)))) for b in range(0, 60, 10)]
    answers = await replies(publisher, 6)
    assert [(a["action"], a["msgSerial"]) for a in answers[:5]] == [(ACK, serial) for serial in serials[:5]], answers
    assert_rate_limited(answers[5], serials[5])
    await bystander.publish("room", *named("other"))
    assert (await bystander.expect(ACK))["action"] == ACK
    assert [m["name"] for m in await received(subscriber, MESSAGE, "messages")] == [
        *(f"m{i}" for i in range(50)),
        "other",
    ]

    clock.advance(0.4)
    serial = await publisher.publish("room", *named(*(f"later{i}" for i in range(10))))
    assert ((answer := await publisher.expect(ACK))["action"], answer["msgSerial"]) == (ACK, serial)
    assert [m["name"] for m in await received(subscriber, MESSAGE, "messages")] == [f"later{i}" for i in range(10)]


async def test_presence_items_count_and_a_refused_presence_message_enters_no_one(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Presence shares the budget item by item: after 45 messages, an enter of 10 members is NACKed 42911 and
    none of them enters; the refusal took nothing, so an enter of the 5 members left in the bucket is ACKed."""
    watcher = await ably_wire(ably_emulator)
    member = await ably_wire(ably_emulator)
    wires.extend((watcher, member))
    await watcher.attach("room", flags=PRESENCE_SUBSCRIBE_MODE)
    await member.attach("room", flags=PRESENCE_MODE | PUBLISH_MODE)
    hold_clock(ably_emulator, member)

    published = await member.publish("room", *named(*(f"m{i}" for i in range(45))))
    refused = await member.presence("room", *({"action": ENTER, "clientId": f"r{i}"} for i in range(10)))
    entered = await member.presence("room", *({"action": ENTER, "clientId": f"e{i}"} for i in range(5)))
    first, second, third = await replies(member, 3)
    assert (first["action"], first["msgSerial"]) == (ACK, published), first
    assert_rate_limited(second, refused)
    assert (third["action"], third["msgSerial"]) == (ACK, entered), third
    assert [p["clientId"] for p in await received(watcher, PRESENCE, "presence")] == [f"e{i}" for i in range(5)]


async def test_a_protocol_message_of_more_than_a_burst_passes_once_and_the_rate_holds(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """A MESSAGE of 60 messages (one ably-js may bundle from publishes queued while connecting) can never fit a
    50-message burst: it is taken from the full bucket rather than refused for ever, and the 10 it overdrew are owed,
    so a message right after is NACKed 42911 and one 0.3 s later (15 more) is ACKed."""
    subscriber = await ably_wire(ably_emulator)
    publisher = await ably_wire(ably_emulator)
    wires.extend((subscriber, publisher))
    await subscriber.attach("room")
    await publisher.attach("room", flags=PUBLISH_MODE)
    clock = hold_clock(ably_emulator, publisher)

    bundle = await publisher.publish("room", *named(*(f"m{i}" for i in range(60))))
    owing = await publisher.publish("room", *named("owing"))
    bundled, refused = await replies(publisher, 2)
    assert (bundled["action"], bundled["msgSerial"]) == (ACK, bundle), bundled
    assert_rate_limited(refused, owing)
    clock.advance(0.3)
    paid = await publisher.publish("room", *named("paid"))
    assert ((answer := await publisher.expect(ACK))["action"], answer["msgSerial"]) == (ACK, paid)
    assert [m["name"] for m in await received(subscriber, MESSAGE, "messages")] == [
        *(f"m{i}" for i in range(60)),
        "paid",
    ]


async def test_a_flood_of_protocol_messages_closes_that_connection_with_42924_and_others_are_served(
    ably_emulator: RunningEmulator, wires: Wires, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ProtocolMessage counts against Ably's 2000 a second (lowered to 100 here, so that a client on a loaded
    machine still floods it many times over), not only publishes: a burst of 80 HEARTBEATs is answered and the
    connection stays; a runaway ATTACH/DETACH loop is cut off with ERROR 42924 (429) and a close, having been
    answered no more often than the rate allows since the burst began, and the refusal is logged. The channel's
    subscriber and another publisher are served throughout."""
    assert MAX_PROTOCOL_MESSAGE_RATE == 2000
    rate = 100
    monkeypatch.setattr("relay.emulator.ably_realtime.MAX_PROTOCOL_MESSAGE_RATE", rate)
    caplog.set_level(logging.INFO, logger="relay.emulator")
    flooder = await ably_wire(ably_emulator)
    subscriber = await ably_wire(ably_emulator)
    publisher = await ably_wire(ably_emulator)
    wires.extend((flooder, subscriber, publisher))
    await subscriber.attach("room")
    await publisher.attach("room", flags=PUBLISH_MODE)

    began = time.monotonic()
    burst = 80
    for i in range(burst):
        await flooder.send({"action": HEARTBEAT, "id": f"h{i}"})
    echoed = [await flooder.recv() for _ in range(burst)]
    assert [m.get("id") for m in echoed] == [f"h{i}" for i in range(burst)]

    sent = 0
    try:  # until the server has cut it off
        while sent < 100 * rate and flooder.ws.close_code is None:
            for _ in range(rate):
                await flooder.send({"action": ATTACH if sent % 2 == 0 else DETACH, "channel": "room"})
                sent += 1
            await asyncio.sleep(0)  # the client reads what came meanwhile, the server's close included
    except ConnectionClosed:
        pass
    answers = await flooder.closed()
    allowed = rate * (1 + time.monotonic() - began) - burst
    last = answers[-1]
    assert last["action"] == ERROR and "channel" not in last, last
    assert last["error"] == {
        "code": 42924,
        "statusCode": 429,
        "message": f"Connection terminated for abuse (inbound protocol message rate exceeded {rate}/s)",
        "href": "https://help.ably.io/error/42924",
    }
    assert 0 < len(answers) - 1 <= allowed and len(answers) - 1 < sent
    assert flooder.ws.close_code == 1000
    [logged] = [record for record in caplog.records if getattr(record, "code", None) == 42924]
    assert logged.getMessage() == "connection refused"
    assert logged.__dict__["reason"].startswith(f"over {rate} protocol messages a second: app 1, connection ")

    await publisher.publish("room", *named("still served"))
    assert (await publisher.expect(ACK))["action"] == ACK
    assert [m["name"] for m in await received(subscriber, MESSAGE, "messages")] == ["still served"]


async def test_a_publish_of_more_than_1000_messages_is_refused_whole_and_the_connection_stays(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """Empty messages weigh nothing against the 64 KiB limit and the bucket lets one publish of any size through:
    a MESSAGE of 100,000 ``{}`` was ACKed after a second with the event loop held, reached the subscriber as one
    100,000-item MESSAGE and pushed other channels out of history. Over 1,000 messages (or presence items) a publish
    is NACKed with Ably's 40034 before any is read; the connection goes on."""
    subscriber = await ably_wire(ably_emulator)
    publisher = await ably_wire(ably_emulator)
    wires.extend((subscriber, publisher))
    await subscriber.attach("room")
    await publisher.attach("room", flags=PUBLISH_MODE | PRESENCE_MODE)
    hold_clock(ably_emulator, publisher)

    flood = await publisher.publish("room", *([{}] * 1001))
    entering = await publisher.presence("room", *({"action": ENTER, "clientId": f"c{i}"} for i in range(1001)))
    after = await publisher.publish("room", *named("after"))
    refused, refused_presence, acked = await replies(publisher, 3)
    for reply, serial, what in ((refused, flood, "messages"), (refused_presence, entering, "presence")):
        assert (reply["action"], reply["msgSerial"]) == (NACK, serial), reply
        assert (reply["error"]["code"], reply["error"]["statusCode"]) == (40034, 400)
        assert reply["error"]["message"] == f"{what}: Too many messages in one publish (1001; the maximum is 1000)"
    assert (acked["action"], acked["msgSerial"]) == (ACK, after)
    assert [m["name"] for m in await received(subscriber, MESSAGE, "messages")] == ["after"]


async def test_a_rest_publish_of_more_than_1000_messages_is_refused(ably_emulator: RunningEmulator) -> None:
    basic = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers=basic) as http:
        refused = await http.post("/channels/flood/messages", json=[{}] * 1001)
        batch = await http.post("/messages", json=[{"channels": "flood", "messages": [{}] * 1001}])
        accepted = await http.post("/channels/flood/messages", json=[{"name": "n"}] * 1000)
        history = await http.get("/channels/flood/messages", params={"limit": 1000})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, 40034)
    too_many = "Too many messages in one publish (1001; the maximum is 1000)"
    assert refused.json()["error"]["message"] == f"messages: {too_many}"
    assert (batch.status_code, batch.json()["error"]["code"]) == (400, 40034)
    assert batch.json()["error"]["message"] == f"batch[0].messages: {too_many}"
    assert accepted.status_code == 201
    assert len(history.json()) == 1000  # only the accepted publish


async def test_a_batch_of_more_than_10000_messages_to_channels_in_all_is_refused_before_any(
    ably_emulator: RunningEmulator,
) -> None:
    """Each BatchSpec within its limits (100 channels, 1,000 messages), a request's total was not: a 3.6 KB body of
    100 channels × 1,000 empty messages held the event loop 0.7 s, five such specs 3.8 s."""
    basic = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
    channels = [f"flood-{number}" for number in range(100)]
    small = {"channels": ["kept"], "messages": [{"name": "first"}]}
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers=basic) as http:
        refused = await http.post("/messages", json=[small, {"channels": channels, "messages": [{}] * 101}])
        history = await http.get("/channels/kept/messages")
        within = await http.post("/messages", json=[{"channels": channels, "messages": [{}] * 100}])
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "batch: more than 10000 messages to channels in one request (channels × messages, summed over the "
        "BatchSpecs, reached 10101 at batch[1])"
    )
    assert history.json() == []  # nothing of the refused request was published, its first spec neither
    assert within.status_code == 201
