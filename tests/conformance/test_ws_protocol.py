"""Conformance: the Pusher WebSocket protocol, spoken by a raw ``websockets`` client against the real emulator.

Checklist items (reference §8): 1-18 (connection, liveness, errors; 19 and 20 are covered elsewhere), 21-25 and
34-41 (subscriptions), 42 and 44-47 (client events). Presence and users: test_ws_presence_users.py. pysher:
test_pysher.py.

Every frame read goes through :func:`check_frame`, so the invariants of items 9 and 18 (an error's data is an object,
a frame with a channel has data) and item 11 (no close code >= 4300) are checked by every test, not only by the ones
named after them.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace

import httpx
import nacl.secret
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import App
from relay.protocol.signing import channel_auth, encrypted_shared_secret, sign_rest_request
from tests.conformance.test_rfc6455 import PING, TEXT, RawClient
from tests.conformance.wsclient import (
    APP,
    VECTOR_APP,
    VECTOR_KEY,
    VECTOR_SECRET,
    WS_OPTIONS,
    Client,
    Connect,
    Frame,
    api_get,
    assert_serves_others,
    expect_closed,
    expect_fatal,
    official_client,
    publish,
    recv_json,
    unique,
)
from tests.conftest import RunningEmulator, StartEmulator

SOCKET_ID = re.compile(r"^\d+\.\d+$")


# == Connection (items 1-9) ===========================================================================================


@pytest.mark.parametrize("query", ["protocol=5", "protocol=6", "protocol=7", ""])
async def test_supported_protocols_get_connection_established(emulator: RunningEmulator, query: str) -> None:
    """Items 1, 2: protocols 5-7 (and a missing protocol, taken as 7) upgrade; the first frame is
    connection_established with string data holding a socket_id and an activity_timeout > 0."""
    async with ws_connect(emulator.ws_url(query=query), **WS_OPTIONS) as ws:
        frame = await recv_json(ws)
        assert frame["event"] == "pusher:connection_established"
        assert isinstance(frame["data"], str)
        data = json.loads(frame["data"])
        assert SOCKET_ID.match(data["socket_id"])
        assert isinstance(data["activity_timeout"], int) and not isinstance(data["activity_timeout"], bool)
        assert data["activity_timeout"] > 0


async def test_socket_ids_are_unique(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 2: socket ids match ^\\d+\\.\\d+$ and never repeat, also after earlier sockets closed."""
    ids = []
    for _ in range(12):
        client = await connect(emulator)
        ids.append(client.socket_id)
        if len(ids) % 3 == 0:
            await client.ws.close()
    assert all(SOCKET_ID.match(socket_id) for socket_id in ids)
    assert len(set(ids)) == len(ids)


async def test_unknown_query_parameters_are_ignored(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 4: pusher-js's client/version/flash and anything else in the query are ignored."""
    client = await connect(emulator, query="protocol=7&client=js&version=8.6.0&flash=false&foo=bar&empty=")
    assert SOCKET_ID.match(client.socket_id)
    await client.subscribed("public-room")
    await client.sync()


async def test_path_prefix(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 3: with a configured path prefix the endpoint is {prefix}/app/{key}; another prefix is a 4005, and the
    connection on the right one still gets what is published (through the HTTP API under the same prefix)."""
    target = await start_emulator(path_prefix="/ws")
    ws = await ws_connect(f"ws://127.0.0.1:{target.port}/ws/app/{APP.key}?protocol=7", **WS_OPTIONS)
    try:
        frame = await recv_json(ws)
        assert frame["event"] == "pusher:connection_established"
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "prefixed"}}))
        frame = await recv_json(ws)
        assert frame["event"] == "pusher_internal:subscription_succeeded"
        async with ws_connect(f"ws://127.0.0.1:{target.port}/other/app/{APP.key}", **WS_OPTIONS) as wrong:
            await expect_fatal(wrong, 4005)
        body = json.dumps({"name": "after", "channel": "prefixed", "data": "still"}).encode()
        path = f"/ws/apps/{APP.app_id}/events"
        params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=body)
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.post(f"{target.http_url}{path}", params=params, content=body)
        assert (response.status_code, response.json()) == (200, {})
        assert await recv_json(ws) == {"event": "after", "channel": "prefixed", "data": "still"}
    finally:
        await ws.close()


@pytest.mark.parametrize("protocol", ["4", "8", "0", "70"])
async def test_unsupported_protocol_is_4007(emulator: RunningEmulator, connect: Connect, protocol: str) -> None:
    """Items 8, 9: a protocol outside 5-7 gets pusher:error 4007 after the upgrade, then close 4007."""
    async with ws_connect(emulator.ws_url(query=f"protocol={protocol}"), **WS_OPTIONS) as ws:
        message = await expect_fatal(ws, 4007)
        assert protocol in message
    await assert_serves_others(emulator, connect)


@pytest.mark.parametrize("protocol", ["abc", "7.0", "-7", ""])
async def test_malformed_protocol_is_4006(emulator: RunningEmulator, connect: Connect, protocol: str) -> None:
    """Items 8, 9: a malformed version string gets 4006; the server keeps serving others."""
    async with ws_connect(emulator.ws_url(query=f"protocol={protocol}"), **WS_OPTIONS) as ws:
        message = await expect_fatal(ws, 4006)
        assert "version" in message.lower()
    await assert_serves_others(emulator, connect)


async def test_unknown_key_is_4001(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 5, 9: an unknown key is refused after the upgrade (not with an HTTP error) with 4001."""
    async with ws_connect(emulator.ws_url(key="no-such-key"), **WS_OPTIONS) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        message = await expect_fatal(ws, 4001)
        assert "does not exist" in message
    await assert_serves_others(emulator, connect)


async def test_disabled_app_is_4003(start_emulator: StartEmulator, connect: Connect) -> None:
    """Items 6, 9: a disabled app gets 4003; the enabled app on the same server keeps working."""
    disabled = App(app_id="2", key="disabled-key", secret="disabled-secret", enabled=False)
    target = await start_emulator(app=APP, apps=(disabled,))
    async with ws_connect(target.ws_url(key="disabled-key"), **WS_OPTIONS) as ws:
        message = await expect_fatal(ws, 4003)
        assert "disabled" in message.lower()
    await assert_serves_others(target, connect)


async def test_connection_quota_is_4004(start_emulator: StartEmulator, connect: Connect) -> None:
    """Items 7, 9: over max_connections the socket gets 4004; once one closes there is room again."""
    target = await start_emulator(app=replace(APP, max_connections=2))
    first = await connect(target)
    second = await connect(target)
    async with ws_connect(target.ws_url(), **WS_OPTIONS) as ws:
        message = await expect_fatal(ws, 4004)
        assert "quota" in message.lower()
    await first.ws.close()
    for _ in range(50):  # the server releases the slot when it sees the close
        if len(target.node.states[APP.app_id].peers) < 2:
            break
        await asyncio.sleep(0.02)
    third = await connect(target)
    await third.sync()
    await second.sync()


@pytest.mark.parametrize("path", ["/foo", "/app", "/app/", f"/app/{APP.key}/extra", f"/apps/{APP.key}"])
async def test_bad_path_is_4005_after_upgrade(emulator: RunningEmulator, connect: Connect, path: str) -> None:
    """Items 9: a WebSocket on an unknown path is upgraded, then refused with pusher:error 4005 and close 4005."""
    async with ws_connect(f"ws://127.0.0.1:{emulator.port}{path}?protocol=7", **WS_OPTIONS) as ws:
        assert ws.response is not None and ws.response.status_code == 101
        message = await expect_fatal(ws, 4005)
        assert "path" in message.lower()
    await assert_serves_others(emulator, connect)


# == Liveness (items 14-17) =========================================================================================


@pytest.mark.parametrize("data", [{}, "", None], ids=["object", "empty-string", "absent"])
async def test_pusher_ping_gets_pong(emulator: RunningEmulator, connect: Connect, data: object) -> None:
    """Item 14: pusher:ping with data {} (pusher-js) or "" (pysher) gets pusher:pong at once (within 3 s here, room
    for a loaded machine)."""
    client = await connect(emulator)
    started = time.monotonic()
    await client.send("pusher:ping", data)
    frame = await client.expect("pusher:pong", wait=3.0)
    assert time.monotonic() - started < 3.0
    assert "data" in frame


async def test_ws_ping_frame_gets_pong_frame(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 15: an RFC 6455 ping frame is answered with a pong frame (carrying the same payload)."""
    client = await connect(emulator)
    for payload in (b"", b"hello"):
        pong_waiter = await client.ws.ping(payload)
        latency = await asyncio.wait_for(pong_waiter, 3.0)
        assert latency < 3.0
    await client.sync()


async def test_server_pings_after_silence_and_a_pong_keeps_the_socket(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Item 16: after activity_timeout of silence the server sends pusher:ping; answering keeps the socket."""
    target = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=1))
    started = time.monotonic()  # before the server opens the connection and starts its timer
    client = await connect(target)
    assert client.activity_timeout == 1
    for _ in range(2):
        frame = await client.expect("pusher:ping", wait=5.0)
        assert "data" in frame
        assert time.monotonic() - started >= 0.9, "pinged before activity_timeout"
        await client.send("pusher:pong", {})
        started = time.monotonic()
    await client.sync()  # still open after two answered rounds, though together they outlast pong_timeout


async def test_unanswered_ping_closes_4201(start_emulator: StartEmulator, connect: Connect) -> None:
    """Items 9, 16: a server ping (pusher:ping and a WebSocket ping) that gets no reply within pong_timeout ends in
    pusher:error 4201, close 4201. The silent client is a raw socket: websockets would answer the WebSocket ping."""
    target = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=1))
    client = await RawClient.open(target)
    watcher = await connect(target)
    assert {await client.read(), await client.read()} == {(PING, b""), (TEXT, b'{"event":"pusher:ping","data":{}}')}
    await watcher.expect("pusher:ping", wait=3.0)
    await watcher.send("pusher:pong", {})
    opcode, payload = await client.read()
    assert (opcode, json.loads(payload)["event"]) == (TEXT, "pusher:error")
    assert json.loads(payload)["data"] == {"code": 4201, "message": "Pong reply not received"}
    assert await client.close_code() == 4201
    # The other socket answers its pings and is never closed.
    await watcher.send("pusher:ping", {})
    while (frame := await watcher.recv(wait=2.0))["event"] == "pusher:ping":
        await watcher.send("pusher:pong", {})
    assert frame["event"] == "pusher:pong"


async def test_any_inbound_frame_resets_the_inactivity_timer(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 17: any frame from the client (not only pusher:ping) counts as activity; silence then brings a ping."""
    # A frame every 0.4 s against a 2 s timeout: the test may be descheduled for a second without being idle.
    target = await start_emulator(app=replace(APP, activity_timeout=2, pong_timeout=1))
    client = await connect(target)
    seen: list[Frame] = []
    kinds = itertools.cycle(["pong", "bad-json", "ws-ping", "subscribe", "binary"])
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        kind = next(kinds)
        if kind == "pong":
            await client.send("pusher:pong", {})
        elif kind == "bad-json":
            await client.ws.send("{not json")
        elif kind == "ws-ping":
            await client.ws.ping()
        elif kind == "subscribe":
            await client.send("pusher:subscribe", {"channel": unique("busy-")})
        else:
            await client.ws.send(b'{"event":"pusher:pong","data":{}}')
        try:
            while True:
                seen.append(await client.recv(wait=0.4))
        except TimeoutError:
            pass
    assert not [frame for frame in seen if frame["event"] == "pusher:ping"], "pinged although the client was active"
    assert {frame["event"] for frame in seen} <= {"pusher:error", "pusher_internal:subscription_succeeded"}
    await client.expect("pusher:ping", wait=4.0)


async def test_binary_frame_counts_as_activity_after_a_server_ping(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Item 17 (§1.5 "count **any** inbound frame as activity"): a client that keeps sending frames after the server's
    pusher:ping, binary ones included, is active and is not closed 4201."""
    # A frame every 0.25 s against a 2 s pong_timeout: the test may be descheduled for a second without being idle.
    target = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=2))
    client = await connect(target)
    await client.expect("pusher:ping", wait=3.0)
    deadline = time.monotonic() + 3.5  # past pong_timeout (2 s) plus the sweeper's interval
    closed: int | None = None
    try:
        while time.monotonic() < deadline:
            await client.ws.send(b'{"event":"pusher:pong","data":{}}')  # a binary frame every 0.25 s
            frame = await client.recv(wait=1.0)  # "Binary frames are not supported": non-fatal, code null
            assert frame["event"] == "pusher:error" and frame["data"]["code"] is None, frame
            await asyncio.sleep(0.25)
    except ConnectionClosed:
        closed = client.ws.close_code
    assert closed is None, f"closed {closed} although the client sent a frame every 0.25 s after the ping"


async def test_every_client_is_pinged_with_control_frames_too(
    start_emulator: StartEmulator, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 16 with §1.5 "Server-side liveness": after activity_timeout of silence send pusher:ping and a WS ping, as
    hosted Pusher pings RFC 6455 clients (reverb#224: a Flutter SDK that answers only control frames was pruned; a
    browser answers them even while its page's script is busy). The client here has sent no control frame and
    answers WS pings (websockets does so on its own) but, like that SDK, ignores pusher:ping: it stays connected (it
    gets both pings; either answer does)."""
    caplog.set_level(logging.DEBUG, logger="websockets.client")  # websockets logs each frame it gets at DEBUG
    target = await start_emulator(app=replace(APP, activity_timeout=1, pong_timeout=1))
    client = await connect(target)
    frames: list[Frame] = []
    closed: int | None = None
    try:
        async with asyncio.timeout(3.5):  # activity_timeout + pong_timeout + margin
            while True:
                frames.append(await client.recv(wait=5.0))  # read, but never answer pusher:ping with text
    except TimeoutError:
        pass
    except ConnectionClosed:
        closed = client.ws.close_code
    assert closed is None, f"a client answering WS pings was closed {closed}; frames seen: {frames}"
    assert {"event": "pusher:ping", "data": {}} in frames
    ws_pings = [r for r in caplog.records if r.name == "websockets.client" and r.getMessage().startswith("< PING")]
    assert ws_pings, "the server sent no WS ping"


# == Errors that must not close (items 10-13) =========================================================================


NON_FATAL_INPUTS: dict[str, tuple[str | bytes, bool, str]] = {
    # name: (payload, send as text, fragment of the error message)
    "invalid-json": ("{not json", True, "json"),
    "json-array": ('[{"event":"pusher:ping"}]', True, "object"),
    "json-string": ('"pusher:ping"', True, "object"),
    "no-event": ('{"data":{}}', True, "event"),
    "non-string-channel": ('{"event":"client-x","channel":5,"data":{}}', True, "channel"),
    "unknown-pusher-event": ('{"event":"pusher:frobnicate","data":{}}', True, "pusher:frobnicate"),
    "subscribe-data-not-object": ('{"event":"pusher:subscribe","data":["x"]}', True, "object"),
    "binary-frame": (b'{"event":"pusher:ping","data":{}}', False, "binary"),
}


@pytest.mark.parametrize("name", list(NON_FATAL_INPUTS))
async def test_bad_input_gets_a_non_fatal_error(emulator: RunningEmulator, connect: Connect, name: str) -> None:
    """Items 10, 12, 13: malformed input gets a code-null pusher:error; the socket stays open and subscribed,
    and the server keeps serving another client meanwhile."""
    payload, as_text, fragment = NON_FATAL_INPUTS[name]
    client = await connect(emulator)
    bystander = await connect(emulator)
    channel = unique("bad-input-")
    await client.subscribed(channel)
    await bystander.subscribed(channel)
    # websockets sends bytes as a binary frame unless told otherwise; text=True gives a text frame of raw bytes.
    await client.ws.send(payload, text=as_text)
    await client.expect_error(None, fragment)
    await client.sync()
    await publish(emulator, channel, "after-bad-input", '"still here"')
    assert (await client.expect("after-bad-input", channel))["data"] == '"still here"'
    assert (await bystander.expect("after-bad-input", channel))["data"] == '"still here"'
    await assert_serves_others(emulator, connect)


async def test_invalid_utf8_fails_only_that_socket_with_1007(emulator: RunningEmulator, connect: Connect) -> None:
    """RFC 6455 §8.1 (Autobahn 6.x): invalid UTF-8 in a text message fails the connection with 1007; the server
    keeps serving everyone else."""
    client = await connect(emulator)
    bystander = await connect(emulator)
    await client.ws.send(b'{"event":"pusher:ping","data":"\xff\xfe"}', text=True)
    await expect_closed(client.ws, 1007)
    await bystander.sync()
    await assert_serves_others(emulator, connect)


async def test_frame_over_the_transport_limit_closes_only_that_socket(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Items 9, 11, 13: a frame over max_frame_bytes ends that WebSocket with 1009 (RFC 6455), never a 43xx code,
    after a pusher:error with the same code saying why; the server and its other sockets are unaffected."""
    target = await start_emulator(max_frame_bytes=32_768)
    client = await connect(target)
    bystander = await connect(target)
    await client.ws.send(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 40_000}}))
    await client.expect_error(1009, "Message too large: this server accepts WebSocket messages up to 32768 bytes")
    await expect_closed(client.ws, 1009)
    await bystander.sync()
    await assert_serves_others(target, connect)


async def test_channel_frames_carry_data_and_no_close_code_is_43xx(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Items 10, 11, 18: a tour of every channel frame type (all checked by check_frame) and of the non-fatal
    43xx errors, none of which closes the socket."""
    target = await start_emulator(app=replace(APP, subscription_count=True))
    alice = await connect(target)
    bob = await connect(target)
    seen: set[str] = set()
    every_kind = {
        "pusher_internal:subscription_succeeded",
        "pusher_internal:subscription_count",
        "pusher_internal:member_added",
        "pusher_internal:member_removed",
        "pusher:cache_miss",
        "pusher:subscription_error",
        "pusher:error",
        "client-hi",
        "client-flood",
        "server-event",
    }

    async def drain(client: Client, until: set[str] = every_kind) -> None:
        """Reads until the client is quiet for 0.2 s; at the end, until every kind has come too (within 10 s): a
        loaded machine's pause of 0.2 s is not the end of the frames."""
        deadline = time.monotonic() + 10
        while True:
            try:
                seen.add((await client.recv(wait=0.2))["event"])
            except TimeoutError:
                if until <= seen or time.monotonic() > deadline:
                    return

    await alice.send_subscribe("cache-tour")
    await alice.send_subscribe("private-tour")
    await bob.send_subscribe("private-tour")
    await alice.send_subscribe("presence-tour", '{"user_id":"a"}')
    await bob.send_subscribe("presence-tour", '{"user_id":"b"}')
    await alice.send("pusher:subscribe", {"channel": "private-tour-denied", "auth": "app-key:bad"})
    await drain(alice, set())
    await drain(bob, set())
    await alice.send("client-hi", {"n": 1}, channel="private-tour")
    for _ in range(12):  # over the rate limit: 4301 without a close
        await bob.send("client-flood", {}, channel="presence-tour")
    await publish(target, "private-tour", "server-event", "{}")
    await bob.send("pusher:unsubscribe", {"channel": "presence-tour"})
    await asyncio.gather(drain(alice), drain(bob))
    assert every_kind <= seen
    await alice.sync()
    await bob.sync()


# == Subscriptions (items 21-25, 34-41) ==============================================================================


@pytest.mark.parametrize("auth", ["", None], ids=["empty-auth", "no-auth"])
async def test_public_subscribe(emulator: RunningEmulator, connect: Connect, auth: str | None) -> None:
    """Item 21: public channels need no auth: auth "" (pusher-js) or none gets subscription_succeeded, data "{}"."""
    client = await connect(emulator)
    data = {"channel": "public-news"} if auth is None else {"channel": "public-news", "auth": auth}
    await client.send("pusher:subscribe", data)
    frame = await client.expect("pusher_internal:subscription_succeeded", "public-news")
    assert frame["data"] == "{}"


@pytest.mark.parametrize(
    "channel",
    ["x" * 201, "has space", "slash/channel", "dollar$", "ümlaut", "#foo", "#server-to-user-", ""],
    ids=["201-chars", "space", "slash", "dollar", "non-ascii", "hash", "empty-server-to-user", "empty"],
)
async def test_invalid_channel_name_is_refused(emulator: RunningEmulator, connect: Connect, channel: str) -> None:
    """Items 22, 23: over-long names, illegal characters and '#' channels get pusher:subscription_error status 400;
    the socket stays open and the server keeps serving others."""
    client = await connect(emulator)
    await client.send("pusher:subscribe", {"channel": channel, "auth": ""})
    frame = await client.expect("pusher:subscription_error")
    assert frame["data"]["status"] == 400, frame
    assert isinstance(frame["data"]["error"], str) and frame["data"]["type"]
    assert frame["channel"] == channel
    await client.sync()
    await client.subscribed("valid-after-invalid")
    await assert_serves_others(emulator, connect)


async def test_longest_and_widest_channel_name_is_accepted(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 22: 200 characters from the whole allowed set [A-Za-z0-9_-=@,.;] subscribe fine."""
    client = await connect(emulator)
    name = ("Az09_-=@,.;" * 20)[:200]
    await client.subscribed(name)
    await publish(emulator, name, "long", "1")
    assert (await client.expect("long", name))["data"] == "1"


async def test_private_subscribe_with_vector_credentials(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 24: key:HMAC(secret, socket_id:channel), the algorithm that yields the published vector, authorizes."""
    assert channel_auth(VECTOR_KEY, VECTOR_SECRET, "1234.1234", "private-foobar") == (
        f"{VECTOR_KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    target = await start_emulator(app=VECTOR_APP)
    client = await connect(target)
    frame = await client.subscribed("private-foobar")
    assert frame["data"] == "{}"
    await publish(target, "private-foobar", "secret-news", '{"a":1}')
    assert (await client.expect("secret-news", "private-foobar"))["data"] == '{"a":1}'


async def test_private_subscribe_signed_by_pusher_http_python(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 24 with an official library: pusher.Pusher.authenticate's token authorizes; its trigger delivers."""
    client = await connect(emulator)
    official = official_client(emulator)
    auth = official.authenticate(channel="private-official", socket_id=client.socket_id)
    await client.send("pusher:subscribe", {"channel": "private-official", **auth})
    await client.expect("pusher_internal:subscription_succeeded", "private-official")
    await asyncio.to_thread(official.trigger, "private-official", "from-python", {"x": 1})
    frame = await client.expect("from-python", "private-official")
    assert json.loads(frame["data"]) == {"x": 1}


@pytest.mark.parametrize("channel", ["private-with-data", "private-encrypted-with-data"])
async def test_private_auth_signed_with_channel_data(emulator: RunningEmulator, connect: Connect, channel: str) -> None:
    """Item 24: an app that passes user data for every channel gets a private channel's auth signed over
    ``socket_id:channel:channel_data`` (pusher-http-python's ``authenticate(..., custom_data)``, as
    pusher-http-node's ``authorizeChannel(socketId, channel, data)``), and pusher-js then sends that
    ``channel_data``: the subscription succeeds. The same signature without the ``channel_data`` it covers is
    refused (401), and so is ``channel_data`` the signature does not cover."""
    client = await connect(emulator)
    official = official_client(emulator)
    auth = official.authenticate(channel="private-with-data", socket_id=client.socket_id, custom_data={"user_id": 7})
    if channel != "private-with-data":  # the official client also wants a master key here: sign the same way
        auth["auth"] = channel_auth("app-key", "app-secret", client.socket_id, channel, auth["channel_data"])
    await client.send("pusher:subscribe", {"channel": channel, "auth": auth["auth"]})
    refused = await client.expect("pusher:subscription_error", channel)
    assert (refused["data"]["type"], refused["data"]["status"]) == ("AuthError", 401)
    plain = channel_auth("app-key", "app-secret", client.socket_id, channel)
    await client.send("pusher:subscribe", {"channel": channel, "auth": plain, "channel_data": auth["channel_data"]})
    refused = await client.expect("pusher:subscription_error", channel)
    assert (refused["data"]["type"], refused["data"]["status"]) == ("AuthError", 401)
    await client.send("pusher:subscribe", {"channel": channel, **auth})
    await client.expect("pusher_internal:subscription_succeeded", channel)
    await publish(emulator, channel, "after", "{}")
    assert (await client.expect("after", channel))["data"] == "{}"
    await assert_serves_others(emulator, connect)


BAD_AUTHS: dict[str, Callable[[str, str], dict[str, object]]] = {
    "missing": lambda socket_id, channel: {},
    "empty": lambda socket_id, channel: {"auth": ""},
    "bad-signature": lambda socket_id, channel: {"auth": "app-key:" + "0" * 64},
    "wrong-secret": lambda socket_id, channel: {"auth": channel_auth("app-key", "other-secret", socket_id, channel)},
    "wrong-key-prefix": lambda socket_id, channel: {
        "auth": channel_auth("other-key", "app-secret", socket_id, channel)
    },
    "other-socket": lambda socket_id, channel: {"auth": channel_auth("app-key", "app-secret", "1.999999", channel)},
    "other-channel": lambda socket_id, channel: {
        "auth": channel_auth("app-key", "app-secret", socket_id, channel + "-x")
    },
    "no-colon": lambda socket_id, channel: {"auth": "app-key"},
    "not-a-string": lambda socket_id, channel: {"auth": 12345},
}


@pytest.mark.parametrize("channel", ["private-room", "private-encrypted-room"])
@pytest.mark.parametrize("case", list(BAD_AUTHS))
async def test_bad_private_auth_is_refused(
    emulator: RunningEmulator, connect: Connect, case: str, channel: str
) -> None:
    """Items 25, 34: a bad, missing or foreign signature, or the wrong key prefix, gets pusher:subscription_error
    {type: AuthError, status: 401}; no delivery follows, the socket stays open and can then subscribe properly, and
    the server keeps serving others."""
    client = await connect(emulator)
    await client.send("pusher:subscribe", {"channel": channel, **BAD_AUTHS[case](client.socket_id, channel)})
    frame = await client.expect("pusher:subscription_error", channel)
    assert frame["data"]["type"] == "AuthError"
    assert frame["data"]["status"] == 401
    await publish(emulator, channel, "leak", "{}")
    await client.sync()
    await client.subscribed(channel)
    await assert_serves_others(emulator, connect)


async def test_encrypted_channel_is_authorized_like_private_and_forwarded_verbatim(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """Item 34: private-encrypted-* takes a private-style signature (the shared secret is not signed), and the
    server forwards the ciphertext untouched: it decrypts with the shared secret derived from the master key."""
    master_key = bytes(range(32))
    channel = "private-encrypted-vault"
    receiver = await connect(emulator)
    official = official_client(emulator, encryption_master_key_base64=base64.b64encode(master_key).decode())
    auth = official.authenticate(channel=channel, socket_id=receiver.socket_id)
    assert auth["shared_secret"].decode() == encrypted_shared_secret(channel, master_key)
    await receiver.send("pusher:subscribe", {"channel": channel, "auth": auth["auth"]})
    await receiver.expect("pusher_internal:subscription_succeeded", channel)
    # An arbitrary opaque payload is never inspected or re-encoded.
    opaque = '{"nonce":"AAAA","ciphertext":"not really encrypted \\u00e9 é"}'
    await publish(emulator, channel, "opaque", opaque)
    assert (await receiver.expect("opaque", channel))["data"] == opaque
    # A real NaCl payload from pusher-http-python decrypts on the receiving side.
    await asyncio.to_thread(official.trigger, channel, "sealed", {"secret": "hi"})
    frame = await receiver.expect("sealed", channel)
    envelope = json.loads(frame["data"])
    box = nacl.secret.SecretBox(base64.b64decode(encrypted_shared_secret(channel, master_key)))
    plain = box.decrypt(base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"]))
    assert json.loads(plain) == {"secret": "hi"}


async def test_duplicate_subscribe_is_idempotent(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 35: subscribing again gets hosted Pusher's code-null "Existing subscription" error, and each event is
    still delivered once."""
    client = await connect(emulator)
    await client.subscribed("private-dupe")
    for _ in range(2):
        await client.send_subscribe("private-dupe")
        await client.expect_error(None, "Existing subscription to channel private-dupe")
    await publish(emulator, "private-dupe", "once", "1")
    await client.expect("once", "private-dupe")
    await client.sync()
    assert await api_get(emulator, "/channels/private-dupe") == {"occupied": True}
    # Counted once (the API answers info=subscription_count only for apps that count subscriptions).
    assert emulator.node.states[APP.app_id].subscription_count("private-dupe") == 1


async def test_unsubscribe_stops_delivery_without_reply(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 36: pusher:unsubscribe stops delivery, gets no reply, and is ignored for unknown channels."""
    client = await connect(emulator)
    await client.subscribed("news")
    await client.subscribed("private-news")
    await client.send("pusher:unsubscribe", {"channel": "news"})
    await client.send("pusher:unsubscribe", {"channel": "never-subscribed"})
    await client.send("pusher:unsubscribe", {"channel": "private-news"})
    await client.sync()  # no reply to any of the three
    await publish(emulator, "news", "gone", "{}")
    await publish(emulator, "private-news", "gone", "{}")
    await client.sync()
    assert await api_get(emulator, "/channels") == {"channels": {}}
    await client.subscribed("news")  # and it can come back
    await publish(emulator, "news", "back", "{}")
    await client.expect("back", "news")


async def test_disconnect_clears_all_membership(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 37: after a disconnect, the channels are gone (HTTP channels list empty) and counts return to 0."""
    client = await connect(emulator)
    await client.subscribed("lobby")
    await client.subscribed("private-lobby")
    await client.subscribed("presence-lobby", '{"user_id":"u1"}')
    channels = await api_get(emulator, "/channels")
    assert set(channels["channels"]) == {"lobby", "private-lobby", "presence-lobby"}
    await client.ws.close()
    for _ in range(100):
        channels = await api_get(emulator, "/channels")
        if not channels["channels"]:
            break
        await asyncio.sleep(0.02)
    assert channels == {"channels": {}}
    assert await api_get(emulator, "/channels/presence-lobby/users") == {"users": []}
    assert await api_get(emulator, "/channels/lobby") == {"occupied": False}
    assert emulator.node.states[APP.app_id].subscription_count("lobby") == 0


async def test_subscription_count_events(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 38: with subscription_count on, subscribers get pusher_internal:subscription_count whenever the count
    changes, on public and private channels but never on presence channels."""
    target = await start_emulator(app=replace(APP, subscription_count=True))
    alice = await connect(target)
    bob = await connect(target)

    def count_of(frames: list[Frame]) -> int:
        (frame,) = [f for f in frames if f["event"] == "pusher_internal:subscription_count"]
        return int(json.loads(frame["data"])["subscription_count"])

    for channel in ("counted", "private-counted"):
        reply = await alice.subscribe(channel)
        rest = await alice.recv()
        assert {reply["event"], rest["event"]} == {
            "pusher_internal:subscription_succeeded",
            "pusher_internal:subscription_count",
        }
        assert count_of([reply, rest]) == 1
        reply = await bob.subscribe(channel)
        rest = await bob.recv()
        assert count_of([reply, rest]) == 2
        frame = await alice.expect("pusher_internal:subscription_count", channel)
        assert frame["data"] == '{"subscription_count":2}'
        await bob.send("pusher:unsubscribe", {"channel": channel})
        frame = await alice.expect("pusher_internal:subscription_count", channel)
        assert json.loads(frame["data"]) == {"subscription_count": 1}
        await bob.sync()
    await alice.subscribed("presence-counted", '{"user_id":"a"}')
    await bob.subscribed("presence-counted", '{"user_id":"b"}')
    await alice.expect("pusher_internal:member_added", "presence-counted")
    await alice.sync()
    await bob.sync()


async def test_cache_channel_miss(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 39: an empty cache channel answers subscription_succeeded, then pusher:cache_miss with data."""
    client = await connect(emulator)
    for channel in ("cache-empty", "private-cache-empty"):
        await client.subscribed(channel)
        frame = await client.expect("pusher:cache_miss", channel)
        assert frame["data"] == "{}"
    await client.subscribed("presence-cache-empty", '{"user_id":"1"}')
    await client.expect("pusher:cache_miss", "presence-cache-empty")
    await client.sync()


@pytest.mark.parametrize("channel", ["cache-prices", "private-cache-prices", "private-encrypted-cache-prices"])
async def test_cache_channel_replays_the_last_http_event(
    emulator: RunningEmulator, connect: Connect, channel: str
) -> None:
    """Item 40: a cache channel with a value answers subscription_succeeded, then the last HTTP event."""
    await publish(emulator, channel, "price", '{"v":1}')
    await publish(emulator, channel, "price-final", '{"v":2}')
    client = await connect(emulator)
    await client.subscribed(channel)
    frame = await client.expect("price-final", channel)
    assert frame == {"event": "price-final", "channel": channel, "data": '{"v":2}'}
    await client.sync()


async def test_client_events_are_never_cached(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 41: a client event on a cache channel is relayed but not stored."""
    sender = await connect(emulator)
    receiver = await connect(emulator)
    for client in (sender, receiver):
        await client.subscribed("private-cache-chat")
        await client.expect("pusher:cache_miss", "private-cache-chat")
    await sender.send("client-said", {"t": "hi"}, channel="private-cache-chat")
    await receiver.expect("client-said", "private-cache-chat")
    late = await connect(emulator)
    await late.subscribed("private-cache-chat")
    await late.expect("pusher:cache_miss", "private-cache-chat")


async def test_cache_ttl_expires(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 41: the cache TTL is configurable; after it the channel is a miss again."""
    target = await start_emulator(app=replace(APP, cache_ttl=2.0))  # a fresh connect and subscribe fit in it
    await publish(target, "cache-short", "tick", '"1"')
    early = await connect(target)
    await early.subscribed("cache-short")
    await early.expect("tick", "cache-short")
    await asyncio.sleep(2.2)  # past the TTL even counted from the publish
    late = await connect(target)
    await late.subscribed("cache-short")
    await late.expect("pusher:cache_miss", "cache-short")


# == Client events (items 42, 44-47) =================================================================================


async def test_client_event_reaches_others_not_the_sender(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 42: a client event on a subscribed private channel reaches every other subscriber, never the sender;
    object data is relayed as a JSON string, string data verbatim."""
    sender, bob, carol = [await connect(emulator) for _ in range(3)]
    outsider = await connect(emulator)
    for client in (sender, bob, carol):
        await client.subscribed("private-chat")
    await outsider.subscribed("private-other")
    await sender.send("client-typing", {"who": "sender"}, channel="private-chat")
    await sender.send("client-raw", '{"already":"encoded"}', channel="private-chat")
    for client in (bob, carol):
        frame = await client.expect("client-typing", "private-chat")
        assert json.loads(frame["data"]) == {"who": "sender"}
        assert "user_id" not in frame
        frame = await client.expect("client-raw", "private-chat")
        assert frame["data"] == '{"already":"encoded"}'
    await sender.sync()
    await outsider.sync()


async def _sender_and_listener(emulator: RunningEmulator, connect: Connect) -> tuple[Client, Client]:
    sender = await connect(emulator)
    listener = await connect(emulator)
    for client in (sender, listener):
        await client.subscribed("private-room")
        await client.subscribed("public-room")
    await listener.subscribed("private-listener-only")
    return sender, listener


CLIENT_EVENT_REJECTIONS = {
    "public-channel": ("client-hello", "public-room", "private and presence"),
    "unsubscribed": ("client-hello", "private-listener-only", "not subscribed"),
    "no-channel": ("client-hello", None, "it names no channel"),
    "missing-prefix": ("hello", "private-room", "unsupported event"),
}


@pytest.mark.parametrize("case", list(CLIENT_EVENT_REJECTIONS))
async def test_client_event_rejected_without_delivery(emulator: RunningEmulator, connect: Connect, case: str) -> None:
    """Item 44: a client event on a public or unsubscribed channel, or without the client- prefix, is dropped with a
    non-fatal error; nobody receives it and the sender stays connected."""
    event, channel, fragment = CLIENT_EVENT_REJECTIONS[case]
    sender, listener = await _sender_and_listener(emulator, connect)
    await sender.send(event, {"n": 1}, channel=channel)
    await sender.expect_error(None, fragment)
    await sender.sync()
    await listener.sync()
    await sender.send("client-ok", {"n": 2}, channel="private-room")
    await listener.expect("client-ok", "private-room")


async def test_client_events_disabled_is_4301(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 45: with client events off, the sender gets a non-fatal 4301 and nothing is delivered."""
    target = await start_emulator(app=replace(APP, client_events=False))
    sender, listener = await _sender_and_listener(target, connect)
    await sender.send("client-hello", {"n": 1}, channel="private-room")
    await sender.expect_error(4301, "not enabled")
    await sender.sync()
    await listener.sync()
    await assert_serves_others(target, connect)


async def test_client_event_rate_limit_is_4301_and_stays_open(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 46: the 11th client event within a second gets 4301 and is not delivered; the socket stays open and
    sending works again in the next window."""
    sender, listener = await _sender_and_listener(emulator, connect)
    for n in range(11):
        await sender.send("client-burst", {"n": n}, channel="private-room")
    await sender.expect_error(4301, "rate limit")
    await sender.sync()
    received = [json.loads((await listener.expect("client-burst", "private-room"))["data"])["n"] for _ in range(10)]
    assert received == list(range(10))
    await listener.sync()
    await asyncio.sleep(1.05)
    await sender.send("client-burst", {"n": 11}, channel="private-room")
    assert json.loads((await listener.expect("client-burst", "private-room"))["data"]) == {"n": 11}


async def test_client_event_name_and_size_limits(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 47: event names up to 200 chars and data up to 10 KB pass; longer or larger are rejected, non-fatally."""
    sender, listener = await _sender_and_listener(emulator, connect)
    longest = "client-" + "n" * 193
    biggest = "d" * 10_240
    await sender.send(longest, "x", channel="private-room")
    assert (await listener.expect(longest, "private-room"))["data"] == "x"
    await sender.send(longest + "n", "x", channel="private-room")
    await sender.expect_error(None, "200")
    await sender.send("client-big", biggest, channel="private-room")
    assert (await listener.expect("client-big", "private-room"))["data"] == biggest
    await sender.send("client-big", biggest + "d", channel="private-room")
    await sender.expect_error(None, "10240")
    await sender.sync()
    await listener.sync()
    await assert_serves_others(emulator, connect)
