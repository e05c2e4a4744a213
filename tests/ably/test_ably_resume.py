"""Connection resume (docs/ably.md#connection-resume): a connection whose socket dropped without the client closing
it is held for two minutes and its members stay present for 15 seconds, or the client's ``remainPresentFor``; a
channel's re-attach names the last message the client took in, and what came after it is sent again from the app's
log. In process with the test's clock, then on the wire, with ably-js and with ably-python behind a connection the
test cuts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pusher
import pytest
from ably import AblyRealtime  # type: ignore[import-untyped]

from relay.emulator.ably import AblyNode
from relay.emulator.ably_history import EXPIRY_STEP
from relay.emulator.ably_hub import DELIVERY_LOG_MS, Attachment, DeliveryLog, Outbound
from relay.emulator.wire import encode_text
from relay.errors import ProtocolError
from relay.protocol.ably import remain_present_for
from tests.ably.ablysupport import (
    API_KEY,
    SCRIPTS,
    AblyWire,
    PusherWire,
    ably_wire,
    connected,
    jwt_token,
    open_wire,
    run_node,
)
from tests.ably.test_ably_hub import Hub, Link, send
from tests.conftest import RunningEmulator

ACK, ATTACH, ATTACHED, PRESENCE, MESSAGE, SYNC = 1, 10, 11, 14, 15, 16
CONNECTED, DISCONNECT, DISCONNECTED, CLOSE, ERROR = 4, 5, 6, 7, 9
RESUMED, HAS_PRESENCE = 4, 1
PRESENCE_MODE, PUBLISH_MODE, SUBSCRIBE_MODE = 1 << 16, 1 << 17, 1 << 18
ENTER, LEAVE = 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """An Ably connection in process that remembers, as the SDKs do, the last channelSerial it took in on each
    channel: frames written to its link and never taken are frames the network lost."""

    def __init__(self, hub: Hub, client_id: str, clock: Clock) -> None:
        self.session, self.link = hub.ably_session(client_id=client_id, clock=clock)
        self.serials: dict[str, str] = {}
        self.msg_serial = 0

    def take(self) -> list[Any]:
        frames = self.link.take()
        for frame in frames:
            if frame["action"] in (ATTACHED, MESSAGE, PRESENCE) and frame.get("channelSerial"):
                self.serials[frame["channel"]] = frame["channelSerial"]
        return frames

    def send(self, message: dict[str, Any]) -> None:
        send(self.session, message)

    def publish(self, channel: str, *data: str) -> int:
        serial, self.msg_serial = self.msg_serial, self.msg_serial + 1
        messages = [{"name": "tick", "data": item} for item in data]
        self.send({"action": MESSAGE, "channel": channel, "msgSerial": serial, "messages": messages})
        return serial

    def resume(self) -> list[Any]:
        """Come back with the connection key on a new socket; what the server sends first."""
        self.link = Link()
        self.session.resume(self.link, self.session.credentials, echo=True)
        return self.take()

    def reattach(self, channel: str, **extra: Any) -> list[Any]:
        """The SDKs' ATTACH once connected again, naming the last channelSerial taken in."""
        self.send({"action": ATTACH, "channel": channel, "channelSerial": self.serials.get(channel), **extra})
        return self.take()


def ticks(frames: list[Any]) -> list[str]:
    return [item["data"] for frame in frames if frame["action"] == MESSAGE for item in frame["messages"]]


def setup(clock: Clock, *channels: str) -> tuple[Hub, Client, Client]:
    """A phone attached to ``channels`` (entered on the first), and a watcher, attached too, that publishes."""
    hub = Hub()
    phone, watcher = Client(hub, "phone", clock), Client(hub, "watcher", clock)
    for name in channels:
        phone.send({"action": ATTACH, "channel": name})
        watcher.send({"action": ATTACH, "channel": name})
    phone.send({"action": PRESENCE, "channel": channels[0], "msgSerial": 0, "presence": [{"action": ENTER}]})
    phone.msg_serial = 1
    phone.take()
    watcher.take()
    return hub, phone, watcher


def test_what_a_dropped_connection_missed_comes_after_its_re_attach() -> None:
    clock = Clock()
    hub, phone, watcher = setup(clock, "room", "other")
    phone.session.connection_lost(phone.link)  # no CLOSE: the network went
    assert phone.session.held and hub.ably.connections[phone.session.connection_key] is phone.session
    watcher.publish("room", "1", "2")
    watcher.publish("other", "a")
    watcher.publish("room", "3")
    assert not phone.link.frames
    clock.now += 20

    [connected] = phone.resume()
    assert connected["action"] == CONNECTED and connected["connectionId"] == phone.session.socket_id
    assert "error" not in connected
    watcher.publish("room", "4")  # before the client re-attached: it gets it after its ATTACHED
    assert not phone.link.frames

    attached, *rest = phone.reattach("room")
    assert attached["action"] == ATTACHED and attached["flags"] & RESUMED
    assert ticks(rest) == ["1", "2", "3", "4"]
    assert rest[-1]["action"] == SYNC  # the presence set after what led to it
    watcher.publish("room", "5")
    assert ticks(phone.take()) == ["5"]  # live again
    attached, *rest = phone.reattach("other")
    assert attached["flags"] & RESUMED and ticks(rest) == ["a"]
    assert PRESENCE not in [frame["action"] for frame in watcher.take()]  # the member never left


def test_what_a_socket_the_server_thought_open_lost_is_sent_again() -> None:
    """The usual lost network: the server wrote to the dead socket until the client came back on a new one."""
    clock = Clock()
    _, phone, watcher = setup(clock, "room")
    watcher.publish("room", "1")
    assert ticks(phone.take()) == ["1"]
    watcher.publish("room", "2", "3")  # written, never received
    old = phone.link
    phone.resume()
    assert old.closed_with == (1000, "the connection was resumed on another socket")
    phone.session.connection_lost(old)  # the old socket's end does not end the connection
    assert not phone.session.held
    last_taken = phone.serials["room"]
    attached, *rest = phone.reattach("room")
    assert attached["flags"] & RESUMED and ticks(rest) == ["2", "3"]
    assert attached["channelSerial"] == last_taken  # until the missed messages move it on


def test_a_re_attach_from_a_serial_the_log_does_not_reach_is_not_resumed() -> None:
    clock = Clock()
    _, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)
    watcher.publish("room", "1")
    phone.resume()
    phone.serials["room"] = "00000000000000ff"  # not one this node sent
    attached, *rest = phone.reattach("room")
    assert not attached["flags"] & RESUMED and ticks(rest) == []  # ably-js: attached with resumed false


def test_the_log_says_when_it_no_longer_reaches_back() -> None:
    """Past its budget (or its two minutes) the oldest deliveries go, and a resume from before them is refused; a
    serial of the attachment's own (its ATTACHED's) stands for its position."""
    log = DeliveryLog(max_bytes=3 * 900)
    for position in range(1, 5):
        fields = {"action": MESSAGE, "channel": "room", "channelSerial": f"{position:016x}", "messages": []}
        log.record("room", Outbound(fields), 50, position, now_ms=position)
    attachment = Attachment(points={f"{0:016x}": 0, "attached-at-3": 3})

    def positions(serial: str) -> list[int] | None:
        found = log.since("room", serial, attachment)
        return None if found is None else [entry.position for entry in found]

    assert positions(f"{2:016x}") == [3, 4]
    assert positions(f"{1:016x}") is None  # dropped: what came after it may be gone
    assert positions(f"{0:016x}") is None  # an ATTACHED before what was dropped
    assert positions("attached-at-3") == [4]
    assert positions("bogus") is None
    attachment.made_at = 3  # made after the delivery the serial names: only what it was sent
    assert positions(f"{2:016x}") == [4]


def test_a_delivery_after_a_quiet_spell_drops_the_aged_entries_a_step_at_a_time() -> None:
    """As history's expiry: the first delivery after two quiet minutes does not pay for the whole log at once."""
    log = DeliveryLog()
    for position in range(1, 2 * EXPIRY_STEP + 1):
        fields = {"action": MESSAGE, "channel": "room", "channelSerial": f"{position:016x}", "messages": []}
        log.record("room", Outbound(fields), 50, position, now_ms=0)
    attachment = Attachment()
    later = DELIVERY_LOG_MS + 1
    fields = {"action": MESSAGE, "channel": "room", "channelSerial": "live", "messages": []}
    log.record("room", Outbound(fields), 50, 2 * EXPIRY_STEP + 1, now_ms=later)
    assert log.since("room", f"{EXPIRY_STEP:016x}", attachment) is None  # dropped in this step
    kept = log.since("room", f"{EXPIRY_STEP + 1:016x}", attachment)
    assert kept is not None and len(kept) == EXPIRY_STEP  # the rest waits for the next deliveries


def test_nodes_count_serials_from_far_apart() -> None:
    """A resume finds the client's last message by its channelSerial, which in a cluster may be another node's: two
    nodes' serials must not meet (each starts at a random point of 2**52)."""
    node = SimpleNamespace(states={}, ops=None)
    starts = [next(AblyNode(node)._serials) for _ in range(2)]  # type: ignore[arg-type]
    assert abs(starts[0] - starts[1]) > 2**32


def test_a_rewound_attachment_resumes_from_its_attach() -> None:
    """A rewind's last message is older than the attach: a resume from it replays nothing from before the attach
    (a Pusher publish then, kept by the log but not by history), and what came after."""
    clock = Clock()
    hub = Hub()
    watcher = Client(hub, "watcher", clock)
    watcher.send({"action": ATTACH, "channel": "room"})
    watcher.publish("room", "ably-1")
    hub.state.deliver_local("room", encode_text('{"event":"tick","channel":"room","data":"pusher-1"}'), None)
    phone = Client(hub, "phone", clock)
    phone.send({"action": ATTACH, "channel": "room", "params": {"rewind": "1"}})
    assert ticks(phone.take()) == ["ably-1"]
    phone.session.connection_lost(phone.link)
    watcher.publish("room", "later")
    phone.resume()
    attached, *rest = phone.reattach("room")
    assert attached["flags"] & RESUMED and ticks(rest) == ["later"]


def test_a_new_token_before_the_re_attach_does_not_hide_what_was_missed() -> None:
    """AUTH after the resume (a page recovering attaches as its code runs): no ATTACHED for a channel waiting for
    its re-attach, whose serial would have skipped what it missed."""
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)
    watcher.publish("room", "missed")
    phone.resume()
    token = jwt_token(
        {"room": ["subscribe", "presence"]},
        client_id="phone",
        key_name=hub.key.key_name,
        secret=hub.key.secret,
        issued_at=1_800_000_000 - 10,
    )
    phone.send({"action": 17, "auth": {"accessToken": token}})  # AUTH
    assert [frame["action"] for frame in phone.take()] == [CONNECTED]
    attached, *rest = phone.reattach("room")
    assert attached["flags"] & RESUMED and ticks(rest) == ["missed"]


def test_a_re_attach_that_replays_nothing_it_may_receive_gives_a_serial_the_next_resume_knows() -> None:
    """Without presence-subscribe, a member's enter meanwhile is not replayed: ATTACHED then names a new serial of
    the attachment's, and a second drop resumes from it."""
    clock = Clock()
    hub = Hub()
    phone, watcher = Client(hub, "phone", clock), Client(hub, "watcher", clock)
    watcher.send({"action": ATTACH, "channel": "room"})
    modes = PRESENCE_MODE | PUBLISH_MODE | SUBSCRIBE_MODE
    phone.send({"action": ATTACH, "channel": "room", "flags": modes})
    phone.take(), watcher.take()
    phone.session.connection_lost(phone.link)
    watcher.send({"action": PRESENCE, "channel": "room", "msgSerial": 0, "presence": [{"action": ENTER}]})
    watcher.msg_serial = 1
    phone.resume()
    attached, *rest = phone.reattach("room", flags=modes)
    assert attached["flags"] & RESUMED and rest == []
    phone.session.connection_lost(phone.link)
    watcher.publish("room", "after")
    phone.resume()
    attached, *rest = phone.reattach("room", flags=modes)
    assert attached["flags"] & RESUMED and ticks(rest) == ["after"]


async def test_occupancy_events_keep_the_channel_s_serial() -> None:
    """ably-python takes any MESSAGE's channelSerial, even a missing one, for the one a resume names: an occupancy
    event carries the channel's last, so a resume after one still finds what was missed."""
    clock = Clock()
    hub = Hub()
    phone, watcher = Client(hub, "phone", clock), Client(hub, "watcher", clock)
    watcher.send({"action": ATTACH, "channel": "room"})
    phone.send({"action": ATTACH, "channel": "room", "params": {"occupancy": "metrics"}})
    watcher.publish("room", "seen")
    [occupancy] = [await asyncio.wait_for(occupancy_event(phone), 10)]
    assert occupancy["channelSerial"] == phone.serials["room"]  # the channel's position, unmoved
    phone.session.connection_lost(phone.link)
    watcher.publish("room", "missed")
    phone.resume()
    phone.serials["room"] = occupancy["channelSerial"]  # as ably-python keeps it
    attached, *rest = phone.reattach("room")
    hub.ably.unwatch_occupancy("room", phone.session.socket_id)
    assert attached["flags"] & RESUMED and ticks(rest) == ["missed"]


async def occupancy_event(client: Client) -> dict[str, Any]:
    while True:
        for frame in client.take():
            if frame["action"] == MESSAGE and frame["messages"][0]["name"] == "[meta]occupancy":
                return frame
        await asyncio.sleep(0.05)


def test_members_of_a_dropped_connection_stay_15_s_and_it_goes_after_2_minutes() -> None:
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)
    clock.now += 14.9
    phone.session.check_liveness(clock.now)
    assert not watcher.link.frames and [m["clientId"] for m in hub.ably.members("room")] == ["phone"]
    clock.now += 0.2
    phone.session.check_liveness(clock.now)
    [left] = watcher.take()
    assert left["action"] == PRESENCE and [(p["action"], p["clientId"]) for p in left["presence"]] == [(LEAVE, "phone")]
    # Newer than the phone's ENTER (msgSerial 0), older than what it sends next (RTP2b2: msgSerial, then index).
    _, serial, index = left["presence"][0]["id"].rsplit(":", 2)
    assert (0, 0) < (int(serial), int(index)) < (phone.msg_serial, 0)
    assert phone.session.held and "room" in phone.session.channels  # resumable: a resumed SDK enters again itself

    clock.now += 105
    phone.session.check_liveness(clock.now)
    assert not phone.session.held and phone.session.socket_id not in hub.state.peers
    assert phone.session.connection_key not in hub.ably.connections and not phone.session.channels


def test_remain_present_for_is_milliseconds_from_ably_s_one_second_minimum_to_two_minutes() -> None:
    assert remain_present_for({}) == 15.0  # Ably's default
    assert [remain_present_for({"remainPresentFor": raw}) for raw in ("5000", "1000", "120000")] == [5.0, 1.0, 120.0]
    # Ably documents a minimum of one second: a smaller value gets it.
    assert remain_present_for({"remainPresentFor": "0"}) == remain_present_for({"remainPresentFor": "999"}) == 1.0
    for raw in ("", "-1", "1.5", "1e3", "5000ms", " 1000", "+1000", "\uff15000", "120001", "9" * 5000):
        with pytest.raises(ProtocolError) as refused:
            remain_present_for({"remainPresentFor": raw})
        assert (refused.value.code, refused.value.http_status) == (40003, 400), raw
        assert "remainPresentFor" in refused.value.message and len(refused.value.message) < 120


def test_a_dropped_connection_s_members_stay_as_long_as_its_remain_present_for() -> None:
    """The hold is the last socket's remainPresentFor (the SDKs send their transport params on every connect); a
    resume within it keeps the members."""
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    for away in (5.0, 0.9):  # the first drop held for the default 15 s; the second for the resumed socket's 1 s
        phone.session.connection_lost(phone.link)
        clock.now += away
        phone.session.check_liveness(clock.now)
        phone.link = Link()
        phone.session.resume(phone.link, phone.session.credentials, echo=True, presence_hold=1.0)
        phone.reattach("room")
    assert not watcher.take() and [m["clientId"] for m in hub.ably.members("room")] == ["phone"]

    phone.session.connection_lost(phone.link)
    clock.now += 0.9
    phone.session.check_liveness(clock.now)
    assert not watcher.link.frames
    clock.now += 0.2
    phone.session.check_liveness(clock.now)
    [left] = watcher.take()
    assert [(p["action"], p["clientId"]) for p in left["presence"]] == [(LEAVE, "phone")]
    assert phone.session.held and not hub.ably.members("room")


def test_a_publish_resent_after_a_resume_is_answered_once() -> None:
    """The ACK was lost with the socket: the SDK sends the message again with its msgSerial (RTN19a2)."""
    clock = Clock()
    _, phone, watcher = setup(clock, "room")
    serial = phone.publish("room", "once")
    [_, ack] = phone.link.take()  # the echo and the ACK, lost
    phone.session.connection_lost(phone.link)
    phone.resume()
    phone.reattach("room")
    phone.send(
        {"action": MESSAGE, "channel": "room", "msgSerial": serial, "messages": [{"name": "tick", "data": "once"}]}
    )
    assert phone.take() == [ack] and ack["action"] == ACK
    assert ticks(watcher.take()) == ["once"]


def test_a_connection_the_client_closed_is_let_go_at_once() -> None:
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    phone.send({"action": CLOSE})
    assert not phone.session.resumable_by(phone.session.credentials, binary=False)
    phone.session.connection_lost(phone.link)
    assert not phone.session.held and phone.session.connection_key not in hub.ably.connections
    [left] = watcher.take()
    assert [p["action"] for p in left["presence"]] == [LEAVE]


def test_channels_the_client_does_not_re_attach_are_let_go() -> None:
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)
    phone.resume()
    clock.now += 29
    phone.session.check_liveness(clock.now)
    assert "room" in phone.session.channels
    clock.now += 2
    phone.session.check_liveness(clock.now)
    assert "room" not in phone.session.channels and phone.session.socket_id not in hub.ably.attachments.get("room", {})
    [left] = watcher.take()
    assert [p["action"] for p in left["presence"]] == [LEAVE]
    watcher.publish("room", "late")
    assert ticks(phone.take()) == []


def test_a_client_that_stops_answering_pings_is_held_at_once() -> None:
    clock = Clock()
    _, phone, watcher = setup(clock, "room")
    phone.session.check_liveness(clock.now + 100)  # a ping after silence
    clock.now += 200
    phone.session.check_liveness(clock.now)
    *_, disconnected = phone.take()
    assert disconnected["action"] == DISCONNECTED and disconnected["error"]["code"] == 80003
    assert phone.link.closed_with is not None and phone.session.held
    watcher.publish("room", "1")
    phone.session.check_liveness(clock.now + 1)
    assert phone.link.take() == []  # nothing after the close frame, and one DISCONNECTED
    phone.session.connection_lost(phone.link)
    assert phone.session.held and PRESENCE not in [frame["action"] for frame in watcher.take()]
    phone.resume()
    attached, *rest = phone.reattach("room")
    assert attached["flags"] & RESUMED and ticks(rest) == ["1"]


def test_a_server_end_releases_the_held_connection() -> None:
    clock = Clock()
    hub, phone, watcher = setup(clock, "room")
    phone.session.connection_lost(phone.link)
    phone.session.terminate(4009, "Connection limit reached")
    assert not phone.session.held and phone.session.connection_key not in hub.ably.connections
    assert [p["action"] for p in watcher.take()[0]["presence"]] == [LEAVE]


# -- over a real socket --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gone", ["network drop", "client's DISCONNECT"])
async def test_a_client_resuming_with_its_connection_key_gets_what_it_missed(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire], gone: str
) -> None:
    """The wire as an SDK sees it: ``resume=`` with the connection key gives the same connection id without an
    error, and the channel's re-attach is RESUMED, followed by the messages of both protocols published meanwhile,
    in order; the member never left. The socket goes with the network, or with the client's DISCONNECT (ably-js's,
    when it hears nothing for 25 s: a laptop waking from sleep), which keeps the connection: it was taken as CLOSE,
    the member left and the resume found nothing (80008), what was published meanwhile lost."""
    phone = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=phone")
    watcher = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=watcher")
    wires += [phone, watcher]
    await phone.attach("room")
    await watcher.attach("room")
    await phone.presence("room", {"action": ENTER})
    last_taken = (await phone.expect(PRESENCE))["channelSerial"]  # its own ENTER, the last it took in
    assert (await watcher.expect(PRESENCE))["presence"][0]["action"] == ENTER
    if gone == "network drop":
        phone.ws.transport.abort()  # no CLOSE, no close frame
    else:
        await phone.send({"action": DISCONNECT})
        while (frame := await phone.recv())["action"] != DISCONNECTED:  # its ENTER's ACK first
            pass
        assert frame == {"action": DISCONNECTED}
    await asyncio.sleep(0.1)

    await watcher.publish("room", {"name": "tick", "data": "1"})
    app = ably_emulator.app
    backend = pusher.Pusher(app.app_id, app.key, app.secret, host="127.0.0.1", port=ably_emulator.port, ssl=False)
    await asyncio.to_thread(backend.trigger, "room", "tick", "2")
    await watcher.publish("room", {"name": "tick", "data": "3"})

    key = phone.connected["connectionKey"]
    back = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=phone&resume={key}")
    wires.append(back)
    assert back.connected["connectionId"] == phone.connected["connectionId"] and "error" not in back.connected
    await back.send({"action": ATTACH, "channel": "room", "channelSerial": last_taken})
    reattached = await back.expect(ATTACHED)
    assert reattached["flags"] & RESUMED and reattached["flags"] & HAS_PRESENCE
    assert ticks([await back.expect(MESSAGE) for _ in range(3)]) == ["1", "2", "3"]
    sync = await back.expect(SYNC)
    assert sorted(member["clientId"] for member in sync["presence"]) == ["phone"]
    watched = [await watcher.recv() for _ in range(5)]  # its two messages and their ACKs, the Pusher event
    assert [message["action"] for message in watched if message["action"] != 0] == [MESSAGE, 1, MESSAGE, MESSAGE, 1]


async def test_another_client_id_cannot_resume_the_connection(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire]
) -> None:
    phone = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=phone")
    wires.append(phone)
    phone.ws.transport.abort()
    await asyncio.sleep(0.1)
    key = phone.connected["connectionKey"]
    other = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=mallory&resume={key}")
    wires.append(other)
    assert other.connected["error"]["code"] == 80008
    assert other.connected["connectionId"] != phone.connected["connectionId"]


class Cable:
    """A TCP relay in front of the emulator that the test can cut, as a lost network would: every connection is
    reset on both sides at once (no CLOSE, no close frame), and new ones are reset as they come until it is mended."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.down = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def cut(self) -> None:
        self.down = True
        for writer in self._writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.down:
            client_writer.transport.abort()
            return
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        if self.down:  # cut while connecting
            client_writer.transport.abort()
            server_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        except OSError:
            pass
        finally:
            self._writers -= {client_writer, server_writer}
            for writer in (client_writer, server_writer):
                writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


async def test_ably_js_resumes_across_a_dropped_network(node_modules: Path, ably_emulator: RunningEmulator) -> None:
    cable = Cable(ably_emulator.port)
    port = await cable.start()

    async def on_step(message: dict[str, Any]) -> str:
        if message["step"] == "cut":
            cable.cut()
        else:
            assert message["step"] == "mend"
            await asyncio.sleep(0.5)  # the client's retries meanwhile are refused
            cable.down = False
        return "ok"

    try:
        run = await run_node("ably_js_resume.mjs", ably_emulator, env={"CABLE_PORT": str(port)}, on_step=on_step)
    finally:
        await cable.close()
    assert run.summary["checks"] == ["resumed", "no-message-lost", "presence-kept"]


async def test_ably_js_members_leave_after_the_client_s_remain_present_for(
    node_modules: Path, ably_emulator: RunningEmulator
) -> None:
    """``transportParams: { remainPresentFor: 1000 }``: a watcher sees the member of a cut connection leave about a
    second after the cut, not after Ably's 15 s; a malformed value fails the connection with 40003 and the server
    serves the next client."""
    cable = Cable(ably_emulator.port)
    port = await cable.start()

    async def on_step(message: dict[str, Any]) -> str:
        assert message["step"] == "cut"
        cable.cut()  # for good: the phone never comes back
        return "ok"

    try:
        run = await run_node(
            "ably_js_remain_present.mjs", ably_emulator, env={"CABLE_PORT": str(port)}, on_step=on_step
        )
    finally:
        await cable.close()
    assert run.summary["checks"] == ["left-after-remain-present-for", "malformed-refused", "others-served"]
    # The held connection is looked at every second at most (the server's liveness sweep): a leave 1 to 2 s after.
    assert 800 <= run.summary["leave_after_ms"] <= 4000, run.summary["leave_after_ms"]


async def test_a_malformed_remain_present_for_is_refused_and_the_server_serves_the_next(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire]
) -> None:
    for raw in ("soon", "-5", "1.5", "120001"):
        ws, first = await open_wire(ably_emulator, f"key={API_KEY}&clientId=odd&remainPresentFor={raw}")
        refused = AblyWire(ws, False, {})
        assert first["action"] == ERROR and first["error"]["code"] == 40003, first
        assert first["error"]["statusCode"] == 400 and "remainPresentFor" in first["error"]["message"]
        assert await refused.closed() == []
    phone = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=phone&remainPresentFor=0")
    wires.append(phone)
    await phone.attach("room")
    await phone.presence("room", {"action": ENTER})
    echoed, acked = await phone.expect(PRESENCE), await phone.expect(ACK)
    assert echoed["presence"][0]["clientId"] == "phone" and acked["msgSerial"] == 0


async def test_ably_js_recovers_a_connection_after_a_reload(node_modules: Path, ably_emulator: RunningEmulator) -> None:
    """ably-js's ``recover`` option: a page reloaded after its network died continues its connection."""
    cable = Cable(ably_emulator.port)
    port = await cable.start()

    async def on_step(message: dict[str, Any]) -> str:
        assert message["step"] == "cut"
        cable.cut()  # for good: the first client never comes back
        return "ok"

    try:
        run = await run_node("ably_js_recover.mjs", ably_emulator, env={"CABLE_PORT": str(port)}, on_step=on_step)
    finally:
        await cable.close()
    assert run.summary["checks"] == ["recovered", "presence-kept"]


async def test_ably_python_resumes_across_a_dropped_network(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire]
) -> None:
    """ably-python 3.x: the same connection id after the cut, and the messages published meanwhile, in order."""
    cable = Cable(ably_emulator.port)
    port = await cable.start()
    realtime = AblyRealtime(
        key=API_KEY, client_id="py", endpoint=f"127.0.0.1:{port}", tls=False, disconnected_retry_timeout=300
    )
    try:
        await connected(realtime)
        connection_id = realtime.connection.connection_manager.connection_id
        received: asyncio.Queue[str] = asyncio.Queue()
        channel = realtime.channels.get("orders")
        await channel.subscribe("tick", lambda message: received.put_nowait(message.data))
        publisher = await ably_wire(ably_emulator)
        wires.append(publisher)

        disconnected = asyncio.Event()
        realtime.connection.on("disconnected", lambda change: disconnected.set())
        cable.cut()
        await asyncio.wait_for(disconnected.wait(), 5)
        for data in ("t0", "t1", "t2"):
            await publisher.publish("orders", {"name": "tick", "data": data})
        await asyncio.sleep(0.5)
        cable.down = False
        got = [await asyncio.wait_for(received.get(), 10) for _ in range(3)]
        assert got == ["t0", "t1", "t2"]
        assert realtime.connection.connection_manager.connection_id == connection_id
    finally:
        await realtime.close()
        await cable.close()


def test_the_docs_listener_is_the_one_the_scenario_runs() -> None:
    page = (SCRIPTS.parents[2] / "docs" / "ably.md").read_text()
    section = page.split("## Connection resume", 1)[1].split("\n## ", 1)[0]
    block = section.split("```js\n", 1)[1].split("```", 1)[0]
    script = (SCRIPTS / "ably_js_resume.mjs").read_text()
    code = [line for line in block.splitlines() if not line.startswith("//")]
    assert len(code) == 4 and all(line in script for line in code), code
