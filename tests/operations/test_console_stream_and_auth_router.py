"""The console's publish and event stream, and relay.web's auth router, as the docs promise them."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
from fastapi import FastAPI, Request

from relay import Relay, User
from relay.emulator import console
from relay.protocol.signing import sign_rest_request, user_auth
from relay.rules import ChannelRules
from relay.web import auth_router
from tests.conftest import StartEmulator
from tests.operations.support import APP, eventually, ws_client


async def test_console_publish_to_a_server_to_user_channel_reports_its_recipients(
    start_emulator: StartEmulator,
) -> None:
    """docs/emulator.md: the console's form publishes "through the same path as an HTTP API publish" and the page
    says "published … to N subscriber(s)": a publish to ``#server-to-user-alice`` reaches alice's signed-in
    connection, and the answer counts it (it counted channel subscribers only: 0)."""
    emulator = await start_emulator(app=APP)
    alice = await ws_client(emulator.ws_url())
    user_data = json.dumps({"id": "alice"})
    signature = user_auth(APP.key, APP.secret, alice.socket_id, user_data)
    await alice.send("pusher:signin", {"auth": signature, "user_data": user_data})
    await alice.expect("pusher:signin_success")
    async with httpx.AsyncClient(base_url=emulator.http_url, timeout=5) as http:
        body = {"app_id": APP.app_id, "channel": "#server-to-user-alice", "event": "note", "data": "hi"}
        answer = await http.post("/console/publish", json=body)
    assert answer.status_code == 200
    received = await alice.expect("note")
    assert received["channel"] == "#server-to-user-alice"
    assert answer.json() == {"ok": True, "recipients": 1}
    await alice.close()


async def test_a_console_viewer_that_stops_reading_is_cut_off_and_its_buffer_freed(
    start_emulator: StartEmulator,
) -> None:
    """docs/security.md: a client that stops reading is closed (sessions: 4100, then ``transport.abort`` after
    CLOSE_TIMEOUT; HTTP answers: ``write_eof`` then abort). A console viewer over MAX_STREAM_BUFFER is aborted and
    its buffer freed (``close()`` waited for a drain that a viewer that never reads never lets happen)."""
    emulator = await start_emulator(app=APP)
    viewer = socket.socket()
    viewer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    viewer.connect(("127.0.0.1", emulator.port))
    viewer.sendall(b"GET /console/events?app=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    streams = emulator.node.ops._streams
    await eventually(lambda: bool(streams.get(APP.app_id)), what="the console stream")
    transport = next(iter(streams[APP.app_id])).transport

    channels = [f"c{i:03d}-" + "x" * 150 for i in range(100)]
    raw = json.dumps({"name": "e" * 200, "channels": channels, "data": "d" * 2_000}).encode()
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(400):  # each request logs 100 events of ~1 KB to the console stream
            if APP.app_id not in streams:
                break
            path = f"/apps/{APP.app_id}/events"
            params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=raw)
            response = await http.post(emulator.http_url + path, params=params, content=raw)
            assert response.status_code == 200
    assert APP.app_id not in streams, "the stalled viewer was never dropped"
    assert transport.is_closing()
    # The emulator's other slow-reader paths abort after CLOSE_TIMEOUT (3 s); give it that and a margin.
    await asyncio.sleep(4.0)
    try:
        assert transport.get_write_buffer_size() == 0, (
            f"{transport.get_write_buffer_size()} bytes are still held for a viewer that stopped reading "
            f"(MAX_STREAM_BUFFER {console.MAX_STREAM_BUFFER}): the connection was closed, not aborted"
        )
    finally:
        viewer.close()


async def test_the_auth_router_reads_json_whatever_the_case_of_its_media_type() -> None:
    """RFC 9110 §8.3.1: a media type's type and subtype are case-insensitive: a JSON body sent as
    ``Application/JSON`` is read as JSON (it was parsed as a form: "socket_id is required")."""
    relay = Relay.from_url("emulator://key:secret@127.0.0.1:1/apps/1")
    rules = ChannelRules()
    rules.add("private-news", lambda user: True)

    def current_user(request: Request) -> User | None:
        return User("bob", {})

    app = FastAPI()
    app.include_router(auth_router(relay, rules, current_user))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        body = json.dumps({"socket_id": "1.2", "channel_name": "private-news"})
        response = await client.post("/pusher/auth", content=body, headers={"content-type": "Application/JSON"})
    assert response.status_code == 200, response.text
