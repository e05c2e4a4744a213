"""Conformance: pysher (the Python WebSocket client, protocol 6) against the real emulator.

Checklist item 93 (with items 1, 14, 16, 18, 21, 24, 26-28 and 42 as pysher sees them): connect, subscribe to
public, private and presence channels with locally signed auth, receive HTTP-published string data, answer a
server-initiated pusher:ping, and reconnect after pusher:error 4200.

pysher is thread-based (websocket-client's run_forever in its own thread), while the emulator runs in the test's
event loop: tests never block the loop; they start pysher, then poll its state with ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pysher  # type: ignore[import-untyped]
import pytest

from tests.conformance.wsclient import APP, publish
from tests.conftest import RunningEmulator, StartEmulator


async def eventually(predicate: Callable[[], bool], what: str, wait: float = 5.0) -> None:
    """Poll a condition set by pysher's threads, letting the emulator (same loop) run meanwhile."""
    deadline = time.monotonic() + wait
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {wait} s waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """What one pysher client received, as (channel, event, data); "" is the channel of connection events.

    It taps pysher's connection-level dispatch rather than Channel.bind: pysher registers a Channel only after
    sending pusher:subscribe, so a fast reply can arrive before any binding exists (and is dropped by pysher).
    pysher passes on only an event's data, so the frames as parsed (user_id included) are kept too, in ``frames``.
    list.append is atomic, so pysher's thread can record while the test reads.
    """

    def __init__(self, client: Any) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        dispatch = client.connection.event_handler
        parse = client.connection._parse  # a staticmethod pysher looks up on the connection for every message

        def parse_and_record(message: str) -> Any:
            frame = parse(message)
            if isinstance(frame, dict):
                self.frames.append(frame)
            return frame

        client.connection._parse = parse_and_record

        def tap(event: str, data: Any, channel: str) -> None:
            self.events.append((channel, event, data))
            dispatch(event, data, channel)

        client.connection.event_handler = tap
        for event in ("pusher:ping", "pusher:error"):
            client.connection.bind(event, self._connection_event, event)

    def _connection_event(self, data: Any, event: str) -> None:
        self.events.append(("", event, data))

    def of(self, channel: str, event: str) -> list[Any]:
        return [data for name, name_event, data in list(self.events) if name == channel and name_event == event]

    def frames_of(self, channel: str, event: str) -> list[dict[str, Any]]:
        return [frame for frame in list(self.frames) if frame.get("channel") == channel and frame["event"] == event]


OpenPysher = Callable[..., Awaitable[Any]]


@pytest.fixture
async def open_pysher(start_emulator: StartEmulator) -> AsyncIterator[OpenPysher]:
    """``await open_pysher(emulator, **options)``: a connected pysher.Pusher (protocol 6, locally signing auth).

    Depends on start_emulator so that the clients are disconnected before the emulator shuts down.
    """
    clients: list[tuple[Any, RunningEmulator]] = []

    async def open_client(target: RunningEmulator, **options: Any) -> Any:
        client = pysher.Pusher(
            target.app.key,
            custom_host="127.0.0.1",
            port=target.port,
            secure=False,
            secret=target.app.secret,
            auth_endpoint=None,
            log_level=logging.WARNING,
            reconnect_interval=0.5,
            **options,
        )
        clients.append((client, target))
        client.connect()  # starts pysher's thread; returns at once
        await eventually(lambda: client.connection.state == "connected", "pysher to connect")
        return client

    yield open_client
    # pysher's disconnect() closes the socket from the calling thread while its own thread sits in select() with a
    # 100 s timeout; when the caller happens to consume the close reply, that thread never wakes and join() times
    # out. So: tell pysher not to reconnect (what disconnect() sets), then end the TCP connections server-side.
    for client, _ in clients:
        client.connection.disconnect_called = True
        client.connection.needs_reconnect = False
    for target in {id(target): target for _, target in clients}.values():
        for connection in list(target.node.connections):
            if connection.transport is not None:
                connection.transport.abort()
    for client, _ in clients:
        thread = client.connection
        await eventually(lambda: not thread.is_alive(), "pysher's thread to end", 3.0)  # noqa: B023 (awaited here)
        thread._stop_timers()  # its scheduler thread would otherwise ping a closed socket later


async def subscribed(client: Any, recorder: Recorder, name: str) -> Any:
    """Subscribe the pysher way (it signs private and presence channels itself) and wait for the reply."""
    channel = client.subscribe(name)
    succeeded, failed = "pusher_internal:subscription_succeeded", "pusher:subscription_error"
    await eventually(lambda: bool(recorder.of(name, succeeded) or recorder.of(name, failed)), f"subscribing {name}")
    assert not recorder.of(name, failed), recorder.of(name, failed)
    return channel


async def test_pysher_public_private_presence_and_string_data(
    emulator: RunningEmulator, open_pysher: OpenPysher
) -> None:
    """Items 93, 1, 18, 21, 24, 26, 27: pysher connects with protocol 6, subscribes to public, private and presence
    channels (signing locally with the secret) and receives HTTP-published data as the string that was sent."""
    user = {"user_id": "py-1", "user_info": {"name": "Py"}}
    client = await open_pysher(emulator, user_data=user)
    recorder = Recorder(client)
    assert "protocol=6" in client.url and "client=Pysher" in client.url
    assert client.connection.socket_id in emulator.node.states[APP.app_id].peers
    names = ("pysher-public", "private-pysher", "presence-pysher")
    channels = [await subscribed(client, recorder, name) for name in names]
    (presence_data,) = recorder.of("presence-pysher", "pusher_internal:subscription_succeeded")
    assert json.loads(presence_data) == {"presence": {"ids": ["py-1"], "hash": {"py-1": {"name": "Py"}}, "count": 1}}
    assert recorder.of("private-pysher", "pusher_internal:subscription_succeeded") == ["{}"]
    bound: list[tuple[str, Any]] = []
    for channel in channels:
        channel.bind("news", lambda data, name=channel.name: bound.append((name, data)))
    for name in names:
        await publish(emulator, name, "news", f'{{"on":"{name}","n":1}}')
    await eventually(lambda: len(bound) == 3, "three news events through Channel.bind")
    for name, data in bound:
        assert isinstance(data, str)
        assert json.loads(data) == {"on": name, "n": 1}
    assert sorted(name for name, _ in bound) == sorted(names)


async def test_pysher_presence_members_and_client_events(emulator: RunningEmulator, open_pysher: OpenPysher) -> None:
    """Items 93, 28, 42, 43: a second pysher user's join reaches the first as member_added; a client event sent
    with pysher's channel.trigger reaches the other member with the sender's user_id, never the sender."""
    alice = await open_pysher(emulator, user_data={"user_id": "alice", "user_info": {}})
    bob = await open_pysher(emulator, user_data={"user_id": "bob", "user_info": {"role": "x"}})
    seen_by_alice, seen_by_bob = Recorder(alice), Recorder(bob)
    room = "presence-pysher-room"
    alice_channel = await subscribed(alice, seen_by_alice, room)
    await subscribed(bob, seen_by_bob, room)
    await eventually(lambda: bool(seen_by_alice.of(room, "pusher_internal:member_added")), "bob's join")
    (added,) = seen_by_alice.of(room, "pusher_internal:member_added")
    assert json.loads(added) == {"user_id": "bob", "user_info": {"role": "x"}}
    alice_channel.trigger("client-wave", {"from": "alice"})
    await eventually(lambda: bool(seen_by_bob.of(room, "client-wave")), "the client event")
    (wave,) = seen_by_bob.of(room, "client-wave")
    assert json.loads(wave) == {"from": "alice"}
    (frame,) = seen_by_bob.frames_of(room, "client-wave")
    assert frame.get("user_id") == "alice", frame
    assert not seen_by_bob.of(room, "pusher_internal:member_added")
    await asyncio.sleep(0.1)
    assert not seen_by_alice.of(room, "client-wave")


async def test_pysher_answers_server_pings(start_emulator: StartEmulator, open_pysher: OpenPysher) -> None:
    """Items 93, 14, 16: pysher pings on open (the server pongs); after activity_timeout of silence the server
    sends pusher:ping, pysher answers, and the connection survives rounds that together outlast pong_timeout."""
    target = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=1))
    client = await open_pysher(target)
    recorder = Recorder(client)
    socket_id = client.connection.socket_id
    await eventually(lambda: client.connection.pong_received, "the pong to pysher's opening ping", 2.0)
    await eventually(lambda: len(recorder.of("", "pusher:ping")) >= 2, "two server pings", 4.0)
    assert not recorder.of("", "pusher:error")
    assert client.connection.state == "connected"
    assert client.connection.socket_id == socket_id
    assert socket_id in target.node.states[APP.app_id].peers


async def test_pysher_reconnects_after_4200(emulator: RunningEmulator, open_pysher: OpenPysher) -> None:
    """Items 93, 9: a server shutdown sends pusher:error 4200 (then closes 4200); pysher reconnects at once,
    gets a new socket id, resubscribes (auto_sub) and receives events again."""
    client = await open_pysher(emulator, auto_sub=True)
    recorder = Recorder(client)
    await subscribed(client, recorder, "pysher-resub")
    old_socket_id = client.connection.socket_id
    for connection in list(emulator.node.connections):
        connection.shutdown()
    await eventually(
        lambda: client.connection.state == "connected" and client.connection.socket_id != old_socket_id,
        "pysher to reconnect",
    )
    assert [data["code"] for data in recorder.of("", "pusher:error")] == [4200]
    assert old_socket_id not in emulator.node.states[APP.app_id].peers
    await eventually(
        lambda: len(recorder.of("pysher-resub", "pusher_internal:subscription_succeeded")) == 2, "the resubscription"
    )
    await publish(emulator, "pysher-resub", "after", '"back"')
    await eventually(lambda: bool(recorder.of("pysher-resub", "after")), "an event after reconnecting")
    assert recorder.of("pysher-resub", "after") == ['"back"']
