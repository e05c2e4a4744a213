"""The library's Ably adapter (``adapters/ably.py``: its own httpx requests, Basic auth with the key) against the
emulator's Ably side, through ``Relay`` and ``AsyncRelay``: publish (one channel, several, a batch), channel, channels,
presence members, and ``authorize_channel`` TokenRequests that the emulator exchanges for tokens limited to the
channel."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from ablysupport import ACK, API_KEY, ATTACHED, ERROR, MESSAGE, PRESENCE, AblyWire, PusherWire, ably_wire, pusher_wire

from relay import AsyncRelay, ChannelInfo, PresenceMember, Relay, User
from relay.errors import PermissionDenied, RelayError
from tests.conftest import RunningEmulator

Call = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
async def relay(request: pytest.FixtureRequest, ably_emulator: RunningEmulator) -> AsyncIterator[Call]:
    """``await relay("method", *args)`` on ``Relay`` (in a worker thread) or ``AsyncRelay`` over ``ably://``."""
    url = f"ably://{API_KEY}@127.0.0.1:{ably_emulator.port}?tls=false"
    client: Relay | AsyncRelay = Relay.from_url(url) if request.param == "sync" else AsyncRelay.from_url(url)

    async def call(method: str, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(client, method)
        if isinstance(client, Relay):
            return await asyncio.to_thread(bound, *args, **kwargs)
        result = bound(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    yield call
    if isinstance(client, AsyncRelay):
        await client.aclose()
    else:
        client.close()


async def subscribed(
    running: RunningEmulator, channel: str, wires: list[AblyWire | PusherWire]
) -> tuple[AblyWire, PusherWire]:
    ably_side, pusher_side = await ably_wire(running), await pusher_wire(running)
    wires += [ably_side, pusher_side]
    await ably_side.attach(channel)
    await pusher_side.send("pusher:subscribe", {"channel": channel})
    await pusher_side.expect("pusher_internal:subscription_succeeded")
    return ably_side, pusher_side


async def test_publish_reaches_both_protocols(relay: Call, ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """``publish`` to one channel (``POST /channels/{ch}/messages``) and to two (``POST /messages``): Ably
    subscribers get the object with ``encoding: json``, Pusher subscribers the JSON text; ``socket_id`` (sent as
    ``connectionKey``) leaves that Pusher socket out, as on Pusher."""
    ably_side, pusher_side = await subscribed(ably_emulator, "orders", wires)
    result = await relay("publish", "orders", "created", {"id": 1})
    assert result.channels == ("orders",) and len(result.message_ids) == 1
    message = (await ably_side.expect(MESSAGE))["messages"][0]
    assert (message["name"], message["data"], message["encoding"]) == ("created", '{"id":1}', "json")
    assert message["id"] == result.message_ids[0]
    assert (await pusher_side.expect("created"))["data"] == '{"id":1}'

    other_ably, _ = await subscribed(ably_emulator, "audit", wires)
    result = await relay("publish", ["orders", "audit"], "fanned", "text")
    assert sorted(result.channels) == ["audit", "orders"]
    assert (await other_ably.expect(MESSAGE))["messages"][0]["data"] == "text"
    assert (await pusher_side.expect("fanned"))["data"] == "text"

    await relay("publish", "orders", "not-to-me", "x", socket_id=pusher_side.socket_id)
    await relay("publish", "orders", "to-everyone", "y")
    assert (await pusher_side.expect("to-everyone"))["data"] == "y"  # "not-to-me" never arrived first
    names = [(await ably_side.expect(MESSAGE))["messages"][0]["name"] for _ in range(3)]
    assert names == ["fanned", "not-to-me", "to-everyone"]

    # To several channels (one batch request) and in a batch, socket_id leaves the socket out as well
    await relay("publish", ["orders", "audit"], "fanned-not-to-me", "x", socket_id=pusher_side.socket_id)
    await relay(
        "publish_batch",
        [{"channel": "orders", "name": "batch-not-to-me", "data": "x", "socket_id": pusher_side.socket_id}],
    )
    await relay("publish", "orders", "after", "z")
    assert (await pusher_side.expect("after"))["data"] == "z"
    names = [(await ably_side.expect(MESSAGE))["messages"][0]["name"] for _ in range(3)]
    assert names == ["fanned-not-to-me", "batch-not-to-me", "after"]


async def test_publish_batch(relay: Call, ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """``publish_batch``: one BatchSpec per event in one ``POST /messages``, each delivered."""
    ably_side, pusher_side = await subscribed(ably_emulator, "jobs", wires)
    result = await relay("publish_batch", [{"channel": "jobs", "name": f"job-{i}", "data": {"n": i}} for i in range(3)])
    assert len(result.message_ids) == 3
    received = [(await ably_side.expect(MESSAGE))["messages"][0]["name"] for _ in range(3)]
    assert received == ["job-0", "job-1", "job-2"]
    assert [(await pusher_side.expect(f"job-{i}"))["data"] for i in range(3)] == ['{"n":0}', '{"n":1}', '{"n":2}']


async def test_channel_channels_and_presence(relay: Call, ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """``channel`` (GET /channels/{ch}: occupancy of both protocols), ``channels`` (GET /channels?by=id&prefix=)
    and ``presence_members`` (an Ably member and a Pusher one)."""
    ably_side = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=ann")
    pusher_side = await pusher_wire(ably_emulator)
    wires += [ably_side, pusher_side]
    await ably_side.attach("presence-team")
    await ably_side.presence("presence-team", {"action": 2, "data": '{"name":"Ann"}', "encoding": "json"})
    await ably_side.expect(PRESENCE)
    await pusher_side.send("pusher:subscribe", {"channel": "team-news"})
    await pusher_side.expect("pusher_internal:subscription_succeeded")

    assert await relay("channel", "presence-team") == ChannelInfo("presence-team", True, 1, 1)
    assert await relay("channel", "team-news") == ChannelInfo("team-news", True, 1, None)
    assert await relay("channel", "empty") == ChannelInfo("empty", False, 0, None)
    listed = await relay("channels", "team")
    assert sorted(listed) == ["team-news"]
    assert sorted(await relay("channels")) == ["presence-team", "team-news"]
    members = await relay("presence_members", "presence-team")
    assert members == [PresenceMember("ann", {"name": "Ann"})]


async def test_authorize_channel_token_request(relay: Call, ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """``authorize_channel`` returns a signed TokenRequest; the emulator exchanges it (as ably-js would) for a token
    whose capability is that channel only and whose clientId is the user; a replayed request gets 40105."""
    token_request = await relay("authorize_channel", "1.2", "presence-room", User("uma"))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ably_emulator.port}") as http:
        response = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
        assert response.status_code == 200, response.text
        details = response.json()
        replayed = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
    assert details["clientId"] == "uma" and details["capability"] == '{"presence-room":["presence","subscribe"]}'
    assert replayed.status_code == 401 and replayed.json()["error"]["code"] == 40105

    wire = await ably_wire(ably_emulator, f"access_token={details['token']}")
    wires.append(wire)
    assert (await wire.attach("presence-room"))["action"] == ATTACHED
    await wire.presence("presence-room", {"action": 2})
    assert (await wire.expect(PRESENCE))["presence"][0]["clientId"] == "uma"
    await wire.expect(ACK)
    await wire.send({"action": 10, "channel": "presence-other"})
    assert (await wire.expect(ERROR))["error"]["code"] == 40160


async def test_errors_map_to_relay_errors(ably_emulator: RunningEmulator) -> None:
    """A wrong secret is refused with Ably's 40101 (an authentication error); a key name the emulator does not
    know likewise."""
    for key in ("1.app-key:wrong", "9.nobody:app-secret"):
        relay = AsyncRelay.from_url(f"ably://{key}@127.0.0.1:{ably_emulator.port}?tls=false")
        with pytest.raises(RelayError) as refused:
            await relay.publish("orders", "e", "d")
        await relay.aclose()
        assert refused.value.http_status == 401 and refused.value.code == 40101
        assert not isinstance(refused.value, PermissionDenied)


async def test_only_a_connection_s_own_key_publishes_as_it(ably_emulator: RunningEmulator, wires: list[Any]) -> None:
    """A REST publish "as" an ``echo=false`` connection is not sent back to it; its id with another secret (the key
    is compared in constant time) publishes as nobody, so that connection gets the message."""
    quiet = await ably_wire(ably_emulator, f"key={API_KEY}&echo=false")
    wires.append(quiet)
    await quiet.attach("orders")
    key = quiet.connected["connectionKey"]
    connection_id, _, secret = key.partition("!")
    forged = f"{connection_id}!{'0' * len(secret) if secret != '0' * len(secret) else '1' * len(secret)}"
    async with httpx.AsyncClient(auth=tuple(API_KEY.split(":", 1))) as http:  # type: ignore[arg-type]
        for name, as_key in (("own", key), ("forged", forged)):
            answer = await http.post(
                f"http://127.0.0.1:{ably_emulator.port}/channels/orders/messages",
                json={"name": name, "data": "x", "connectionKey": as_key},
            )
            assert answer.status_code == 201, answer.text
    assert (await quiet.expect(MESSAGE))["messages"][0]["name"] == "forged"


async def test_a_connection_key_that_is_no_connections_is_refused_and_dropped(
    relay: Call, ably_emulator: RunningEmulator, wires: list[Any]
) -> None:
    """A connectionKey that no connection could have (a key cut short, another service's id) is refused as Ably
    refuses it, 40006 and the whole publish; the library sends the message again without it, so both protocols'
    subscribers get it. A well-formed key of a closed connection leaves nobody out and is not refused."""
    ably_side, pusher_side = await subscribed(ably_emulator, "orders", wires)
    base = f"http://127.0.0.1:{ably_emulator.port}"
    async with httpx.AsyncClient(auth=tuple(API_KEY.split(":", 1))) as http:  # type: ignore[arg-type]
        for key in ("not-a-key", f"{ably_side.connected['connectionId']}!", "1.2!x y", "1.2.3"):
            answer = await http.post(f"{base}/channels/orders/messages", json={"data": "x", "connectionKey": key})
            error = answer.json()["error"]
            assert (answer.status_code, error["code"]) == (400, 40006), key
            named = repr(key.partition("!")[0])
            assert error["message"].startswith(f"Malformed message; invalid connectionKey {named} ("), error
            assert "x y" not in error["message"]  # the part after "!" is the connection's secret
        answer = await http.post(f"{base}/channels/orders/messages", json={"name": "stale", "connectionKey": "7.7!ab"})
        assert answer.status_code == 201
    await relay("publish", "orders", "kept", "y", socket_id="not-a-key")
    assert [(await ably_side.expect(MESSAGE))["messages"][0]["name"] for _ in range(2)] == ["stale", "kept"]
    assert (await pusher_side.expect("stale"))["event"] == "stale"
    assert (await pusher_side.expect("kept"))["data"] == "y"
