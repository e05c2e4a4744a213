"""Emulator nodes sharing a real redis-server: fan-out, presence, users, cache and webhooks across nodes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from relay.emulator.cluster import NodeState
from relay.emulator.config import Webhook
from relay.protocol.signing import channel_auth, user_auth
from tests.cluster.conftest import RedisServer
from tests.conftest import TEST_APP, RunningEmulator, StartEmulator
from tests.webhook_receiver import Receiver

Nodes = Callable[..., Awaitable[list[RunningEmulator]]]


@pytest.fixture
def nodes(redis_server: RedisServer, start_emulator: StartEmulator) -> Nodes:
    """Nodes on one Redis; they are closed before that Redis stops (fixtures tear down in reverse order)."""

    async def start(count: int = 2, **options: Any) -> list[RunningEmulator]:
        options.setdefault("redis_url", redis_server.url)
        return [await start_emulator(**options) for _ in range(count)]

    return start


class Client:
    def __init__(self, ws: ClientConnection, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def open(cls, node: RunningEmulator) -> Client:
        ws = await connect(node.ws_url())
        established = json.loads(await ws.recv())
        return cls(ws, json.loads(established["data"])["socket_id"])

    async def send(self, event: str, data: object, channel: str | None = None) -> None:
        frame: dict[str, object] = {"event": event, "data": data}
        if channel is not None:
            frame["channel"] = channel
        await self.ws.send(json.dumps(frame))

    async def recv(self, within: float = 2.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), within))
        return frame

    async def expect(self, event: str, within: float = 2.0) -> dict[str, Any]:
        while True:
            frame = await self.recv(within)
            if frame["event"] == event:
                return frame

    async def silent(self, within: float = 0.4) -> None:
        try:
            frame = await self.recv(within)
        except TimeoutError:
            return
        pytest.fail(f"unexpected frame {frame}")

    async def subscribe(self, channel: str, user_id: str | None = None) -> dict[str, Any]:
        data: dict[str, object] = {"channel": channel}
        if user_id is not None:
            channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id.title()}})
            data.update(
                channel_data=channel_data,
                auth=channel_auth("app-key", "app-secret", self.socket_id, channel, channel_data),
            )
        elif channel.startswith("private-"):
            data["auth"] = channel_auth("app-key", "app-secret", self.socket_id, channel)
        await self.send("pusher:subscribe", data)
        return await self.expect("pusher_internal:subscription_succeeded")

    async def sign_in(self, user_id: str) -> None:
        user_data = json.dumps({"id": user_id})
        await self.send(
            "pusher:signin",
            {"user_data": user_data, "auth": user_auth("app-key", "app-secret", self.socket_id, user_data)},
        )
        await self.expect("pusher:signin_success")


def sdk(node: RunningEmulator) -> pusher.Pusher:
    return pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host="127.0.0.1", port=node.port, ssl=False)


async def settle() -> None:
    """A pause for announcements to cross Redis; a test asserting on what crossed waits for it with :func:`answers`."""
    await asyncio.sleep(0.15)


async def answers(query: Callable[[], Awaitable[object]], expected: object, within: float = 5.0) -> None:
    """Ask ``query`` until it answers exactly ``expected``: what crosses Redis takes milliseconds on an idle machine
    and much longer on a loaded one. (The webhook tests' ``until`` takes a plain predicate; this one awaits, as an
    HTTP call to a node in this event loop must.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (answer := await query()) != expected:
        assert loop.time() < deadline, f"{answer!r} after {within} s, not {expected!r}"
        await asyncio.sleep(0.05)


async def presence_ids(node: RunningEmulator, channel: str = "presence-room") -> list[str]:
    users = await asyncio.to_thread(sdk(node).users_info, channel)
    return sorted(user["id"] for user in users["users"])


async def test_a_publish_on_any_node_reaches_every_subscriber_exactly_once(nodes: Nodes) -> None:
    cluster = await nodes(3)
    clients = [await Client.open(node) for node in cluster]
    for client in clients:
        await client.subscribe("news")
    await settle()
    await asyncio.to_thread(sdk(cluster[1]).trigger, "news", "update", {"n": 1})
    for client in clients:
        assert await client.expect("update") == {"event": "update", "channel": "news", "data": '{"n": 1}'}
        await client.silent(0.2)


async def test_socket_id_exclusion_and_client_events_hold_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes(2)
    on_a, on_b = await Client.open(a), await Client.open(b)
    for client in (on_a, on_b):
        await client.subscribe("private-chat")
    await settle()
    await asyncio.to_thread(sdk(a).trigger, "private-chat", "msg", "x", socket_id=on_b.socket_id)
    await on_a.expect("msg")
    await on_b.silent()
    await on_a.send("client-typing", {"who": "a"}, channel="private-chat")
    relayed = await on_b.expect("client-typing")
    assert relayed["data"] == '{"who":"a"}'
    await on_b.silent(0.2)
    await on_a.silent(0.2)


async def test_presence_is_cluster_wide_with_one_member_event_per_user(nodes: Nodes) -> None:
    a, b = await nodes(2)
    watcher = await Client.open(a)
    await watcher.subscribe("presence-room", "watcher")
    await answers(lambda: presence_ids(b), ["watcher"])
    alice_on_b = await Client.open(b)
    joined = await alice_on_b.subscribe("presence-room", "alice")
    assert sorted(json.loads(joined["data"])["presence"]["ids"]) == ["alice", "watcher"]
    added = await watcher.expect("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "alice", "user_info": {"name": "Alice"}}
    await answers(lambda: presence_ids(a), ["alice", "watcher"])
    alice_on_a = await Client.open(a)
    again = await alice_on_a.subscribe("presence-room", "alice")
    assert json.loads(again["data"])["presence"]["count"] == 2
    await watcher.silent()
    assert await presence_ids(a) == ["alice", "watcher"]
    info = await asyncio.to_thread(sdk(b).channel_info, "presence-room", ["user_count"])
    assert info == {"occupied": True, "user_count": 2}
    await alice_on_b.ws.close()
    await watcher.silent()
    await alice_on_a.ws.close()
    removed = await watcher.expect("pusher_internal:member_removed")
    assert json.loads(removed["data"]) == {"user_id": "alice"}


async def test_http_api_answers_are_cluster_wide(nodes: Nodes) -> None:
    a, b = await nodes(2, app=replace(TEST_APP, subscription_count=True))  # info=subscription_count needs it
    on_a, on_b, other_b = await Client.open(a), await Client.open(b), await Client.open(b)
    await on_a.subscribe("orders")
    await on_b.subscribe("orders")
    await other_b.subscribe("stock")
    await answers(lambda: asyncio.to_thread(sdk(a).channels_info), {"channels": {"orders": {}, "stock": {}}})
    await answers(
        lambda: asyncio.to_thread(sdk(a).channel_info, "orders", ["subscription_count"]),
        {"occupied": True, "subscription_count": 2},
    )
    # The listing counts in one pass over the names: a channel held here and on b, and one held on b alone
    await answers(
        lambda: asyncio.to_thread(sdk(a).channels_info, attributes=["subscription_count"]),
        {"channels": {"orders": {"subscription_count": 2}, "stock": {"subscription_count": 1}}},
    )


async def test_send_to_user_and_terminate_reach_every_node(nodes: Nodes) -> None:
    a, b = await nodes(2)
    first, second = await Client.open(a), await Client.open(b)
    for client in (first, second):
        await client.sign_in("42")
    await settle()
    await asyncio.to_thread(sdk(a).send_to_user, "42", "notice", {"hi": 1})
    for client in (first, second):
        assert (await client.expect("notice"))["channel"] == "#server-to-user-42"
    await asyncio.to_thread(sdk(b).terminate_user_connections, "42")
    for client in (first, second):
        error = await client.expect("pusher:error")
        assert error["data"]["code"] == 4009


async def test_cache_channels_are_shared(nodes: Nodes) -> None:
    a, b = await nodes(2)
    await asyncio.to_thread(sdk(a).trigger, "cache-price", "tick", "41")

    async def cached_on_b() -> tuple[str, str] | None:
        return b.node.states["1"].cached("cache-price")

    await answers(cached_on_b, ("tick", "41"))
    late = await Client.open(b)
    await late.subscribe("cache-price")
    assert (await late.expect("tick"))["data"] == "41"
    joined_later = (await nodes(1))[0]
    latest = await Client.open(joined_later)
    await latest.subscribe("cache-price")
    assert (await latest.expect("tick"))["data"] == "41"


async def test_webhooks_fire_once_per_cluster_transition(nodes: Nodes, receiver: Receiver) -> None:
    app = replace(TEST_APP, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=10, webhook_delay=0.3)
    a, b = await nodes(2, app=app)
    on_a, on_b = await Client.open(a), await Client.open(b)
    await on_a.subscribe("presence-room", "alice")
    await settle()
    await on_b.subscribe("presence-room", "alice")
    await settle()
    await on_a.ws.close()
    await asyncio.sleep(0.5)
    await on_b.ws.close()
    await receiver.until(lambda: len(receiver.events(names={"channel_vacated"})) == 1, within=3)
    await asyncio.sleep(0.4)
    names = [event["name"] for event in receiver.events()]
    assert sorted(names) == ["channel_occupied", "channel_vacated", "member_added", "member_removed"]


async def test_two_deployments_share_one_redis_without_cross_talk(nodes: Nodes) -> None:
    counting = replace(TEST_APP, subscription_count=True)  # info=subscription_count needs it
    (blue,) = await nodes(1, redis_prefix="blue", app=counting)
    (green,) = await nodes(1, redis_prefix="green", app=counting)
    on_blue, on_green = await Client.open(blue), await Client.open(green)
    await on_blue.subscribe("news")
    await on_green.subscribe("news")
    await on_green.expect("pusher_internal:subscription_count")
    await settle()
    await asyncio.to_thread(sdk(blue).trigger, "news", "only-blue", "x")
    await on_blue.expect("only-blue")
    await on_green.silent()
    listed = await asyncio.to_thread(sdk(green).channel_info, "news", ["subscription_count"])
    assert listed["subscription_count"] == 1


async def test_two_deployments_on_different_redis_databases_do_not_hear_each_other(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    """The same prefix on databases 0 and 1 of one Redis: pub/sub ignores the database, so each deployment got the
    other's publishes and presence members (and forgot the other's nodes at each heartbeat, member_removed and all).
    The bus now carries the database number; database 0's keeps its name, for a rolling upgrade."""
    prod, prod_peer = await nodes(2)
    (staging,) = await nodes(1, redis_url=redis_server.url.removesuffix("/0") + "/1")
    on_peer, on_staging = await Client.open(prod_peer), await Client.open(staging)
    await on_peer.subscribe("news")
    await on_staging.subscribe("news")
    await on_staging.subscribe("presence-room", "watcher")
    alice = await Client.open(prod)
    await alice.subscribe("presence-room", "alice")
    await asyncio.to_thread(sdk(prod).trigger, "news", "only-prod", "x")
    await on_peer.expect("only-prod")  # it crossed database 0's bus
    await on_staging.silent()  # neither the publish nor alice's member_added
    assert await presence_ids(staging) == ["watcher"]
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    assert sorted(await check.pubsub_channels()) == ["relay:bus", "relay:bus:1"]
    await check.aclose()


async def test_a_presence_member_whose_user_id_holds_the_separator_is_seen_by_a_node_started_later(
    redis_server: RedisServer, start_emulator: StartEmulator
) -> None:
    """User ids are any string: one holding the node state's field separator is stored and read back whole, so a node
    started later (or resyncing after an outage) sees the member."""
    (a,) = [await start_emulator(redis_url=redis_server.url)]
    odd = await Client.open(a)
    await odd.subscribe("presence-room", "ann\x1fsmith")
    plain = await Client.open(a)
    await plain.subscribe("presence-room", "bob")
    check = aioredis.Redis.from_url(redis_server.url, decode_responses=True)

    async def stored_members() -> list[str]:
        """The members node a's stored state holds, which a node started later reads."""
        fields = await check.hgetall(f"relay:nodestate:{a.node.node_id}")
        return sorted(user_id for _, _, user_id in NodeState.parse(fields).members)

    await answers(stored_members, ["ann\x1fsmith", "bob"])
    await check.aclose()
    (b,) = [await start_emulator(redis_url=redis_server.url)]
    users = await asyncio.to_thread(sdk(b).users_info, "presence-room")
    assert sorted(user["id"] for user in users["users"]) == ["ann\x1fsmith", "bob"]
