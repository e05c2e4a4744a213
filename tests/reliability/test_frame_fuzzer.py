"""Random frames against a running server: it never crashes, answers only with well-formed frames, and never closes
a connection with a code it must not use."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from relay.emulator.config import EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.protocol.signing import channel_auth
from tests.conftest import TEST_APP

EVENTS = [
    "pusher:subscribe",
    "pusher:unsubscribe",
    "pusher:ping",
    "pusher:pong",
    "pusher:signin",
    "pusher:unknown",
    "client-typing",
    "client-" + "x" * 300,
    "",
]
CHANNELS = ["news", "private-a", "presence-a", "private-encrypted-a", "#server-to-user-1", "cache-a", "x" * 201, "a b"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
subscribe_data = st.fixed_dictionaries(
    {"channel": st.sampled_from(CHANNELS) | json_values},
    optional={"auth": st.text(max_size=80) | json_values, "channel_data": st.text(max_size=80) | json_values},
)
frames = st.one_of(
    st.fixed_dictionaries(
        {"event": st.sampled_from(EVENTS) | json_values},
        optional={"data": subscribe_data | json_values, "channel": st.sampled_from(CHANNELS) | json_values},
    ).map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """An emulator on its own thread and loop, so the fuzzer can use the synchronous websockets client."""
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    node = EmulatorNode(EmulatorConfig(apps=(TEST_APP,)))
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start_server(node, sock=sock))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield sock.getsockname()[1]
    asyncio.run_coroutine_threadsafe(node.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def open_client(port: int) -> tuple[ClientConnection, str]:
    ws = connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7", open_timeout=5)
    established = json.loads(ws.recv(timeout=5))
    return ws, json.loads(established["data"])["socket_id"]


def well_formed(frame: Any) -> None:
    message = json.loads(frame)
    assert isinstance(message, dict)
    assert isinstance(message["event"], str)
    assert "data" in message
    if "channel" in message:
        assert isinstance(message["channel"], str)
    if message["event"] == "pusher:error":
        assert isinstance(message["data"], dict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=1, max_size=8))
def test_random_frames_never_break_the_server(server: int, batch: list[str | bytes]) -> None:
    ws, socket_id = open_client(server)
    auth = channel_auth("app-key", "app-secret", socket_id, "private-a")
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "private-a", "auth": auth}}))
    try:
        for frame in batch:
            ws.send(frame)
        ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
        while True:
            reply = ws.recv(timeout=5)
            well_formed(reply)
            if json.loads(reply) == {"event": "pusher:pong", "data": {}}:
                break
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd is not None else None
        assert code is not None
        assert code < 4300, f"closed with {code}, which pusher-js treats as a refusal"
    finally:
        ws.close()
    sentinel, _ = open_client(server)
    sentinel.send(json.dumps({"event": "pusher:ping", "data": {}}))
    assert json.loads(sentinel.recv(timeout=5)) == {"event": "pusher:pong", "data": {}}
    sentinel.close()
