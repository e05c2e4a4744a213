"""Bugs found hunting the connection lifecycle as an app sees it (restarts, shutdown, stalled clients, terminated
users), each shown against a real emulator on an ephemeral port."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from relay.protocol.signing import authorize_channel, sign_rest_request, user_auth
from tests.conformance.test_rfc6455 import TEXT, RawClient, frame, presence_member, still_served
from tests.conformance.wsclient import api_get, official_client
from tests.conftest import RunningEmulator, StartEmulator


async def member_removed(observer: RawClient, user_id: str) -> None:
    """The observer's next frame is ``user_id``'s member_removed, within a second (the abort would come at 3 s)."""
    async with asyncio.timeout(1.0):
        _, removed = await observer.read()
    assert json.loads(removed) == {
        "event": "pusher_internal:member_removed",
        "channel": "presence-room",
        "data": json.dumps({"user_id": user_id}, separators=(",", ":")),
    }


async def test_a_slow_consumer_cut_off_with_4100_leaves_presence_at_once(start_emulator: StartEmulator) -> None:
    """A client that stops reading is closed with 4100, but its session was released only when the close handshake
    ended, which such a client never answers: it stayed a presence member (and subscribed, and counted) until the
    abort CLOSE_TIMEOUT (3 s) later. Closed, it is gone: the other members hear member_removed at once."""
    emulator = await start_emulator(max_send_buffer=64 * 1024)
    observer = await presence_member(emulator, "presence-room", "obs")
    stalled = await presence_member(emulator, "presence-room", "stalled")  # never reads again
    _, added = await observer.read()
    assert json.loads(added)["event"] == "pusher_internal:member_added"
    peers = emulator.node.states["1"].peers.values()
    stalled_session = next(s for s in peers if s.subscriptions.get("presence-room") == "stalled")  # type: ignore[attr-defined]
    stalled.send(frame(TEXT, json.dumps({"event": "pusher:subscribe", "data": {"channel": "firehose"}}).encode()))
    await asyncio.sleep(0.1)
    app = emulator.app
    path = f"/apps/{app.app_id}/batch_events"
    batch = json.dumps({"batch": [{"name": "big", "channel": "firehose", "data": "x" * 9000}] * 10}).encode()
    async with httpx.AsyncClient(base_url=emulator.http_url) as http:
        for _ in range(2000):  # ~90 KB a request: the kernel's socket buffers fill, then the server's 64 KiB
            if stalled_session.closed:
                break
            query = sign_rest_request(app.key, app.secret, "POST", path, timestamp=int(time.time()), body=batch)
            response = await http.post(path, params=query, content=batch, headers={"Content-Type": "application/json"})
            assert response.status_code == 200, response.text
    assert stalled_session.closed, "the stalled reader was never cut off"
    await member_removed(observer, "stalled")
    assert await api_get(emulator, "/channels/presence-room/users") == {"users": [{"id": "obs"}]}
    assert "firehose" not in emulator.node.states["1"].channels
    await still_served(emulator)


async def test_terminate_user_connections_releases_a_client_that_does_not_answer(emulator: RunningEmulator) -> None:
    """pusher-http-python's ``terminate_user_connections`` closes the user's connections with 4009; one whose client
    does not answer the close (its tab frozen, its network stalled) stayed a presence member and online (the
    channel's users listed it) until the abort 3 s later. Once the request is answered, the user has left."""
    observer = await presence_member(emulator, "presence-room", "obs")
    user = await RawClient.upgrade(emulator, "/app/app-key?protocol=7")
    _, established = await user.read()
    socket_id = json.loads(json.loads(established)["data"])["socket_id"]
    user_data = json.dumps({"id": "mallory"})
    signin = {"auth": user_auth("app-key", "app-secret", socket_id, user_data), "user_data": user_data}
    user.send(frame(TEXT, json.dumps({"event": "pusher:signin", "data": signin}).encode()))
    channel_data = json.dumps({"user_id": "mallory"})
    auth = authorize_channel("app-key", "app-secret", socket_id, "presence-room", channel_data=channel_data)
    user.send(
        frame(TEXT, json.dumps({"event": "pusher:subscribe", "data": {"channel": "presence-room", **auth}}).encode())
    )
    _, added = await observer.read()
    assert json.loads(added) == {
        "event": "pusher_internal:member_added",
        "channel": "presence-room",
        "data": '{"user_id":"mallory","user_info":{}}',
    }
    # From here on the user's client reads nothing, so it never answers the close frame.
    await asyncio.to_thread(official_client(emulator).terminate_user_connections, "mallory")
    assert await api_get(emulator, "/channels/presence-room/users") == {"users": [{"id": "obs"}]}
    assert "mallory" not in emulator.node.states["1"].users
    await member_removed(observer, "mallory")
    await still_served(emulator)
