"""The hub after a code review: an Ably publish fills a cache channel as a Pusher publish does (re-arming the
``cache_miss`` webhook), a node's snapshot is applied to the replica by ``AppState.apply_snapshot``, without Redis,
and one ``wire`` helper builds every frame header (text, binary, compressed) as websockets serializes it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from relay.emulator.config import Webhook
from relay.emulator.hub import AppHolding, AppState
from relay.emulator.webhooks import WebhookDispatcher
from relay.emulator.wire import binary_frame, build_frame, deflated, encode_text, payload_offset
from relay.protocol.signing import channel_auth
from tests.ably.test_ably_hub import Hub, pusher_send, send
from tests.conformance.wsclient import Connect
from tests.conformance.wsclient import connect as connect
from tests.conftest import TEST_APP, StartEmulator
from tests.emulator.test_session import Clock
from tests.webhook_receiver import Receiver

PRESENT, ENTER, LEAVE = 1, 2, 3
PRESENCE = 14


async def test_an_ably_publish_to_a_cache_channel_re_arms_the_cache_miss_webhook(
    start_emulator: StartEmulator, receiver: Receiver, connect: Connect
) -> None:
    """As with a Pusher publish: a miss posts ``cache_miss``, an Ably REST publish fills the cache (a later subscriber
    gets the event), and once it expires the next miss is posted at once, not CACHE_MISS_INTERVAL later."""
    hook = Webhook(url=receiver.url, event_types=frozenset({"cache_miss"}))
    # The cached event lives long enough for a connect and subscribe on a loaded machine.
    app = replace(TEST_APP, webhooks=(hook,), webhook_batch_ms=20, cache_ttl=2.0)
    emulator = await start_emulator(app=app)
    first = await connect(emulator)
    await first.subscribed("cache-x")
    await first.expect("pusher:cache_miss", "cache-x")
    await receiver.wait_for(1)

    auth = (f"{app.app_id}.{app.key}", app.secret)
    async with httpx.AsyncClient(base_url=emulator.http_url, auth=auth) as http:
        published = await http.post("/channels/cache-x/messages", json={"name": "price", "data": "42"})
    assert published.status_code == 201, published.text
    assert (await first.expect("price", "cache-x"))["data"] == "42"
    cached = await connect(emulator)
    await cached.subscribed("cache-x")
    assert await cached.recv() == {"event": "price", "channel": "cache-x", "data": "42"}

    await asyncio.sleep(2.1)  # the cached event expires, well within CACHE_MISS_INTERVAL (10 s)
    late = await connect(emulator)
    await late.subscribed("cache-x")
    await late.expect("pusher:cache_miss", "cache-x")
    await receiver.wait_for(2)
    assert receiver.events() == [{"name": "cache_miss", "channel": "cache-x"}] * 2


class NullLink:
    """A ClusterLink that ignores what this node announces: the state routes events as a cluster node's does."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def test_a_node_s_snapshot_replaces_what_the_replica_holds_with_events_for_the_differences_only() -> None:
    """Another node's subscribers, presence member, signed-in user and Ably member arrive with its snapshot (a Pusher
    subscriber hears ``member_added``, an Ably one the ENTER); the same snapshot again changes nothing; an empty one
    takes everything away again (``member_removed``, the Ably LEAVE)."""
    hub = Hub(cluster=NullLink())  # type: ignore[arg-type]
    state = hub.state
    pusher, pusher_link = hub.pusher()
    channel_data = json.dumps({"user_id": "ann", "user_info": {}})
    auth = channel_auth("key", "secret", pusher.socket_id, "presence-room", channel_data)
    pusher_send(pusher, "pusher:subscribe", {"channel": "presence-room", "auth": auth, "channel_data": channel_data})
    ably, ably_link = hub.ably_session()
    send(ably, {"action": 10, "channel": "presence-room"})
    pusher_link.take()
    ably_link.take()

    member = {"action": PRESENT, "clientId": "cat", "connectionId": "2.7", "id": "2.7:0:0", "timestamp": 1}
    held = AppHolding(
        subscriptions={"presence-room": 3},
        members={("presence-room", "bob"): '{"name":"bob"}'},
        users={"bob"},
        ably_members={("presence-room", "2.7", "cat"): member},
    )
    state.apply_snapshot(2, held)
    assert [(f["event"], json.loads(f["data"])) for f in pusher_link.take()] == [
        ("pusher_internal:member_added", {"user_id": "bob", "user_info": {"name": "bob"}})
    ]
    entered = [m for m in ably_link.take() if m["action"] == PRESENCE]
    assert [[(item["clientId"], item["action"]) for item in m["presence"]] for m in entered] == [[("cat", ENTER)]]
    assert state.subscription_count("presence-room") == 2 + 3
    assert state.presence_hash("presence-room") == {"ann": "{}", "bob": '{"name":"bob"}'}
    assert state.is_online("bob")
    assert ("2.7", "cat") in hub.ably.remote_members["presence-room"]

    state.apply_snapshot(2, held)
    assert pusher_link.take() == [] and ably_link.take() == []
    assert state.subscription_count("presence-room") == 2 + 3

    state.apply_snapshot(2, AppHolding())
    assert [(f["event"], json.loads(f["data"])) for f in pusher_link.take()] == [
        ("pusher_internal:member_removed", {"user_id": "bob"})
    ]
    left = [m for m in ably_link.take() if m["action"] == PRESENCE]
    assert [[(item["clientId"], item["action"]) for item in m["presence"]] for m in left] == [[("cat", LEAVE)]]
    assert state.subscription_count("presence-room") == 2
    assert state.presence_hash("presence-room") == {"ann": "{}"}
    assert not state.is_online("bob")
    assert hub.ably.remote_members == {}


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_frames_are_built_as_websockets_serializes_them(size: int) -> None:
    """At each boundary of the payload length's encoding (7 bits, 16, 64), text and binary frames have the bytes
    websockets writes for them, a compressed one the same with RSV1 set, and ``payload_offset`` finds the payload."""
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    text = "a" * size
    cases = [
        (encode_text(text), Frame(Opcode.TEXT, text.encode()).serialize(mask=False)),
        (binary_frame(payload), Frame(Opcode.BINARY, payload).serialize(mask=False)),
    ]
    for opcode, first in ((Opcode.TEXT, 0xC1), (Opcode.BINARY, 0xC2)):
        plain = Frame(opcode, payload).serialize(mask=False)  # websockets sets RSV1 only through its extension
        cases.append((build_frame(payload, first), bytes((plain[0] | 0x40,)) + plain[1:]))
    for built, expected in cases:
        assert built == expected
        assert len(built) - payload_offset(built) == size


def test_a_compressed_frame_is_read_back_by_websockets() -> None:
    """A deflated frame (its header from the shared helper) is decoded by websockets' permessage-deflate."""
    text = '{"event":"e","channel":"c","data":"' + "abc" * 30_000 + '"}'
    compressed = deflated(encode_text(text), 15)
    assert compressed[0] == 0xC1 and len(compressed) < len(text)
    frame = Frame(Opcode.TEXT, compressed[payload_offset(compressed) :], rsv1=True)
    decoder = PerMessageDeflate(
        remote_no_context_takeover=True,
        local_no_context_takeover=True,
        remote_max_window_bits=15,
        local_max_window_bits=15,
    )
    assert decoder.decode(frame).data.decode() == text


def test_cache_channels_past_their_ttl_are_dropped_as_publishes_come() -> None:
    """A cache channel's last event was dropped only when someone subscribed to that channel after its TTL: channels
    published once and never subscribed stayed for the life of the process (2.35 MB a thousand channels of 2 KB).
    Kept in the order they expire, the expired ones go as later publishes come; a channel published again lives on."""
    clock = Clock()
    state = AppState(TEST_APP, WebhookDispatcher(TEST_APP, httpx.AsyncClient()), clock)
    for number in range(1_000):
        state.cache_store(f"cache-{number}", "price", "x" * 2_000, ttl=60, version=(0, 0))
    clock.now += 30
    state.cache_store("cache-7", "price", "again", ttl=60, version=(1, 0))  # published again: its TTL starts anew
    clock.now += 31
    for number in range(100):  # each publish drops a step of the expired ones
        state.cache_store(f"cache-later-{number}", "price", "y", ttl=60, version=(0, 0))
    assert list(state.cache) == ["cache-7", *(f"cache-later-{number}" for number in range(100))]
    assert state.cached("cache-7") == ("price", "again")
