"""Connection resume, in process (docs/ably.md#connection-resume): a connection whose socket dropped without the
client closing it is held for two minutes, what its channels are sent meanwhile is kept for the resume, and its
members stay present for 15 seconds. The clock is the test's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pusher
from ably import AblyRealtime  # type: ignore[import-untyped]

from relay.emulator.ably_realtime import MAX_BACKLOG_BYTES, AblySession
from tests.ably.ablysupport import API_KEY, SCRIPTS, AblyWire, PusherWire, ably_wire, connected, run_node
from tests.ably.test_ably_hub import Hub, Link, send
from tests.conftest import RunningEmulator

ATTACH, ATTACHED, PRESENCE, MESSAGE, SYNC = 10, 11, 14, 15, 16
CONNECTED, DISCONNECTED, CLOSE = 4, 6, 7
RESUMED, HAS_PRESENCE = 4, 1
ENTER, LEAVE = 2, 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publish(session: AblySession, channel: str, *data: str) -> None:
    messages = [{"name": "tick", "data": item} for item in data]
    send(session, {"action": MESSAGE, "channel": channel, "msgSerial": 0, "messages": messages})


def ticks(frames: list[Any]) -> list[str]:
    return [item["data"] for frame in frames if frame["action"] == MESSAGE for item in frame["messages"]]


def resume(session: AblySession) -> Link:
    """The client comes back with the connection key on a new socket."""
    link = Link()
    session.resume(link, session.credentials, echo=True)
    return link


def setup(clock: Clock, *channels: str) -> tuple[Hub, AblySession, Link, AblySession, Link]:
    """A phone attached to ``channels`` (entered on the first), and a watcher and publisher on all of them."""
    hub = Hub()
    phone, phone_link = hub.ably_session(client_id="phone", clock=clock)
    watcher, watcher_link = hub.ably_session(client_id="watcher", clock=clock)
    for name in channels:
        send(phone, {"action": ATTACH, "channel": name})
        send(watcher, {"action": ATTACH, "channel": name})
    send(phone, {"action": PRESENCE, "channel": channels[0], "msgSerial": 1, "presence": [{"action": ENTER}]})
    phone_link.take()
    watcher_link.take()
    return hub, phone, phone_link, watcher, watcher_link


def test_what_a_dropped_connection_missed_comes_after_its_re_attach() -> None:
    clock = Clock()
    hub, phone, phone_link, watcher, watcher_link = setup(clock, "room", "other")
    phone.connection_lost(phone_link)  # no CLOSE: the network went
    assert phone.held and hub.ably.connections[phone.connection_key] is phone
    publish(watcher, "room", "1", "2")
    publish(watcher, "other", "a")
    publish(watcher, "room", "3")
    assert not phone_link.frames
    clock.now += 20

    link = resume(phone)
    [connected] = link.take()
    assert connected["action"] == CONNECTED and connected["connectionId"] == phone.socket_id
    assert "error" not in connected
    publish(watcher, "room", "4")  # before the client re-attached: kept for it too
    assert not link.frames

    send(phone, {"action": ATTACH, "channel": "room", "channelSerial": "whatever it saw last"})
    attached, *rest = link.take()
    assert attached["action"] == ATTACHED and attached["flags"] & RESUMED
    assert ticks(rest) == ["1", "2", "3", "4"]
    assert rest[-1]["action"] == SYNC  # the presence set after what led to it
    publish(watcher, "room", "5")
    assert ticks(link.take()) == ["5"]  # live again
    send(phone, {"action": ATTACH, "channel": "other"})
    attached, *rest = link.take()
    assert attached["flags"] & RESUMED and ticks(rest) == ["a"]
    assert PRESENCE not in [frame["action"] for frame in watcher_link.take()]  # the member never left


def test_members_of_a_dropped_connection_stay_15_s_and_it_goes_after_2_minutes() -> None:
    clock = Clock()
    hub, phone, phone_link, _, watcher_link = setup(clock, "room")
    phone.connection_lost(phone_link)
    clock.now += 14.9
    phone.check_liveness(clock.now)
    assert not watcher_link.frames and [m["clientId"] for m in hub.ably.members("room")] == ["phone"]
    clock.now += 0.2
    phone.check_liveness(clock.now)
    [left] = watcher_link.take()
    assert left["action"] == PRESENCE and [(p["action"], p["clientId"]) for p in left["presence"]] == [(LEAVE, "phone")]
    assert phone.held and "room" in phone.channels  # still resumable: a resumed client enters again itself

    clock.now += 105
    phone.check_liveness(clock.now)
    assert not phone.held and phone.socket_id not in hub.state.peers
    assert phone.connection_key not in hub.ably.connections and not phone.channels


def test_a_connection_the_client_closed_is_let_go_at_once() -> None:
    clock = Clock()
    hub, phone, phone_link, _, watcher_link = setup(clock, "room")
    send(phone, {"action": CLOSE})
    phone.connection_lost(phone_link)
    assert not phone.held and phone.connection_key not in hub.ably.connections
    [left] = watcher_link.take()
    assert [p["action"] for p in left["presence"]] == [LEAVE]


def test_a_channel_whose_messages_outgrew_the_backlog_is_re_attached_without_resumed() -> None:
    clock = Clock()
    _, phone, phone_link, watcher, _ = setup(clock, "busy", "quiet")
    phone.connection_lost(phone_link)
    publish(watcher, "quiet", "q")
    big = "x" * 60_000
    for _ in range(MAX_BACKLOG_BYTES // 60_000 + 1):
        clock.now += 0.1  # within the publisher's inbound rate
        publish(watcher, "busy", big)
    publish(watcher, "busy", "after")  # continuity is lost already: not kept
    link = resume(phone)
    link.take()
    send(phone, {"action": ATTACH, "channel": "busy"})
    attached, *rest = link.take()
    assert not attached["flags"] & RESUMED and ticks(rest) == []
    send(phone, {"action": ATTACH, "channel": "quiet"})
    attached, *rest = link.take()
    assert not attached["flags"] & RESUMED and ticks(rest) == []  # its message went with the backlog


def test_channels_the_client_does_not_re_attach_are_let_go() -> None:
    clock = Clock()
    hub, phone, phone_link, watcher, watcher_link = setup(clock, "room")
    phone.connection_lost(phone_link)
    link = resume(phone)
    clock.now += 29
    phone.check_liveness(clock.now)
    assert "room" in phone.channels
    clock.now += 2
    phone.check_liveness(clock.now)
    assert "room" not in phone.channels and "room" not in hub.ably.attachments.get("room", {})
    [left] = watcher_link.take()
    assert [p["action"] for p in left["presence"]] == [LEAVE]
    publish(watcher, "room", "late")
    assert ticks(link.take()) == []


def test_a_resume_while_the_old_socket_is_open_moves_the_connection() -> None:
    """The client noticed the dead network first: its old socket is still open on the server."""
    clock = Clock()
    hub, phone, phone_link, watcher, watcher_link = setup(clock, "room")
    link = resume(phone)
    assert phone_link.closed_with == (1000, "the connection was resumed on another socket")
    phone.connection_lost(phone_link)  # the old socket's end does not end the connection
    assert not phone.held and phone.connection_key in hub.ably.connections
    send(phone, {"action": ATTACH, "channel": "room"})
    link.take()
    publish(watcher, "room", "1")
    assert ticks(link.take()) == ["1"]
    assert [frame["action"] for frame in watcher_link.take()] == [MESSAGE, 1]  # its message (echoed), its ACK: no leave


def test_a_client_that_stops_answering_pings_is_held_not_closed() -> None:
    clock = Clock()
    _, phone, phone_link, _, watcher_link = setup(clock, "room")
    phone.check_liveness(clock.now + 100)  # a ping after silence
    clock.now += 200
    phone.check_liveness(clock.now)
    *_, disconnected = phone_link.take()
    assert disconnected["action"] == DISCONNECTED and disconnected["error"]["code"] == 80003
    assert phone_link.closed_with is not None
    phone.connection_lost(phone_link)
    assert phone.held and not watcher_link.frames  # its member stays for the resume


def test_a_server_end_releases_the_held_connection() -> None:
    clock = Clock()
    hub, phone, phone_link, _, watcher_link = setup(clock, "room")
    phone.connection_lost(phone_link)
    phone.terminate(4009, "Connection limit reached")
    assert not phone.held and phone.connection_key not in hub.ably.connections
    assert [p["action"] for p in watcher_link.take()[0]["presence"]] == [LEAVE]


# -- over a real socket --------------------------------------------------------------------------------------------


async def test_a_client_resuming_with_its_connection_key_gets_what_it_missed(
    ably_emulator: RunningEmulator, wires: list[AblyWire | PusherWire]
) -> None:
    """The wire as an SDK sees it: ``resume=`` with the connection key gives the same connection id without an
    error, and the channel's re-attach is RESUMED, followed by the messages of both protocols published meanwhile,
    in order; the member never left."""
    phone = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=phone")
    watcher = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=watcher")
    wires += [phone, watcher]
    attached = await phone.attach("room")
    await watcher.attach("room")
    await phone.presence("room", {"action": ENTER})
    assert (await watcher.expect(PRESENCE))["presence"][0]["action"] == ENTER
    phone.ws.transport.abort()  # the network goes: no CLOSE, no close frame
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
    await back.send({"action": ATTACH, "channel": "room", "channelSerial": attached["channelSerial"]})
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
