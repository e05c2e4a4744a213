"""Bytes written to Ably-protocol connections are metered once, as written (/metrics ``relay_messages_sent_total`` and
``relay_bytes_sent_total``, /usage ``bytes_out``, which ``relay cost --usage`` prices egress from).

They were not: a publish reaching Ably subscribers was metered at the size of the Pusher frame (the Ably frame each
one is written differs), presence sent to Ably connections was not metered at all, and Ably connections that
negotiated permessage-deflate were counted in the hub's deflate estimate of the Pusher frame. Every WebSocket
connection here goes through a TCP tap that reads the frames the emulator writes, so what is metered is compared
with what went over the wire: Pusher and Ably subscribers in one channel, uncompressed and with permessage-deflate,
JSON and msgpack, raw clients and ably-python.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from ably import AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    HAS_PRESENCE,
    MESSAGE,
    PRESENCE,
    SYNC,
    AblyWire,
    PusherWire,
    ably_wire,
    pusher_wire,
)
from websockets.asyncio.client import connect

from relay.protocol.signing import authorize_channel
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import RunningEmulator, StartEmulator, whole_run
from tests.operations.support import publish
from tests.operations.test_reliability_hunt_fixes import sent_so_far

WAIT = 5.0
BIG = json.dumps({"text": "all work and no play " * 30})  # compressible, so deflate connections get less

# -- the tap ------------------------------------------------------------------------------------------------------


@dataclass
class Written:
    """What the emulator wrote on one WebSocket connection after its 101: data frames, headers included."""

    deflate: bool  # the 101 accepted permessage-deflate
    frames: int = 0
    size: int = 0
    compressed: int = 0  # frames with RSV1 set: a compressed message


class Tap:
    """A TCP relay in front of the emulator that reads each WebSocket frame the emulator writes (RFC 6455 framing;
    payloads are counted, not inflated) before passing it on. Control frames (pings, pongs, close) are left out: they
    are no messages, and neither protocol meters them."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.connections: list[Written] = []
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._relays:
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    @property
    def frames(self) -> int:
        return sum(written.frames for written in self.connections)

    @property
    def size(self) -> int:
        return sum(written.size for written in self.connections)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        directions = {
            asyncio.ensure_future(_pipe(client_reader, server_writer)),
            asyncio.ensure_future(self._frames(server_reader, client_writer)),
        }
        try:  # either side closing closes both, as a direct connection would be
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            client_writer.close()
            server_writer.close()
            self._relays.discard(task)

    async def _frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        written = Written(deflate=b"permessage-deflate" in head.lower())
        self.connections.append(written)
        while True:
            header = await reader.readexactly(2)
            length = header[1] & 0x7F
            extended = await reader.readexactly({126: 2, 127: 8}.get(length, 0))
            if extended:
                length = int.from_bytes(extended)
            payload = await reader.readexactly(length)
            if header[0] & 0x0F < 0x8:  # a data frame
                written.frames += 1
                written.size += len(header) + len(extended) + length
                written.compressed += bool(header[0] & 0x40)
            writer.write(header + extended + payload)
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65_536):
        writer.write(data)
        await writer.drain()


async def assert_metered_as_written(metered: RunningEmulator, tap: Tap) -> None:
    """Every WebSocket connection of ``metered`` goes through ``tap``, and all it was sent has been read: its totals
    since it started are the tap's (messages, bytes in /metrics, bytes_out in /usage)."""
    messages, bytes_sent, bytes_out = await sent_so_far(metered.http_url)
    assert (messages, bytes_sent, bytes_out) == (tap.frames, tap.size, tap.size)
    assert all(written.compressed for written in tap.connections if written.deflate)  # deflate is on the wire


# -- one channel's subscribers, of both protocols -----------------------------------------------------------------


@dataclass
class Sdk:
    """An ably-python realtime client attached to the channel, with what it heard."""

    client: Any
    channel: Any
    messages: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    presence: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


@dataclass
class Audience:
    """Subscribers of ``channel``, each through the tap, in this order of connection: Pusher uncompressed and with
    permessage-deflate, a raw Ably JSON connection uncompressed and a raw msgpack one with permessage-deflate, and
    ably-python realtime clients (msgpack, then JSON) with the permessage-deflate websockets offers."""

    channel: str
    pushers: list[PusherWire] = field(default_factory=list)
    wires: list[AblyWire] = field(default_factory=list)
    sdks: list[Sdk] = field(default_factory=list)

    async def heard(self, pusher_events: list[str], ably_messages: int, presence: int = 0) -> None:
        """Wait until each subscriber got what a step sent it (raw Ably connections one ProtocolMessage per step)."""
        for pusher in self.pushers:
            for event in pusher_events:
                await pusher.expect(event, WAIT)
        for wire in self.wires:
            await wire.expect(PRESENCE if presence else MESSAGE, WAIT)
        for sdk in self.sdks:
            for _ in range(ably_messages):
                await asyncio.wait_for(sdk.messages.get(), WAIT)
            for _ in range(presence):
                await asyncio.wait_for(sdk.presence.get(), WAIT)


@pytest.fixture
async def audiences() -> AsyncIterator[list[Audience]]:
    """Audiences a test gathered (``gather``), their connections closed afterwards."""
    made: list[Audience] = []
    yield made
    for audience in made:
        for wire in [*audience.pushers, *audience.wires]:
            await wire.ws.close()
        for sdk in audience.sdks:
            await sdk.client.close()


async def gather(tap: Tap, port: int, channel: str, made: list[Audience]) -> Audience:
    """Connect and subscribe an :class:`Audience` of ``channel`` through ``tap`` (on ``port``), each member settled
    (a ``presence-`` channel's Pusher subscribers are members, whom the others hear of)."""
    audience = Audience(channel)
    made.append(audience)
    via_tap = RunningEmulator(node=None, port=port, app=APP)  # type: ignore[arg-type]  # the helpers read its port
    plain = await connect(f"ws://127.0.0.1:{port}/app/{APP.key}?protocol=7", compression=None)
    established = json.loads(await asyncio.wait_for(plain.recv(), WAIT))
    for pusher in (PusherWire(plain, json.loads(established["data"])["socket_id"]), await pusher_wire(via_tap)):
        audience.pushers.append(pusher)
        auth: dict[str, str] = {}
        if channel.startswith("presence-"):
            channel_data = json.dumps({"user_id": f"user-{len(audience.pushers)}"})
            auth = authorize_channel(APP.key, APP.secret, pusher.socket_id, channel, channel_data=channel_data)
        await pusher.send("pusher:subscribe", {"channel": channel, **auth})
        await pusher.expect("pusher_internal:subscription_succeeded", WAIT)
        if len(audience.pushers) == 2 and auth:
            await audience.pushers[0].expect("pusher_internal:member_added", WAIT)
    raw = await connect(f"ws://127.0.0.1:{port}/?key={API_KEY}&format=json", compression=None)
    audience.wires = [AblyWire(raw, False, json.loads(await raw.recv())), await ably_wire(via_tap, binary=True)]
    for wire in audience.wires:
        attached = await wire.attach(channel)
        if attached["flags"] & HAS_PRESENCE:  # the members follow
            await wire.expect(SYNC, WAIT)
    for binary in (True, False):
        client = AblyRealtime(
            key=API_KEY, client_id=f"sdk-{binary}", endpoint=f"127.0.0.1:{port}", tls=False, use_binary_protocol=binary
        )
        sdk = Sdk(client, client.channels.get(channel))
        audience.sdks.append(sdk)
        await sdk.channel.subscribe(sdk.messages.put_nowait)
        await sdk.channel.presence.subscribe(sdk.presence.put_nowait)
        await sdk.channel.presence.get()  # the SYNC is over
    assert [written.deflate for written in tap.connections] == [False, True, False, True, True, True]
    return audience


@pytest.fixture
async def taps() -> AsyncIterator[Callable[[RunningEmulator], Awaitable[tuple[Tap, int]]]]:
    """``await taps(emulator)``: a tap in front of ``emulator``, and the tap's port (closed after the test's
    audiences, so their connections close as they would without it)."""
    made: list[Tap] = []

    async def tap_in_front(emulator: RunningEmulator) -> tuple[Tap, int]:
        tap = Tap(emulator.port)
        made.append(tap)
        return tap, await tap.start()

    yield tap_in_front
    for tap in made:
        await tap.close()


@pytest.fixture
async def tapped(
    ably_emulator: RunningEmulator, taps: Callable[[RunningEmulator], Awaitable[tuple[Tap, int]]]
) -> tuple[Tap, int]:
    """A tap in front of the emulator, and the tap's port."""
    return await taps(ably_emulator)


async def rest_publish(emulator: RunningEmulator, channel: str) -> None:
    """Two messages in one Ably REST publish (ably-python): one Pusher event each, one ProtocolMessage for Ably."""
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=emulator.port, tls=False, use_token_auth=True)
    try:
        await rest.channels.get(channel).publish([Message("first", BIG), Message("second", "short")])
    finally:
        await rest.close()


# -- one node -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["http", "ably-rest", "ably-realtime"])
async def test_a_publish_to_pusher_and_ably_subscribers_is_metered_as_written(
    ably_emulator: RunningEmulator, tapped: tuple[Tap, int], audiences: list[Audience], source: str
) -> None:
    """A publish from the HTTP API, Ably REST (two messages) or an Ably connection (echoed to it, then its ACK):
    the Ably subscribers were metered at the size of the Pusher frame, those with permessage-deflate less what
    deflate took off the Pusher frame (a compression for nothing when only Ably connections compressed)."""
    tap, port = tapped
    audience = await gather(tap, port, "room", audiences)
    await assert_metered_as_written(ably_emulator, tap)

    if source == "http":
        await publish(ably_emulator.http_url, APP, "room", "news", BIG)
        await audience.heard(["news"], ably_messages=1)
    elif source == "ably-rest":
        await rest_publish(ably_emulator, "room")
        await audience.heard(["first", "second"], ably_messages=2)
    else:
        publisher = audience.wires[0]
        await publisher.publish("room", {"name": "chat", "data": BIG})
        await audience.heard(["chat"], ably_messages=1)
        await publisher.expect(ACK, WAIT)
    await assert_metered_as_written(ably_emulator, tap)
    # The hub compresses its frame for its Pusher subscriber with deflate only: the Ably connections write their own.
    assert ably_emulator.node.states[APP.app_id].channels["room"].deflate_windows == {15: 1}


@pytest.mark.parametrize("channel", ["room", "presence-room"])
async def test_presence_sent_to_ably_connections_is_metered_as_written(
    ably_emulator: RunningEmulator, tapped: tuple[Tap, int], audiences: list[Audience], channel: str
) -> None:
    """An ably-python client enters with data and leaves: the PRESENCE messages written to every Ably connection
    were not metered at all (only the ACK was). On a ``presence-`` channel the Pusher subscribers get
    ``member_added``/``member_removed``, which the hub hands the Ably connections too (they write nothing for it)."""
    tap, port = tapped
    audience = await gather(tap, port, channel, audiences)
    await assert_metered_as_written(ably_emulator, tap)
    pusher_events = ["pusher_internal:member_added"] if channel.startswith("presence-") else []

    actor = audience.sdks[0].channel.presence
    await actor.enter({"seat": "by the window " * 20})
    await audience.heard(pusher_events, ably_messages=0, presence=1)
    await assert_metered_as_written(ably_emulator, tap)

    await actor.leave()
    await audience.heard([event.replace("added", "removed") for event in pusher_events], ably_messages=0, presence=1)
    await assert_metered_as_written(ably_emulator, tap)


# -- a cluster ----------------------------------------------------------------------------------------------------


async def test_another_node_s_publishes_and_presence_are_metered_as_written(
    redis_server: RedisServer,
    start_emulator: StartEmulator,
    taps: Callable[[RunningEmulator], Awaitable[tuple[Tap, int]]],
    audiences: list[Audience],
) -> None:
    """Publishes (HTTP, Ably REST) and Ably presence on one node, delivered by another to its Pusher and Ably
    subscribers: the other node meters what it wrote them."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    tap, port = await taps(there)
    audience = await gather(tap, port, "presence-room", audiences)
    await assert_metered_as_written(there, tap)
    await asyncio.sleep(0.2)  # the nodes' bus subscriptions are live well before this

    await publish(here.http_url, APP, "presence-room", "news", BIG)
    await audience.heard(["news"], ably_messages=1)
    await rest_publish(here, "presence-room")
    await audience.heard(["first", "second"], ably_messages=2)
    await assert_metered_as_written(there, tap)

    member = await ably_wire(here, f"key={API_KEY}&clientId=ann")
    await member.attach("presence-room")
    await member.presence("presence-room", {"action": 2, "data": "by the door " * 20})
    await audience.heard(["pusher_internal:member_added"], ably_messages=0, presence=1)
    await member.close()  # ann leaves with her connection
    await audience.heard(["pusher_internal:member_removed"], ably_messages=0, presence=1)
    await assert_metered_as_written(there, tap)


@pytest.mark.parametrize(
    ("channel", "events", "deliveries"),
    [
        # enter a, enter b, update a, leave a: 4 presence messages, each to the 3 attachments
        ("room", 4, 12),
        # on a presence- channel the enters and leaves are Pusher members' (member_added reaches the 2 others,
        # member_removed the 3 subscribers), and the update is Ably's alone, to its 3 presence subscribers
        ("presence-room", 4, 2 + 2 + 3 + 3),
    ],
)
async def test_ably_presence_is_counted_in_the_usage_as_ably_bills_it(
    ably_emulator: RunningEmulator, channel: str, events: int, deliveries: int
) -> None:
    """Ably bills a presence enter, update or leave 1 message, plus 1 per presence subscriber it reaches (reference
    §F.2). Ably presence on an ordinary channel was not metered at all, nor an update on any channel: `relay cost
    --usage` priced a presence-heavy Ably app at Ably's Free plan where it needed Standard."""
    wires = [await ably_wire(ably_emulator, f"key={API_KEY}&clientId={client_id}") for client_id in "abc"]
    try:
        for wire in wires:
            await wire.attach(channel)
        a, b, _ = wires
        for wire, action, data in ((a, 2, "in"), (b, 2, "in"), (a, 4, "away"), (a, 3, None)):
            serial = await wire.presence(channel, {"action": action, "data": data})
            while not ((answer := await wire.recv(5))["action"] == ACK and answer["msgSerial"] == serial):
                pass  # the PRESENCE messages it is sent meanwhile
        day = whole_run(ably_emulator.node.states[APP.app_id].meter.days())
        assert (day.presence_events, day.presence_deliveries) == (events, deliveries)
    finally:
        for wire in wires:
            await wire.ws.close()


async def test_a_delivery_to_many_ably_subscribers_is_metered_once(
    ably_emulator: RunningEmulator, wires: list[AblyWire], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Ably recipient of a publish called the meter (and the deflate estimate) for its own frame: 40 subscribers,
    40 calls per publish. What they wrote is now tallied per delivery and metered once, with the same counts."""
    meter = ably_emulator.node.states[APP.app_id].meter
    for _ in range(40):
        wire = await ably_wire(ably_emulator)
        wires.append(wire)
        await wire.attach("crowd")
    calls: list[tuple[int, int]] = []
    written = meter.written

    def counted(frames: int, size: int) -> None:
        calls.append((frames, size))
        written(frames, size)

    monkeypatch.setattr(meter, "written", counted)
    before = meter.messages_sent
    await publish(ably_emulator.http_url, APP, "crowd", "news", BIG)
    frames = [await wire.expect(MESSAGE, WAIT) for wire in wires]
    assert {frame["messages"][0]["name"] for frame in frames} == {"news"}
    # The hub's own fan-out to the channel's Pusher subscribers (none here) meters its zero frames alongside
    assert [frames for frames, _ in calls if frames] == [40]
    assert meter.messages_sent - before == 40
