"""Ably-format webhooks from the emulator (docs/emulator.md#what-it-implements, ``format = "ably"``): a team on Ably
develops its webhook handler against the emulator with ``RELAY_URL=ably://…`` and relay's ``verify_webhook``
unchanged. The emulator sends Ably's batched webhooks ({items}, ``X-Ably-Key`` and ``X-Ably-Signature`` with the
app's Ably key) of the events Ably has: channel.opened and channel.closed, presence (presence- channels' members, Ably
members on the others), client events and what is published through Ably's protocol as messages."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgpack  # type: ignore[import-untyped]
import pytest
from ablysupport import APP, ably_wire, pusher_wire

from relay import Relay
from relay.emulator.config import ABLY_WEBHOOK_EVENT_TYPES, WEBHOOK_EVENT_TYPES, EmulatorConfig, Webhook, load_config
from relay.emulator.webhooks import ably_items
from relay.errors import ConfigError, UnknownKey
from relay.protocol.signing import channel_auth
from tests.cli_support import assert_refused, run_relay
from tests.conftest import StartEmulator
from tests.gateway.conftest import JWT_SECRET, TOKEN, StartGateway
from tests.gateway.conftest import start_gateway as start_gateway
from tests.webhook_receiver import Receiver


def test_events_become_the_items_of_ably_s_sources() -> None:
    entered = {"action": 2, "clientId": "ann", "connectionId": "1.2", "id": "1.2:0:0", "data": '{"a":1}'}
    # A client event's message as AblyApp.client_event builds it, the one its Ably subscribers get
    client_message = {
        "name": "client-typing",
        "data": "{}",
        "encoding": "json",
        "id": "1.2:5:0",
        "timestamp": 1_700_000_000_000,
    }
    events = [
        {"name": "channel_occupied", "channel": "orders"},
        {"name": "presence", "channel": "presence-room", "presence": [entered]},
        {
            "name": "client_event",
            "channel": "private-chat",
            "event": "client-typing",
            "data": "{}",
            "socket_id": "1.2",
            "messages": [{**client_message, "connectionId": "1.2"}],
        },
        {"name": "presence", "channel": "presence-room", "presence": [{**entered, "action": 3, "id": "1.2:1:0"}]},
        {"name": "channel_vacated", "channel": "orders"},
        # Pusher's user-level presence events and the other Pusher-only ones have no Ably webhook
        {"name": "member_added", "channel": "presence-room", "user_id": "ann"},
        {"name": "subscription_count", "channel": "orders", "subscription_count": 2},
    ]
    serials = (f"s{number}" for number in itertools.count(7))
    items = ably_items(events, serials, lambda channel, opened: {"of": [channel, opened]})
    assert [(item["source"], item["name"], item["serial"]) for item in items] == [
        ("channel.lifecycle", "channel.opened", "s7"),
        ("channel.presence", "presence.message", "s8"),
        ("channel.message", "channel.message", "s9"),
        ("channel.presence", "presence.message", "s10"),
        ("channel.lifecycle", "channel.closed", "s11"),
    ]
    assert items[0]["data"] == {"channelId": "orders", "name": "orders", "status": {"of": ["orders", True]}}
    assert items[1]["data"] == {
        "channelId": "presence-room",
        "site": "local",
        "presence": [entered],
    }
    assert items[2]["data"] == {
        "channelId": "private-chat",
        "site": "local",
        "messages": [{**client_message, "connectionId": "1.2"}],
    }
    assert items[3]["data"]["presence"][0]["action"] == 3  # type: ignore[index]
    assert items[4]["data"]["status"] == {"of": ["orders", False]}  # type: ignore[index]


async def test_relay_verifies_the_emulators_ably_webhooks(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """End to end: an Ably member of a presence channel, a Pusher client's client event, the member's publish, a REST
    publish of binary data, the member's presence on an ordinary channel, her leaving; each request is signed with the
    app's Ably key, and relay's ``verify_webhook`` on an ``ably://`` URL of the emulator reads them as it reads
    Ably's."""
    app = replace(APP, webhooks=(Webhook(url=receiver.url, format="ably"),), webhook_delay=0.2)
    running = await start_emulator(app=app)
    member = await ably_wire(running, f"key={APP.ably_api_key}&clientId=ann")
    wires.append(member)
    await member.attach("presence-room")
    await member.attach("room")
    await member.presence("presence-room", {"action": 2, "data": "hi"})  # ENTER
    pusher = await pusher_wire(running)
    wires.append(pusher)
    await pusher.subscribe_private("private-chat")
    await pusher.send("client-typing", {"who": "bo"}, channel="private-chat")
    await member.publish("presence-room", {"name": "hello", "data": "from ann"})
    await member.presence("room", {"action": 2, "data": {"mood": "ok"}})  # Ably presence on any channel
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        basic = {"Authorization": "Basic " + base64.b64encode(APP.ably_api_key.encode()).decode()}
        blob = msgpack.packb({"name": "scan", "data": b"\x00\xff"}, use_bin_type=True)
        headers = {**basic, "Content-Type": "application/x-msgpack"}
        assert (await http.post("/channels/orders/messages", content=blob, headers=headers)).status_code == 201
    await receiver.until(lambda: len(receiver.deliveries) >= 1, within=5)
    await member.close()

    relay = Relay.from_url(f"ably://{APP.ably_api_key}@127.0.0.1:{running.port}?tls=false")
    key_name, secret = APP.ably_api_key.rsplit(":", 1)
    seen: list[tuple[str, str, str | None, str | None]] = []
    data: dict[str | None, Any] = {}
    senders: dict[tuple[str, str | None], str | None] = {}
    presence_data: dict[tuple[str, str], Any] = {}

    def verified() -> list[tuple[str, str, str | None, str | None]]:
        seen.clear()
        for delivery in receiver.deliveries:
            headers = delivery.headers
            assert headers["x-ably-key"] == key_name and headers["content-type"] == "application/json"
            expected = base64.b64encode(hmac.new(secret.encode(), delivery.body, hashlib.sha256).digest()).decode()
            assert headers["x-ably-signature"] == expected
            assert "x-pusher-signature" not in headers and "items" in json.loads(delivery.body)
            for event in relay.verify_webhook(headers, delivery.body):
                seen.append((event.kind, event.channel, event.user_id, event.event))
                data[event.event] = event.data
                senders[(event.kind, event.event or event.channel)] = event.socket_id
                if event.kind.startswith("member_"):
                    presence_data[(event.kind, event.channel)] = event.data
        return seen

    await receiver.until(
        lambda: (
            {("channel_vacated", "presence-room", None, None), ("channel_vacated", "room", None, None)}
            <= set(verified())
        ),
        within=5,
    )
    # The sender's connection id is the event's socket id, as a Pusher client event's; presence data comes too.
    assert senders[("message", "hello")] == member.connected["connectionId"]
    assert senders[("message", "client-typing")] == pusher.socket_id
    assert senders[("member_added", "room")] == member.connected["connectionId"]
    assert presence_data[("member_added", "room")] == '{"mood":"ok"}'  # Ably's presence data, as sent (JSON text)
    assert presence_data[("member_added", "presence-room")] == "hi"  # as Ably sends it: the member's own data
    assert data["hello"] == "from ann" and data["scan"] == b"\x00\xff"  # sent as base64, given back as bytes
    assert sorted(set(seen)) == sorted(
        {
            ("channel_occupied", "presence-room", None, None),
            ("member_added", "presence-room", "ann", None),
            ("channel_occupied", "private-chat", None, None),
            ("message", "private-chat", None, "client-typing"),
            ("message", "presence-room", "ann", "hello"),  # an Ably client's publish
            ("message", "orders", None, "scan"),  # a REST publish of binary data
            ("member_removed", "presence-room", "ann", None),
            ("channel_vacated", "presence-room", None, None),
            ("channel_occupied", "room", None, None),
            ("member_added", "room", "ann", None),
            ("member_removed", "room", "ann", None),  # her connection closed
            ("channel_vacated", "room", None, None),
        }
    )
    assert seen.count(("member_added", "presence-room", "ann", None)) == 1  # once: not again as a Pusher member


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"format": "json"}, "format must be one of pusher, ably, got 'json'"),
        (
            {"format": "ably", "event_types": frozenset({"presence", "subscription_count"})},
            "event_types has types ably webhooks do not send: ['subscription_count']; known: ['channel_occupied',",
        ),
        (
            # Ably's presence is per connection, all of it the event type "presence"; Pusher's per-user events are not
            {"format": "ably", "event_types": frozenset({"member_added", "member_removed"})},
            "event_types has types ably webhooks do not send: ['member_added', 'member_removed']; known: ['chann",
        ),
    ],
)
def test_a_webhook_format_ably_cannot_carry_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Webhook(url="http://127.0.0.1:9/hooks", **fields)
    assert refused.value.message.startswith(message)


def test_an_ably_webhook_takes_every_event_ably_has_by_default() -> None:
    assert Webhook(url="http://127.0.0.1:9/hooks", format="ably").event_types == ABLY_WEBHOOK_EVENT_TYPES


async def test_the_cli_refuses_a_webhook_format_without_a_url() -> None:
    outcome = await run_relay("emulator", "--port", "0", "--webhook-format", "ably")
    assert_refused(outcome, "--webhook-format is the format of the --webhook-url webhooks: give one")


def test_an_explicit_list_is_checked_against_ably_s_events(tmp_path: Path) -> None:
    """Every event type written out, as for a Pusher webhook, is refused for an Ably one: four have no Ably event (it
    was narrowed silently when all seven were listed, refused when six were)."""
    every = ", ".join(f"'{name}'" for name in sorted(WEBHOOK_EVENT_TYPES))
    path = tmp_path / "relay.toml"
    path.write_text(
        f"[[apps]]\napp_id = '1'\nkey = 'k'\nsecret = 's'\n[[apps.webhooks]]\nurl = 'http://127.0.0.1:9/h'\n"
        f"format = 'ably'\nevent_types = [{every}]\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path, defaults=EmulatorConfig(apps=(APP,)))
    assert "do not send: ['cache_miss', 'member_added', 'member_removed', 'subscription_count']" in (
        refused.value.message
    )


async def test_an_ably_members_update_on_a_presence_channel_is_sent(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """An Ably member's update on a presence- channel (Pusher has no such event) is sent as Ably sends it, data
    included, once (not beside another enter)."""
    app = replace(APP, webhooks=(Webhook(url=receiver.url, format="ably"),), webhook_delay=0.2)
    running = await start_emulator(app=app)
    member = await ably_wire(running, f"key={APP.ably_api_key}&clientId=ann")
    wires.append(member)
    await member.attach("presence-room")
    await member.presence("presence-room", {"action": 2, "data": "hi"})  # ENTER
    await member.presence("presence-room", {"action": 4, "data": "away"})  # UPDATE

    def presence() -> list[tuple[str, int, str, Any]]:
        return [
            (item["data"]["channelId"], member_item["action"], member_item["clientId"], member_item.get("data"))
            for delivery in receiver.deliveries
            for item in json.loads(delivery.body)["items"]
            if item["name"] == "presence.message"
            for member_item in item["data"]["presence"]
        ]

    await receiver.until(lambda: len(presence()) >= 2, within=5)
    await asyncio.sleep(0.3)  # no third: the update is not sent again, nor as an enter
    assert presence() == [("presence-room", 2, "ann", "hi"), ("presence-room", 4, "ann", "away")]


async def test_lifecycle_items_carry_the_channels_occupancy(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """channel.opened and channel.closed carry a ChannelDetails as Ably's do, ``status.occupancy.metrics`` included
    (a receiver written for Ably reads ``data.status.occupancy.metrics.connections``): counted when the item is
    sent, across both protocols; nothing at the closing."""
    app = replace(APP, webhooks=(Webhook(url=receiver.url, format="ably"),), webhook_delay=0.1)
    running = await start_emulator(app=app)

    def lifecycle() -> list[tuple[str, str, dict[str, Any]]]:
        return [
            (item["name"], item["data"]["channelId"], item["data"]["status"])
            for delivery in receiver.deliveries
            for item in json.loads(delivery.body)["items"]
            if item["source"] == "channel.lifecycle"
        ]

    metrics = "connections presenceConnections presenceMembers presenceSubscribers publishers subscribers"
    zero = dict.fromkeys([*metrics.split(), "objectPublishers", "objectSubscribers"], 0)
    pusher = await pusher_wire(running)
    wires.append(pusher)
    await pusher.send("pusher:subscribe", {"channel": "orders"})
    await pusher.expect("pusher_internal:subscription_succeeded")
    await receiver.until(lambda: len(lifecycle()) == 1, within=5)
    one_pusher_subscriber = {**zero, "connections": 1, "subscribers": 1}  # a public channel: no client events
    assert lifecycle() == [
        ("channel.opened", "orders", {"isActive": True, "occupancy": {"metrics": one_pusher_subscriber}})
    ]

    member = await ably_wire(running, f"key={APP.ably_api_key}&clientId=ann")
    wires.append(member)
    await member.attach("room")  # every mode its key allows
    await receiver.until(lambda: len(lifecycle()) == 2, within=5)
    every_mode = {**zero, "connections": 1, "subscribers": 1, "publishers": 1}
    every_mode |= {"presenceConnections": 1, "presenceSubscribers": 1}
    assert lifecycle()[1] == ("channel.opened", "room", {"isActive": True, "occupancy": {"metrics": every_mode}})

    await pusher.send("pusher:unsubscribe", {"channel": "orders"})
    await receiver.until(lambda: len(lifecycle()) == 3, within=5)
    assert lifecycle()[2] == ("channel.closed", "orders", {"isActive": False, "occupancy": {"metrics": zero}})


async def test_custom_headers_cannot_replace_the_signed_ones(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    headers = {"x-ably-version": "9.9", "X-Ably-Key": "someone.else", "X-Source": "relay"}
    hook = Webhook(url=receiver.url, format="ably", headers=headers)
    running = await start_emulator(app=replace(APP, webhooks=(hook,)))
    wires.append(await pusher_wire(running))
    await wires[0].send("pusher:subscribe", {"channel": "orders"})
    [delivery] = await receiver.wait_for(1, within=5)
    assert delivery.header_values("x-ably-version") == ["1.2"]
    assert delivery.header_values("x-ably-key") == [APP.ably_api_key.split(":")[0]]
    assert delivery.header_values("x-source") == ["relay"]


async def test_an_ably_webhook_verified_by_a_pusher_protocol_client_says_which_format_it_is(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """An emulator sending ``format = "ably"`` webhooks to a receiver configured with its ``emulator://`` URL (a
    gateway's RELAY_URL) was refused with "webhook X-Pusher-Key is missing or not this application's key", which the
    request never had: the refusal says the webhook is in Ably's format and what verifies it."""
    hook = Webhook(url=receiver.url, format="ably")
    running = await start_emulator(app=replace(APP, webhooks=(hook,)))
    wires.append(await pusher_wire(running))
    await wires[0].send("pusher:subscribe", {"channel": "orders"})
    [delivery] = await receiver.wait_for(1, within=5)
    pusher_side = Relay.from_url(f"emulator://{APP.key}:{APP.secret}@127.0.0.1:{running.port}/apps/{APP.app_id}")
    with pytest.raises(UnknownKey) as refused:
        pusher_side.verify_webhook(delivery.headers, delivery.body)
    assert "an Ably webhook (X-Ably-Signature)" in str(refused.value)
    ably_side = Relay.from_url(f"ably://{APP.ably_api_key}@127.0.0.1:{running.port}?tls=false")
    assert [event.kind for event in ably_side.verify_webhook(delivery.headers, delivery.body)] == ["channel_occupied"]


async def test_relay_serve_forwards_the_emulators_ably_webhooks(
    receiver: Receiver, start_emulator: StartEmulator, start_gateway: StartGateway, wires: list[Any]
) -> None:
    """The gateway's ``/v1/webhooks`` with ``RELAY_URL=ably://…`` of the emulator verifies the emulator's Ably-format
    webhook as it verifies Ably's, and forwards the normalised events (Next.js route handlers receive them so)."""
    hook = Webhook(url=f"{receiver.url}/from-emulator", format="ably")
    running = await start_emulator(app=replace(APP, webhooks=(hook,)))
    env = {
        "RELAY_URL": f"ably://{APP.ably_api_key}@127.0.0.1:{running.port}?tls=false",
        "RELAY_API_TOKEN": TOKEN,
        "RELAY_JWT_SECRET": JWT_SECRET,
        "RELAY_WEBHOOK_FORWARD_URL": f"{receiver.url}/forwarded",
    }
    gateway = await start_gateway(env=env)
    wires.append(await ably_wire(running))
    await wires[0].attach("orders")
    [sent] = await receiver.wait_for(1, within=5)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answer = await http.post("/v1/webhooks", content=sent.body, headers=sent.headers)
        assert (answer.status_code, answer.json()) == (200, {"events": 1})
        [forwarded] = [delivery for delivery in await receiver.wait_for(2) if delivery.path == "/forwarded"]
        assert [(event["kind"], event["channel"]) for event in forwarded.events] == [("channel_occupied", "orders")]

        # Binary data (an Ably message's) is forwarded as base64, marked so: JSON has no bytes. Ciphertext, which relay
        # cannot decrypt, keeps the steps still on it
        basic = {"Authorization": "Basic " + base64.b64encode(APP.ably_api_key.encode()).decode()}
        messages = [
            {"name": "scan", "data": b"\x00\xff"},
            {"name": "secret", "data": b"\x00\x01\x02\x03", "encoding": "utf-8/cipher+aes-128-cbc"},
        ]
        headers = {**basic, "Content-Type": "application/x-msgpack"}
        blob = msgpack.packb(messages, use_bin_type=True)
        published = await http.post(f"{running.http_url}/channels/orders/messages", content=blob, headers=headers)
        assert published.status_code == 201
        sent = [delivery for delivery in await receiver.wait_for(3, within=5) if delivery.path == "/from-emulator"][-1]
        answer = await http.post("/v1/webhooks", content=sent.body, headers=sent.headers)
        assert (answer.status_code, answer.json()) == (200, {"events": 2})
    forwarded = [delivery for delivery in await receiver.wait_for(4) if delivery.path == "/forwarded"][-1]
    assert [(event["kind"], event["event"], event["data"], event["encoding"]) for event in forwarded.events] == [
        ("message", "scan", "AP8=", "base64"),
        ("message", "secret", "AAECAw==", "utf-8/cipher+aes-128-cbc/base64"),
    ]


async def test_presence_channel_members_are_sent_per_connection_with_their_data(
    receiver: Receiver, start_emulator: StartEmulator, wires: list[Any]
) -> None:
    """Ably's channel.presence has one item per connection's enter and leave, with the member's data (reference §D.9).
    On a presence- channel the Ably-format webhook sent one bare item per user (Pusher's member_added, without
    connectionId, id or data), and nothing for a second connection of the same user. Now: each Ably connection's own
    PresenceMessage, and each Pusher member connection as an Ably member (its user_info as JSON data), even with no
    Ably client connected; a Pusher-format webhook of the same app keeps Pusher's one member_added per user."""
    ably_hook = Webhook(url=f"{receiver.url}/ably", format="ably", event_types=frozenset({"presence"}))
    pusher_hook = Webhook(url=f"{receiver.url}/pusher", event_types=frozenset({"member_added", "member_removed"}))
    running = await start_emulator(app=replace(APP, webhooks=(ably_hook, pusher_hook), webhook_delay=0.2))

    def ably_presence() -> list[dict[str, Any]]:
        return [
            {**member, "channel": item["data"]["channelId"]}
            for delivery in receiver.deliveries
            if delivery.path == "/ably"
            for item in json.loads(delivery.body)["items"]
            for member in item["data"]["presence"]
        ]

    bo = await pusher_wire(running)
    wires.append(bo)
    channel_data = json.dumps({"user_id": "bo", "user_info": {"name": "Bo"}})
    auth = channel_auth(APP.key, APP.secret, bo.socket_id, "presence-room", channel_data)
    await bo.send("pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    await bo.expect("pusher_internal:subscription_succeeded")
    await receiver.until(lambda: len(ably_presence()) == 1, within=5)  # before any Ably client has come
    [entered] = ably_presence()
    assert entered["channel"] == "presence-room" and entered["timestamp"] > 0
    assert {key: entered[key] for key in ("action", "clientId", "connectionId", "id", "data", "encoding")} == {
        "action": 2,
        "clientId": "bo",
        "connectionId": bo.socket_id,
        "id": f"{bo.socket_id}:1:0",  # the app's first presence join of a Pusher connection
        "data": '{"name":"Bo"}',
        "encoding": "json",
    }

    first, second = [await ably_wire(running, f"key={APP.ably_api_key}&clientId=ann") for _ in range(2)]
    wires.extend((first, second))
    for wire, mood in ((first, "one"), (second, "two")):
        await wire.attach("presence-room")
        await wire.presence("presence-room", {"action": 2, "data": mood})
    await bo.send("pusher:unsubscribe", {"channel": "presence-room"})
    await receiver.until(lambda: len(ably_presence()) == 4, within=5)
    assert [(m["action"], m["clientId"], m["connectionId"], m.get("data")) for m in ably_presence()[1:]] == [
        (2, "ann", first.connected["connectionId"], "one"),
        (2, "ann", second.connected["connectionId"], "two"),
        (3, "bo", bo.socket_id, '{"name":"Bo"}'),
    ]
    await receiver.until(lambda: len(receiver.events("/pusher")) == 3, within=5)
    assert [(event["name"], event["user_id"]) for event in receiver.events("/pusher")] == [
        ("member_added", "bo"),
        ("member_added", "ann"),  # once, for her first connection
        ("member_removed", "bo"),
    ]

    # The same socket joining again is a newer member (Ably compares ids: connection, then msgSerial, then index),
    # not the first enter again: ids were socket:0:0 at every enter, socket:1:0 at every leave.
    await bo.send("pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    await receiver.until(lambda: len(ably_presence()) == 5, within=5)
    await bo.send("pusher:unsubscribe", {"channel": "presence-room"})
    await receiver.until(lambda: len(ably_presence()) == 6, within=5)
    bos = [(m["action"], m["id"]) for m in ably_presence() if m["clientId"] == "bo"]
    assert bos == [
        (2, f"{bo.socket_id}:1:0"),
        (3, f"{bo.socket_id}:1:1"),
        (2, f"{bo.socket_id}:2:0"),
        (3, f"{bo.socket_id}:2:1"),
    ]
