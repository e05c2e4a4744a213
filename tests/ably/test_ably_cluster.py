"""Ably connections on a cluster of emulator nodes (Redis): a message published on one node reaches Ably subscribers
on another as the same ProtocolMessage (id, extras, binary data), and Pusher subscribers there as Pusher events; Ably
presence members entered on one node are members on every node, until they leave or their node dies, and so are the
Pusher connections in a ``presence-`` channel."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    MESSAGE,
    PRESENCE,
    SYNC,
    AblyWire,
    PusherWire,
    ably_wire,
    page_links,
    pusher_wire,
)

from relay.emulator.cluster import NodeState
from relay.protocol.signing import channel_auth
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.cluster.test_faults import Spawn
from tests.cluster.test_faults import spawn as spawn
from tests.conftest import StartEmulator

BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
ENTER, LEAVE, UPDATE = 2, 3, 4
PRESENT = 1


async def on_orders(*ably_peers: AblyWire, pusher_peer: PusherWire) -> None:
    """Every peer on channel ``orders``, and the nodes' bus subscriptions live."""
    for peer in ably_peers:
        await peer.attach("orders")
    await pusher_peer.send("pusher:subscribe", {"channel": "orders"})
    await pusher_peer.expect("pusher_internal:subscription_succeeded")
    await asyncio.sleep(0.2)  # the nodes' bus subscriptions are live well before this


async def test_an_ably_publish_reaches_another_node_s_ably_peers_unchanged(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    json_peer, binary_peer = await ably_wire(there), await ably_wire(there, binary=True)
    pusher_peer = await pusher_wire(there)
    wires.extend([json_peer, binary_peer, pusher_peer])
    await on_orders(json_peer, binary_peer, pusher_peer=pusher_peer)

    batch = [
        {"id": "order-42:0", "name": "status", "data": {"state": "shipped"}, "extras": {"headers": {"trace": "t1"}}},
        {"id": "order-42:1", "name": "eta", "data": "tomorrow"},
    ]
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        published = await http.post("/channels/orders/messages", json=batch, headers=BASIC)
        assert published.status_code == 201, published.text
        blob = await http.post(
            "/channels/orders/messages",
            content=msgpack.packb({"name": "scan", "data": b"\x00\xffpng"}, use_bin_type=True),
            headers={**BASIC, "Content-Type": "application/x-msgpack"},
        )
        assert blob.status_code == 201, blob.text

    for peer in (json_peer, binary_peer):
        first = await peer.expect(MESSAGE)
        assert first["channel"] == "orders"
        assert first["channelSerial"] == published.json()["serials"][0].rpartition(":")[0]
        items = first["messages"]
        assert [item["id"] for item in items] == ["order-42:0", "order-42:1"]
        assert items[0]["extras"] == {"headers": {"trace": "t1"}}
        assert (items[0]["data"], items[0]["encoding"]) == ('{"state":"shipped"}', "json")
        assert items[1]["data"] == "tomorrow"
        binary = (await peer.expect(MESSAGE))["messages"][0]
        if peer.binary:
            assert binary["data"] == b"\x00\xffpng"
        else:  # JSON subscribers get binary data in base64, as on a single node
            assert (binary["data"], binary["encoding"]) == (base64.b64encode(b"\x00\xffpng").decode(), "base64")
    events = [await pusher_peer.expect("status"), await pusher_peer.expect("eta")]
    assert json.loads(events[0]["data"]) == {"state": "shipped"} and events[1]["data"] == "tomorrow"


async def test_an_idempotent_publish_retried_on_another_node_is_not_delivered_again(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """Ably deduplicates by message id for 2 minutes, which the SDKs rely on to retry safely; behind a load balancer
    the retry may reach another node, which delivered it again (each node remembered only its own publishes)."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    listeners = [await ably_wire(here), await ably_wire(there)]
    wires.extend(listeners)
    for listener in listeners:
        await listener.attach("orders")
    await asyncio.sleep(0.2)  # the nodes' bus subscriptions are live well before this
    message = {"id": "retry-1:0", "name": "paid", "data": "order 42"}
    async with httpx.AsyncClient() as http:
        first = await http.post(f"{here.http_url}/channels/orders/messages", json=message, headers=BASIC)
        for listener in listeners:
            assert [item["id"] for item in (await listener.expect(MESSAGE))["messages"]] == ["retry-1:0"]
        retried = await http.post(f"{there.http_url}/channels/orders/messages", json=message, headers=BASIC)
        assert (first.status_code, retried.status_code) == (201, 201)
        assert retried.json() == first.json()  # answered as the first was: its messageId and serials
        other = {"id": "next-1:0", "name": "shipped", "data": "order 42"}
        assert (await http.post(f"{there.http_url}/channels/orders/messages", json=other, headers=BASIC)).is_success
    for listener in listeners:  # the retry was not delivered: the next message is the other one
        assert [item["id"] for item in (await listener.expect(MESSAGE))["messages"]] == ["next-1:0"]


async def test_publishes_the_bus_cannot_carry_whole_still_cross_and_the_bus_keeps_working(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """Ably accepts extras that msgpack cannot carry (an integer over 64 bits, from JSON) or that only a lenient
    decoder reads (a non-string map key, from msgpack): the publish is still answered 201 and still reaches the other
    node (translated from its Pusher event when it cannot go whole), and what is published next crosses too."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    ably_peer, pusher_peer = await ably_wire(there), await pusher_wire(there)
    wires.extend([ably_peer, pusher_peer])
    await ably_peer.attach("orders")
    await pusher_peer.send("pusher:subscribe", {"channel": "orders"})
    await pusher_peer.expect("pusher_internal:subscription_succeeded")
    await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=here.http_url) as http:
        huge = await http.post(
            "/channels/orders/messages", json={"name": "huge", "data": "1", "extras": {"n": 10**30}}, headers=BASIC
        )
        assert huge.status_code == 201, huge.text
        odd_key = await http.post(
            "/channels/orders/messages",
            content=msgpack.packb({"name": "odd-key", "data": "2", "extras": {1: "x"}}, use_bin_type=True),
            headers={**BASIC, "Content-Type": "application/x-msgpack"},
        )
        assert odd_key.status_code == 201, odd_key.text
        after = await http.post("/channels/orders/messages", json={"name": "after", "data": "3"}, headers=BASIC)
        assert after.status_code == 201, after.text

    names = [(await ably_peer.expect(MESSAGE))["messages"][0]["name"] for _ in range(3)]
    assert names == ["huge", "odd-key", "after"]
    assert [(await pusher_peer.expect(name))["event"] for name in names] == names


async def test_history_and_rewind_hold_every_node_s_ably_publishes(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """Each node keeps the Ably publishes of every node, without a subscriber there, in one order on every node:
    ``history()`` on either node lists them all, a rewind on one node sends what was published on the other, and
    an untilAttach cut made from that node's ATTACHED leaves out what came later."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    publisher = await ably_wire(there)
    wires.append(publisher)
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=here.http_url) as near, httpx.AsyncClient(base_url=there.http_url) as far:

        async def names(http: httpx.AsyncClient, query: str = "", count: int = 3) -> list[str]:
            for _ in range(50):  # the other node's publishes arrive through Redis
                response = await http.get(f"/channels/order-9/messages{query}", headers=BASIC)
                assert response.status_code == 200, response.text
                found = [item["name"] for item in response.json()]
                if len(found) >= count or query:
                    return found
                await asyncio.sleep(0.05)
            return found

        for name in ("placed", "packed"):
            published = await near.post("/channels/order-9/messages", json={"name": name, "data": "x"}, headers=BASIC)
            assert published.status_code == 201, published.text
        assert await names(far, count=2) == ["packed", "placed"]  # arrived there before the next publish there
        await publisher.publish("order-9", {"name": "shipped", "data": "x"})
        assert (await publisher.expect(ACK))["msgSerial"] == 0
        assert await names(near) == await names(far) == ["shipped", "packed", "placed"]
        reader = await ably_wire(there)
        wires.append(reader)
        attached = await reader.attach("order-9", params={"rewind": "2"})
        rewound = [(await reader.expect(MESSAGE))["messages"][0]["name"] for _ in range(2)]
        assert rewound == ["packed", "shipped"]
        later = await near.post("/channels/order-9/messages", json={"name": "later", "data": "x"}, headers=BASIC)
        assert later.status_code == 201
        assert (await reader.expect(MESSAGE))["messages"][0]["name"] == "later"
        cut = f"?from_serial={attached['channelSerial']}"
        assert await names(far, cut) == ["shipped", "packed", "placed"]
        # The other node counts serials from elsewhere: compared with its own, the cut was nothing or everything
        elsewhere = await near.get(f"/channels/order-9/messages{cut}", headers=BASIC)
        assert (elsewhere.status_code, elsewhere.json()["error"]["code"]) == (400, 40003)
        assert "is not a channelSerial this node sent" in elsewhere.json()["error"]["message"]
        assert (await names(far))[0] == "later"

        # Publishes at the same moment on both nodes have distinct ids (each node counts its own serials), and a
        # next link made by one node is followed on the other from the same message.
        async def burst(http: httpx.AsyncClient, prefix: str) -> None:
            async def one(number: int) -> None:
                message = {"name": f"{prefix}{number}", "data": "x"}
                assert (await http.post("/channels/burst/messages", json=message, headers=BASIC)).status_code == 201

            await asyncio.gather(*(one(number) for number in range(10)))

        await asyncio.gather(burst(near, "n"), burst(far, "f"))
        for http in (far, near):
            for _ in range(50):
                everything = (await http.get("/channels/burst/messages", headers=BASIC)).json()
                if len(everything) == 20:
                    break
                await asyncio.sleep(0.05)
            assert len({item["id"] for item in everything}) == 20
        first = await far.get("/channels/burst/messages?limit=7", headers=BASIC)
        following = page_links(first.headers["link"])["next"].removeprefix("./")
        rest = await near.get(f"/channels/burst/{following}&limit=20", headers=BASIC)
        assert len(first.json()) + len(rest.json()) == 20
        assert {item["id"] for item in first.json()}.isdisjoint(item["id"] for item in rest.json())


def _member(item: dict[str, Any]) -> tuple[Any, ...]:
    return item["action"], item["clientId"], item["connectionId"], item.get("data"), item.get("encoding")


async def _presence_event(peer: AblyWire, wait: float = 3.0) -> dict[str, Any]:
    message = await peer.expect(PRESENCE, wait)
    assert message["channel"] == "room" and len(message["presence"]) == 1
    item: dict[str, Any] = message["presence"][0]
    return item


async def test_a_member_entered_on_one_node_is_present_on_another(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    alice, scanner = await ably_wire(there, f"key={API_KEY}&clientId=alice"), await ably_wire(there, binary=True)
    wires.extend([alice, scanner])
    for peer in (alice, scanner):
        await peer.attach("room")
    await alice.presence("room", {"action": ENTER, "data": {"mood": "busy"}})
    await scanner.presence("room", {"action": ENTER, "clientId": "scanner", "data": b"\x00\xff"})
    alice_id, scanner_id = alice.connected["connectionId"], scanner.connected["connectionId"]
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        for _ in range(100):  # the two members cross Redis to the other node
            if len((await http.get("/channels/room/presence", headers=BASIC)).json()) == 2:
                break
            await asyncio.sleep(0.02)

    watcher = await ably_wire(here)
    wires.append(watcher)
    await watcher.attach("room")
    synced = await watcher.expect(SYNC)
    assert sorted(_member(item) for item in synced["presence"]) == [
        (PRESENT, "alice", alice_id, '{"mood":"busy"}', "json"),
        (PRESENT, "scanner", scanner_id, base64.b64encode(b"\x00\xff").decode(), "base64"),
    ]
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        listed = await http.get("/channels/room/presence", headers=BASIC)
        details = await http.get("/channels/room", headers=BASIC)
    assert sorted(_member(item) for item in listed.json()) == sorted(_member(item) for item in synced["presence"])
    assert details.json()["status"]["occupancy"]["metrics"]["presenceMembers"] == 2
    # The other node's presence history holds both enters, as it received them (ids, data).
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        history = (await http.get("/channels/room/presence/history?direction=forwards", headers=BASIC)).json()
    assert sorted((item["action"], item["clientId"], item["connectionId"]) for item in history) == [
        (ENTER, "alice", alice_id),
        (ENTER, "scanner", scanner_id),
    ]


async def test_a_subscriber_hears_another_node_s_member_enter_update_and_leave(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    watcher, alice = await ably_wire(here), await ably_wire(there, f"key={API_KEY}&clientId=alice")
    bob = await ably_wire(there, f"key={API_KEY}&clientId=bob")
    wires.extend([watcher, alice, bob])
    for peer in (watcher, alice, bob):
        await peer.attach("room")
    await asyncio.sleep(0.2)
    alice_id, bob_id = alice.connected["connectionId"], bob.connected["connectionId"]

    await alice.presence("room", {"action": ENTER, "data": "hello"})
    assert _member(await _presence_event(watcher)) == (ENTER, "alice", alice_id, "hello", None)
    await alice.presence("room", {"action": UPDATE, "data": "away"})
    assert _member(await _presence_event(watcher)) == (UPDATE, "alice", alice_id, "away", None)
    await alice.presence("room", {"action": LEAVE})
    assert _member(await _presence_event(watcher)) == (LEAVE, "alice", alice_id, "away", None)

    await bob.presence("room", {"action": ENTER, "data": "here"})
    assert _member(await _presence_event(watcher)) == (ENTER, "bob", bob_id, "here", None)
    await bob.close()  # the connection's members leave with it, on every node
    assert _member(await _presence_event(watcher)) == (LEAVE, "bob", bob_id, "here", None)
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        assert (await http.get("/channels/room/presence", headers=BASIC)).json() == []


async def test_a_dropped_connection_s_members_leave_every_node_after_its_remain_present_for(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """The node holding the dropped connection times its members' stay; their leave reaches the other nodes."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    watcher = await ably_wire(here)
    phone = await ably_wire(there, f"key={API_KEY}&clientId=phone&remainPresentFor=1000")
    wires.extend([watcher, phone])
    for peer in (watcher, phone):
        await peer.attach("room")
    await asyncio.sleep(0.2)
    phone_id = phone.connected["connectionId"]
    await phone.presence("room", {"action": ENTER, "data": "here"})
    assert _member(await _presence_event(watcher)) == (ENTER, "phone", phone_id, "here", None)

    phone.ws.transport.abort()  # no CLOSE, no close frame: held for a resume
    dropped = asyncio.get_running_loop().time()
    assert _member(await _presence_event(watcher, wait=5)) == (LEAVE, "phone", phone_id, "here", None)
    assert 0.8 <= asyncio.get_running_loop().time() - dropped <= 4
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        assert (await http.get("/channels/room/presence", headers=BASIC)).json() == []


async def test_a_dead_node_s_members_leave_on_the_survivors(spawn: Spawn, wires: list[Any]) -> None:
    doomed_process, doomed = await spawn()
    _, survivor = await spawn()
    watcher, alice = await ably_wire(survivor), await ably_wire(doomed, f"key={API_KEY}&clientId=alice")
    wires.extend([watcher, alice])
    for peer in (watcher, alice):
        await peer.attach("room")
    await asyncio.sleep(0.2)
    await alice.presence("room", {"action": ENTER, "data": "hello"})
    alice_id = alice.connected["connectionId"]
    assert _member(await _presence_event(watcher)) == (ENTER, "alice", alice_id, "hello", None)

    await doomed_process.kill()  # no goodbye: the survivor notices the heartbeat expiring (node ttl 1s)
    assert _member(await _presence_event(watcher)) == (LEAVE, "alice", alice_id, "hello", None)
    async with httpx.AsyncClient(base_url=survivor.http_url) as http:
        assert (await http.get("/channels/room/presence", headers=BASIC)).json() == []


async def _pusher_member(running: Any, user_id: str, info: dict[str, Any]) -> PusherWire:
    wire = await pusher_wire(running)
    channel_data = json.dumps({"user_id": user_id, "user_info": info})
    auth = channel_auth(APP.key, APP.secret, wire.socket_id, "presence-room", channel_data)
    await wire.send("pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    await wire.expect("pusher_internal:subscription_succeeded")
    return wire


async def _pusher_presence_event(peer: AblyWire) -> tuple[Any, ...]:
    message = await peer.expect(PRESENCE)
    assert message["channel"] == "presence-room" and len(message["presence"]) == 1
    return _member(message["presence"][0])


async def test_another_node_s_pusher_members_are_ably_members_of_a_presence_channel(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """A Pusher connection in a ``presence-`` channel is an Ably member on every node (connectionId: its socket id,
    data: its user_info), as on its own node: live, in a later attach's SYNC, over REST and in the occupancy."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    watcher = await ably_wire(here)
    wires.append(watcher)
    await watcher.attach("presence-room")
    await asyncio.sleep(0.2)

    pat = await _pusher_member(there, "pat", {"name": "Pat"})
    wires.append(pat)
    entered = (ENTER, "pat", pat.socket_id, '{"name":"Pat"}', "json")
    assert await _pusher_presence_event(watcher) == entered
    await asyncio.sleep(0.2)  # let the bus message reach both nodes' Redis state before a newcomer attaches

    late = await ably_wire(here)
    wires.append(late)
    await late.attach("presence-room")
    synced = await late.expect(SYNC)
    assert [_member(item) for item in synced["presence"]] == [(PRESENT, *entered[1:])]
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        listed = (await http.get("/channels/presence-room/presence", headers=BASIC)).json()
        details = (await http.get("/channels/presence-room", headers=BASIC)).json()
    assert [_member(item) for item in listed] == [(PRESENT, *entered[1:])]
    assert details["status"]["occupancy"]["metrics"]["presenceMembers"] == 1

    await pat.ws.close()
    left = (LEAVE, *entered[1:])
    assert await _pusher_presence_event(watcher) == left
    assert await _pusher_presence_event(late) == left
    async with httpx.AsyncClient(base_url=here.http_url) as http:
        assert (await http.get("/channels/presence-room/presence", headers=BASIC)).json() == []


async def test_a_dead_node_s_pusher_members_leave_ably_on_the_survivors(spawn: Spawn, wires: list[Any]) -> None:
    doomed_process, doomed = await spawn()
    _, survivor = await spawn()
    watcher = await ably_wire(survivor)
    wires.append(watcher)
    await watcher.attach("presence-room")
    await asyncio.sleep(0.2)
    pat = await _pusher_member(doomed, "pat", {"name": "Pat"})
    wires.append(pat)
    assert (await _pusher_presence_event(watcher))[:3] == (ENTER, "pat", pat.socket_id)

    await doomed_process.kill()
    message = await watcher.expect(PRESENCE)
    [left] = message["presence"]
    assert _member(left)[:3] == (LEAVE, "pat", pat.socket_id)
    assert not left["id"].startswith(pat.socket_id)  # SDKs then judge it by timestamp, newer than the ENTER (RTP2b1)


def test_an_unreadable_ably_member_in_a_nodes_state_is_skipped() -> None:
    """A node's stored state is read while the reader writes to Redis: one field it cannot read is skipped (and
    logged), not raised, so the reading node keeps writing."""
    member = {"id": "9.5:0:0", "clientId": "ann", "connectionId": "9.5", "timestamp": 1, "action": 1, "data": "hi"}
    packed = base64.b64encode(msgpack.packb(member, use_bin_type=True)).decode()
    held = NodeState(
        subscriptions={("1", "room"): 2},
        ably_members={("1", "room", "9.5", "ann"): packed, ("1", "room", "9.6", "bob"): packed},
    )
    fields = held.fields()
    (bob,) = [name for name in fields if "bob" in name]
    fields[bob] = base64.b64encode(msgpack.packb({"clientId": "bob"})).decode()  # no id, connection or timestamp
    fields["a\x1f1\x1fnot json"] = packed
    parsed = NodeState.parse(fields)
    assert parsed.ably_members == {("1", "room", "9.5", "ann"): packed}
    assert parsed.subscriptions == {("1", "room"): 2}


async def test_a_publish_as_another_node_s_connection_leaves_it_out_there(
    redis_server: RedisServer, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """A REST publish "as" a connection (``connectionKey``) reaching a node that does not hold the connection (a load
    balancer's choice) left nobody out: the echo=false Ably connection got its own message back and the Pusher socket
    its own event (the library's ``socket_id`` on ``ably://``). Every node now tells a connection's key from a made-up
    one (a MAC with the app's key secret): a forged key, well-formed, still leaves nobody out."""
    here, there = [await start_emulator(app=APP, redis_url=redis_server.url) for _ in range(2)]
    quiet = await ably_wire(there, f"key={API_KEY}&echo=false")
    listener = await ably_wire(there)
    pusher_peer = await pusher_wire(there)
    wires.extend([quiet, listener, pusher_peer])
    await on_orders(quiet, listener, pusher_peer=pusher_peer)

    quiet_id = quiet.connected["connectionId"]
    keys = {
        "as-ably": quiet.connected["connectionKey"],
        "as-pusher": pusher_peer.socket_id,
        "forged": f"{quiet_id}!0123456789abcdef",
        "bare-ably-id": listener.connected["connectionId"],  # left out as a socket id is, and not named as sender
    }
    async with httpx.AsyncClient(base_url=here.http_url, headers=BASIC) as http:
        for name, key in keys.items():
            answer = await http.post(
                "/channels/orders/messages", json={"name": name, "data": "x", "connectionKey": key}
            )
            assert answer.status_code == 201, answer.text

    heard = [(await listener.expect(MESSAGE)) for _ in range(3)]
    # A bare id cannot be told a Pusher socket's from an Ably connection's on another node: it names no sender
    assert [(m["messages"][0]["name"], m.get("connectionId")) for m in heard] == [
        ("as-ably", quiet_id),
        ("as-pusher", None),
        ("forged", None),
    ]
    names = [(await quiet.expect(MESSAGE))["messages"][0]["name"] for _ in range(3)]
    assert names == ["as-pusher", "forged", "bare-ably-id"]
    events = [(await pusher_peer.expect(name))["event"] for name in ("as-ably", "forged", "bare-ably-id")]
    assert events == ["as-ably", "forged", "bare-ably-id"]
