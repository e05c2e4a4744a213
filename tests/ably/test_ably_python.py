"""ably-python 3.1.4 against the emulator, REST and realtime, msgpack (its default) and JSON.

REST over plain HTTP needs ``use_token_auth=True`` (ably-python refuses Basic auth without TLS, reference §A.2): the
SDK signs a TokenRequest, exchanges it at ``/keys/{keyName}/requestToken`` and sends ``Bearer base64(token)``.
Realtime needs the port inside ``endpoint`` (ably-python#567, §C.2); it sends ``accessToken`` for tokens (§C.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ably import AblyException, AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ably.types.tokendetails import TokenDetails  # type: ignore[import-untyped]
from ablysupport import API_KEY, KEY_NAME, MESSAGE, PRESENCE, ably_wire, connected, pusher_wire

from relay.protocol.signing import authorize_channel
from tests.conftest import RunningEmulator

Made = Callable[..., Any]
BINARY = pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])


@pytest.fixture
async def clients(ably_emulator: RunningEmulator) -> AsyncIterator[Made]:
    """``clients(kind, **options)`` → an AblyRest or AblyRealtime pointed at the emulator (closed afterwards)."""
    made: list[Any] = []

    def make(kind: str, **options: Any) -> Any:
        options.setdefault("key", API_KEY)
        if kind == "rest":
            options.setdefault("use_token_auth", True)
            client = AblyRest(endpoint="127.0.0.1", port=ably_emulator.port, tls=False, **options)
        else:
            client = AblyRealtime(endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def next_message(received: asyncio.Queue[Any], wait: float = 3.0) -> Any:
    return await asyncio.wait_for(received.get(), wait)


@BINARY
async def test_rest_time_token_and_publish(
    ably_emulator: RunningEmulator, clients: Made, wires: list[Any], binary: bool
) -> None:
    """``time()``, token auth through ``requestToken``, ``publish`` of a name and an object (received by an Ably
    and a Pusher connection), an array with idempotent ids, and ``status()`` counting both protocols."""
    rest = clients("rest", use_binary_protocol=binary)
    assert abs(await rest.time() - ably_emulator.node.ably.wall_ms()) < 5_000
    ably_side = await ably_wire(ably_emulator)
    pusher_side = await pusher_wire(ably_emulator)
    wires += [ably_side, pusher_side]
    await ably_side.attach("orders")
    await pusher_side.send("pusher:subscribe", {"channel": "orders"})
    await pusher_side.expect("pusher_internal:subscription_succeeded")

    channel = rest.channels.get("orders")
    result = await channel.publish("created", {"id": 7})
    assert len(result.serials) == 1
    message = (await ably_side.expect(MESSAGE))["messages"][0]
    assert (message["name"], message["data"], message["encoding"]) == ("created", '{"id": 7}', "json")
    assert message["id"].endswith(":0")  # ably-python's idempotent id, kept
    event = await pusher_side.expect("created")
    assert event["channel"] == "orders" and event["data"] == '{"id": 7}'

    batch = [Message("a", "1", id="same-base:0"), Message("b", "2", id="same-base:1")]
    first = await channel.publish(batch)
    again = await channel.publish([Message("a", "1", id="same-base:0"), Message("b", "2", id="same-base:1")])
    assert first.serials == again.serials and len(first.serials) == 2
    delivered = await ably_side.expect(MESSAGE)
    assert [m["name"] for m in delivered["messages"]] == ["a", "b"]
    assert [(await pusher_side.expect(name))["data"] for name in ("a", "b")] == ["1", "2"]
    await channel.publish("marker", "m")
    assert (await ably_side.expect(MESSAGE))["messages"][0]["name"] == "marker"  # the repeat was not delivered

    status = await channel.status()
    assert status.channel_id == "orders" and status.status.is_active
    metrics = status.status.occupancy.metrics
    assert (metrics.connections, metrics.subscribers, metrics.publishers) == (2, 2, 1)


@BINARY
async def test_rest_presence_get_sees_both_protocols(
    ably_emulator: RunningEmulator, clients: Made, wires: list[Any], binary: bool
) -> None:
    """``presence.get()`` lists an Ably member and a pusher presence member (user_info as JSON data)."""
    rest = clients("rest", use_binary_protocol=binary)
    ably_side = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    pusher_side = await pusher_wire(ably_emulator)
    wires += [ably_side, pusher_side]
    await ably_side.attach("presence-room")
    await ably_side.presence("presence-room", {"action": 2, "data": '{"role":"host"}', "encoding": "json"})
    await ably_side.expect(PRESENCE)
    channel_data = '{"user_id":"pat","user_info":{"name":"Pat"}}'
    auth = authorize_channel("app-key", "app-secret", pusher_side.socket_id, "presence-room", channel_data=channel_data)
    await pusher_side.send("pusher:subscribe", {"channel": "presence-room", **auth})
    await pusher_side.expect("pusher_internal:subscription_succeeded")

    members = (await rest.channels.get("presence-room").presence.get()).items
    assert sorted((m.client_id, str(m.data)) for m in members) == [
        ("ann", "{'role': 'host'}"),
        ("pat", "{'name': 'Pat'}"),
    ]
    assert {m.connection_id for m in members} == {ably_side.connected["connectionId"], pusher_side.socket_id}
    # A member's timestamp is when it joined, the Pusher member's too (it was the time of each query)
    joined = {m.client_id: m.timestamp for m in members}
    await asyncio.sleep(0.05)
    again = {m.client_id: m.timestamp for m in (await rest.channels.get("presence-room").presence.get()).items}
    assert again == joined


async def test_rest_batch_publish_and_errors(ably_emulator: RunningEmulator, clients: Made) -> None:
    """``POST /messages`` through ``request()`` (ably-python has no batch_publish): one BatchResult per spec with a
    per-channel error for a channel the token may not publish to; REST errors keep Ably's codes."""
    rest = clients("rest", default_token_params={"capability": {"ok:*": ["publish"], "*": ["subscribe"]}})
    body = [{"channels": ["ok:1", "denied"], "messages": [{"name": "n", "data": "d"}]}]
    response = await rest.request("POST", "/messages", "5", body=body)
    assert response.status_code == 201
    [result] = response.items
    assert (result["successCount"], result["failureCount"]) == (1, 1)
    denied = next(r for r in result["results"] if r["channel"] == "denied")
    assert denied["error"]["code"] == 40160 and denied["error"]["statusCode"] == 401

    with pytest.raises(AblyException) as denied_publish:
        await rest.channels.get("denied").publish("n", "d")
    assert (denied_publish.value.code, denied_publish.value.status_code) == (40160, 401)
    identified = clients("rest", client_id="ivy")
    mismatch = await identified.request("POST", "/channels/ok:1/messages", "5", body={"name": "n", "clientId": "eve"})
    assert (mismatch.status_code, int(mismatch.error_code), mismatch.success) == (400, 40012, False)
    wrong = clients("rest", key=f"{KEY_NAME}:not-the-secret")
    with pytest.raises(AblyException) as bad_mac:
        await wrong.channels.get("ok:1").publish("n", "d")
    assert bad_mac.value.code == 40101
    assert (await rest.channels.get("ok:1").publish("n", "still works")).serials


@BINARY
async def test_realtime_subscribe_publish_presence(clients: Made, binary: bool) -> None:
    """Two realtime clients: attach, subscribe, publish (ACK with serials), presence enter/update/get (SYNC on a
    later attach)/leave, detach."""
    alice = clients("realtime", client_id="alice", use_binary_protocol=binary)
    bob = clients("realtime", client_id="bob", use_binary_protocol=binary)
    await connected(alice)
    await connected(bob)
    room_a, room_b = alice.channels.get("room"), bob.channels.get("room")
    received: asyncio.Queue[Any] = asyncio.Queue()
    await room_b.subscribe("greet", received.put_nowait)
    result = await room_a.publish("greet", {"hello": "world"})
    assert len(result.serials) == 1
    message = await next_message(received)
    assert (message.data, message.client_id, message.connection_id) == (
        {"hello": "world"},
        "alice",
        alice.connection.connection_manager.connection_id,
    )

    await room_a.presence.enter({"status": "here"})
    await room_a.presence.update({"status": "busy"})
    carol = clients("realtime", client_id="carol", use_binary_protocol=binary)
    members = await carol.channels.get("room").presence.get()
    assert [(m.client_id, m.data) for m in members] == [("alice", {"status": "busy"})]
    events: asyncio.Queue[Any] = asyncio.Queue()
    await room_b.presence.subscribe(events.put_nowait)
    await room_a.presence.leave()
    left = await next_message(events)
    assert (left.action, left.client_id) == (3, "alice")
    await room_b.detach()
    assert str(room_b.state).endswith("DETACHED")


async def test_realtime_with_token_and_auth_callback(clients: Made, ably_emulator: RunningEmulator) -> None:
    """A TokenDetails from ``request_token`` (sent as ``accessToken``) and an ``auth_callback`` returning one; a
    token's capability narrows what the connection may attach to (40160 on the channel only)."""
    rest = clients("rest")
    details = await rest.auth.request_token({"client_id": "tok", "capability": {"allowed": ["subscribe", "publish"]}})
    assert isinstance(details, TokenDetails) and details.client_id == "tok"
    realtime = clients("realtime", key=None, token_details=details)
    await connected(realtime)
    assert realtime.auth.client_id == "tok"
    await realtime.channels.get("allowed").publish("n", "d")
    with pytest.raises(AblyException) as denied:
        await realtime.channels.get("forbidden").attach()
    assert denied.value.code == 40160
    assert str(realtime.connection.state).endswith("CONNECTED")

    async def callback(params: Any) -> TokenDetails:
        return await rest.auth.request_token({"client_id": "cb"})

    called_back = clients("realtime", key=None, auth_callback=callback)
    await connected(called_back)
    assert called_back.auth.client_id == "cb"


async def test_realtime_bad_key_fails_with_ably_error(clients: Made) -> None:
    """A wrong secret: the connection goes FAILED with the server's 40101."""
    failing = clients("realtime", key=f"{KEY_NAME}:wrong")
    state_change = await asyncio.wait_for(failing.connection.once_async("failed"), 5)
    assert state_change.reason.code == 40101


async def test_rest_history_pages_go_first_and_current_as_well_as_next(clients: Made) -> None:
    """Answers linked only the next page: ably-python's ``first()`` gave None (an AttributeError on ``.items``), and
    ably-js's rejected with 40400 "No link to the first page of results". Every page links its first, itself
    (``current()`` in ably-js) and any next."""
    channel = clients("rest").channels.get("paged")
    await channel.publish([Message(f"m{number}", "x") for number in range(5)])
    top = await channel.history(limit=2)
    second = await top.next()
    third = await second.next()
    assert [[m.name for m in page.items] for page in (top, second, third)] == [["m4", "m3"], ["m2", "m1"], ["m0"]]
    assert not third.has_next() and third.is_last()
    assert [m.name for m in (await third.first()).items] == ["m4", "m3"]
