"""The in-process ``memory://`` provider and the module-level API built from the environment (issue 6, "API")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from libsupport import Emulator, MakeRelay, Subscribe, emulator_url

import relay
from relay import ChannelInfo, Event, PublishResult
from relay.adapters.memory import MEMORY_KEY, MEMORY_SECRET, MemoryStore, Published, memory_store
from relay.errors import ConfigError, InvalidChannelName, InvalidSignature, PayloadTooLarge
from relay.protocol.signing import verify_channel_auth, verify_user_auth, webhook_signature

PROVIDER_VARIABLES = ("RELAY_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "ABLY_API_KEY")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No provider variables, and a default client that is forgotten before and after the test."""
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    relay.reset_default_client()
    yield monkeypatch
    relay.reset_default_client()


def fresh_store(name: str) -> MemoryStore:
    store = memory_store(name)
    store.clear()
    return store


# -- module-level API -----------------------------------------------------------------------------------------------


def test_module_publish_uses_relay_url(environment: pytest.MonkeyPatch) -> None:
    store = fresh_store("x")
    environment.setenv("RELAY_URL", "memory://x")
    result = relay.publish("orders", "order-ready", {"id": 42})
    assert result == PublishResult(("orders",))
    relay.publish(["a", "b"], "e", "text", socket_id="1.2")
    assert store.published == [
        Published("orders", "order-ready", '{"id":42}'),
        Published("a", "e", "text", "1.2"),
        Published("b", "e", "text", "1.2"),
    ]
    assert repr(relay.default_client()) == "Relay('memory://x')"


def test_default_client_is_built_once_and_reset(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RELAY_URL", "memory://first")
    client = relay.default_client()
    assert relay.default_client() is client
    environment.setenv("RELAY_URL", "memory://second")
    assert relay.default_client() is client, "the environment is read once, on first use"
    relay.reset_default_client()
    assert repr(relay.default_client()) == "Relay('memory://second')"


def test_default_client_without_configuration(environment: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="set RELAY_URL"):
        relay.publish("orders", "e", "x")
    environment.setenv("RELAY_URL", "memory://later")
    assert relay.publish("orders", "e", "x").channels == ("orders",), "a failed first use is not cached"


def test_every_module_function(environment: pytest.MonkeyPatch) -> None:
    store = fresh_store("all")
    environment.setenv("RELAY_URL", "memory://all")
    relay.publish_batch([Event("a", "e1", 1), {"channel": "b", "name": "e2", "data": [2]}])
    relay.send_to_user("alice", "note", {"n": 1})
    relay.terminate_user_connections("alice")
    assert store.published == [
        Published("a", "e1", "1"),
        Published("b", "e2", "[2]"),
        Published("#server-to-user-alice", "note", '{"n":1}'),
    ]
    assert store.terminated_users == ["alice"]
    assert relay.channel("a") == ChannelInfo("a", False, None)  # subscription counting off, as Pusher's default
    assert relay.channel("presence-room") == ChannelInfo("presence-room", False, None, 0)  # as Pusher answers it
    assert relay.channels() == {}
    assert relay.presence_members("presence-room") == []

    auth = relay.authorize_channel("1.2", "presence-room", {"id": "alice", "info": {"n": 1}})
    verify_channel_auth(MEMORY_KEY, MEMORY_SECRET, "1.2", "presence-room", auth["auth"], auth["channel_data"])
    signin = relay.authenticate_user("1.2", "alice")
    assert json.loads(signin["user_data"]) == {"id": "alice"}
    verify_user_auth(MEMORY_KEY, MEMORY_SECRET, "1.2", signin["user_data"], signin["auth"])

    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_occupied", "channel": "a"}]})
    body = body.encode()
    headers = {"X-Pusher-Key": MEMORY_KEY, "X-Pusher-Signature": webhook_signature(MEMORY_SECRET, body)}
    assert [event.kind for event in relay.verify_webhook(headers, body)] == ["channel_occupied"]
    with pytest.raises(InvalidSignature):
        relay.verify_webhook(headers, body + b" ")


# -- the memory provider, sync and async --------------------------------------------------------------------------


async def test_clients_on_the_same_name_share_the_store(make_relay: MakeRelay) -> None:
    store = fresh_store("shared")
    other = fresh_store("other")
    app_side, test_side = make_relay("memory://shared"), make_relay("memory://shared")
    elsewhere = make_relay("memory://other")
    await app_side.publish("orders", "e", {"n": 1})
    await elsewhere.publish("orders", "e", {"n": 2})
    assert app_side.client.adapter.store is test_side.client.adapter.store is store
    assert store.published == [Published("orders", "e", '{"n":1}')]
    assert other.published == [Published("orders", "e", '{"n":2}')]
    assert app_side.requests == [], "nothing leaves the process"


async def test_memory_records_large_publishes_and_validates(make_relay: MakeRelay) -> None:
    store = fresh_store("big")
    client = make_relay("memory://big")
    channels = [f"c{i}" for i in range(150)]
    result = await client.publish(channels, "e", "x")
    assert result.channels == tuple(channels)
    assert [entry.channel for entry in store.published] == channels
    with pytest.raises(InvalidChannelName):
        await client.publish("no spaces allowed", "e", "x")
    assert len(store.published) == 150
    store.clear()
    assert store.published == [] and store.terminated_users == []


async def test_memory_refuses_data_over_pusher_s_10_kb_as_the_emulator_does(make_relay: MakeRelay) -> None:
    """A test suite on memory:// must not pass what Pusher and the emulator refuse: data over 10,240 UTF-8 bytes is
    PayloadTooLarge (413) with the emulator's message (a batch's names the event, batch[i]), for a publish, each
    event of a batch and send_to_user, and nothing of the call is recorded. 10,240 bytes exactly is recorded."""
    store = fresh_store("sized")
    client = make_relay("memory://sized")
    await client.publish("orders", "e", "x" * 10_240)
    assert [len(entry.data) for entry in store.published] == [10_240]
    store.clear()
    too_big = "é" * 5_121  # 10,242 bytes in UTF-8, 5,121 characters
    refusal = "data is 10242 bytes; the limit is 10240"
    calls = [
        (lambda: client.publish(["a", "b"], "e", too_big), refusal),
        (lambda: client.publish_batch([Event("a", "e", "small"), Event("b", "e", too_big)]), f"batch[1]: {refusal}"),
        (lambda: client.send_to_user("alice", "notice", too_big), refusal),
    ]
    for call, message in calls:
        with pytest.raises(PayloadTooLarge) as refused:
            await call()
        assert (refused.value.message, refused.value.http_status) == (message, 413)
    assert store.published == []


# -- subscriptions a test makes up ----------------------------------------------------------------------------------


async def test_made_up_subscriptions_are_answered_as_the_emulator_answers_real_ones(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """Memory answered every channel unoccupied and every presence channel empty, so code that branches on who is
    online could not be tested without monkeypatching. ``store.subscribe`` makes up the subscriptions real clients
    would make: the queries then answer as the emulator answers for those clients."""
    real = make_relay(emulator_url(emulator))
    for user in ("alice", "alice", "bob"):  # alice in two tabs: two connections, one member
        member = await subscriber(emulator)
        await member.subscribe("presence-room", await real.authorize_channel(member.socket_id, "presence-room", user))
    for channel in ("lobby", "private-inbox"):
        client = await subscriber(emulator)
        auth = await real.authorize_channel(client.socket_id, channel) if channel.startswith("private-") else None
        await client.subscribe(channel, auth)

    store = fresh_store("made-up")
    for channel, user in [("presence-room", "alice"), ("presence-room", "alice"), ("presence-room", "bob")]:
        store.subscribe(channel, user)
    store.subscribe("lobby")
    store.subscribe("private-inbox")
    memory = make_relay("memory://made-up")

    async def answers(client: Any) -> list[object]:
        members = sorted(member.user_id for member in await client.presence_members("presence-room"))
        queries = [client.channel(name) for name in ("presence-room", "presence-none", "lobby", "empty")]
        listings = [client.channels(prefix) for prefix in ("", "presence-", "priv", "x")]
        return [members, *[await query for query in queries], *[await listing for listing in listings]]

    expected = await answers(real)
    assert expected[:2] == [["alice", "bob"], ChannelInfo("presence-room", True, None, 2)]
    assert await answers(memory) == expected

    store.unsubscribe("presence-room", "alice")  # one of her tabs closed: still a member
    assert [member.user_id for member in await memory.presence_members("presence-room")] == ["alice", "bob"]
    await memory.terminate_user_connections("alice")  # her other connection closed
    assert [member.user_id for member in await memory.presence_members("presence-room")] == ["bob"]
    store.unsubscribe("lobby")
    assert await memory.channel("lobby") == ChannelInfo("lobby", False, None, None)
    store.clear()
    assert await memory.channels() == {}


def test_made_up_subscriptions_are_checked_as_a_subscription_is() -> None:
    store = fresh_store("made-up-refusals")
    with pytest.raises(ValueError, match=r"^a subscription to 'presence-room' needs a user id$"):
        store.subscribe("presence-room")
    with pytest.raises(ValueError, match=r"^'lobby' is not a presence channel: its subscriptions have no user id$"):
        store.subscribe("lobby", "alice")
    with pytest.raises(InvalidChannelName, match="the limit is 164"):
        store.subscribe("a" * 165)
    with pytest.raises(InvalidChannelName, match="user id"):
        store.subscribe("presence-room", "")
    with pytest.raises(ValueError, match=r"^no subscription of user 'bob' to 'presence-room' to end$"):
        store.unsubscribe("presence-room", "bob")
    with pytest.raises(ValueError, match=r"^no subscription to 'lobby' to end$"):
        store.unsubscribe("lobby")
    store.subscribe("presence-room", 42)  # an int id, as its digits, as a signed-in user's
    assert store.subscriptions == {"presence-room": ["42"]}
