"""Webhooks from a real emulator to a real HTTP receiver (checklist §8 items 39, 48, 81–88).

The receiver is a small ASGI app served by uvicorn on a socket the test binds itself. It records each POST's headers,
raw body and arrival time, and answers from a configurable status sequence. Apps here batch for 20 ms and hold
vacate/remove events for 0.3 s, so every test finishes in about a second (the retry test in about three).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pusher  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect

from relay.emulator.config import App, Webhook
from relay.protocol.signing import channel_auth, webhook_signature
from tests.conformance.wsclient import Socket, established, official_client
from tests.webhook_receiver import Receiver

if TYPE_CHECKING:
    from conftest import RunningEmulator, StartEmulator

KEY, SECRET = "app-key", "app-secret"
DELAY = 0.3


StartHooked = Callable[..., Awaitable["RunningEmulator"]]


@pytest.fixture
async def hooked(receiver: Receiver, start_emulator: StartEmulator) -> StartHooked:
    """``await hooked(*webhooks, **app_fields)``: an emulator whose app posts to ``receiver`` (stopped before it)."""

    async def start(*webhooks: Webhook, **fields: Any) -> RunningEmulator:
        settings: dict[str, Any] = {"webhook_batch_ms": 20, "webhook_delay": DELAY, "webhook_retry_for": 10.0}
        settings.update(fields)
        app = App(app_id="1", key=KEY, secret=SECRET, webhooks=webhooks or (Webhook(url=receiver.url),), **settings)
        return await start_emulator(app=app)

    return start


# -- WebSocket clients --------------------------------------------------------------------------------------------


class Client(Socket):
    async def next_event(self, name: str) -> dict[str, Any]:
        """The next frame named ``name``, skipping others (subscription counts, member events)."""
        while True:
            frame = await self.recv()
            if frame["event"] == name:
                return frame

    async def roundtrip(self) -> None:
        """Ping and wait for the pong: everything sent before has been processed."""
        await self.send("pusher:ping", {})
        await self.next_event("pusher:pong")

    async def request_subscription(self, channel: str, user_id: str | None = None) -> None:
        data: dict[str, object] = {"channel": channel}
        channel_data = None
        if user_id is not None:
            channel_data = data["channel_data"] = json.dumps({"user_id": user_id, "user_info": {}})
        if channel.startswith(("private-", "presence-")):
            data["auth"] = channel_auth(KEY, SECRET, self.socket_id, channel, channel_data)
        await self.send("pusher:subscribe", data)

    async def subscribe(self, channel: str, user_id: str | None = None) -> None:
        await self.request_subscription(channel, user_id)
        frame = await self.next_event("pusher_internal:subscription_succeeded")
        assert frame["channel"] == channel

    async def unsubscribe(self, channel: str) -> None:
        await self.send("pusher:unsubscribe", {"channel": channel})
        await self.roundtrip()

    async def close(self) -> float:
        """Close the socket; return when the server has seen it go (the clock for held webhooks starts here)."""
        await self.ws.close()
        await self.ws.wait_closed()
        return time.monotonic()


OpenClient = Callable[["RunningEmulator"], Awaitable[Client]]


@pytest.fixture
async def open_ws(hooked: StartHooked) -> AsyncIterator[OpenClient]:
    opened: list[ClientConnection] = []

    async def open_(emulator: RunningEmulator) -> Client:
        ws = await connect(emulator.ws_url())
        opened.append(ws)
        return Client(ws, (await established(ws))["socket_id"])

    yield open_
    for ws in opened:
        await ws.close()


async def wait_vacated(emulator: RunningEmulator, channel: str) -> None:
    """Wait until the server has released ``channel`` (its last subscriber's close was processed)."""
    async with asyncio.timeout(2.0):
        while channel in emulator.node.states["1"].channels:  # noqa: ASYNC110  (polls the server's own state)
            await asyncio.sleep(0.005)


# -- headers, signature, body -----------------------------------------------------------------------------------


def test_webhook_signature_vector() -> None:
    """Item 81: the docs' vector for X-Pusher-Signature."""
    body = b'{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}'
    expected = "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
    assert webhook_signature("7ad3773142a6692b25b8", body) == expected


async def test_headers_signature_and_validate_webhook(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Items 81, 82: a POST with exactly ``Content-Type: application/json``, ``X-Pusher-Key`` and
    ``X-Pusher-Signature`` = HMAC-SHA256(secret, raw body); the body is ``{time_ms, events}`` and pusher-http-python's
    ``validate_webhook`` accepts it (and refuses it tampered or under another key)."""
    emulator = await hooked()
    client = await open_ws(emulator)
    await client.subscribe("room")
    (delivery,) = await receiver.wait_for(1)

    assert (delivery.method, delivery.path) == ("POST", "/")
    assert delivery.header_values("content-type") == ["application/json"]
    assert delivery.header_values("x-pusher-key") == [KEY]
    signature = hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert delivery.header_values("x-pusher-signature") == [signature]
    body = json.loads(delivery.body)
    assert set(body) == {"time_ms", "events"}
    assert abs(body["time_ms"] - time.time() * 1000) < 5_000
    assert body["events"] == [{"name": "channel_occupied", "channel": "room"}]

    validator = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    validated = await asyncio.to_thread(validator.validate_webhook, KEY, signature, delivery.body.decode())
    assert validated == body
    tampered = delivery.body.replace(b"room", b"roam")
    assert await asyncio.to_thread(validator.validate_webhook, KEY, signature, tampered.decode()) is None
    assert await asyncio.to_thread(validator.validate_webhook, "other", signature, delivery.body.decode()) is None


async def test_custom_headers_are_sent_and_cannot_replace_the_signed_ones(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """soketi extra (item 88's neighbour): per-webhook custom headers go out with every POST; one named like a
    Pusher header (in any case) does not duplicate or override it."""
    headers = {"Authorization": "Bearer t0ken", "X-Custom": "yes", "content-type": "text/plain", "x-pusher-key": "no"}
    emulator = await hooked(Webhook(url=receiver.url + "/hook", headers=headers))
    client = await open_ws(emulator)
    await client.subscribe("room")
    (delivery,) = await receiver.wait_for(1)
    assert delivery.path == "/hook"
    assert delivery.header_values("authorization") == ["Bearer t0ken"]
    assert delivery.header_values("x-custom") == ["yes"]
    assert delivery.header_values("content-type") == ["application/json"]
    assert delivery.header_values("x-pusher-key") == [KEY]
    assert delivery.header_values("x-pusher-signature") == [webhook_signature(SECRET, delivery.body)]


# -- occupancy ----------------------------------------------------------------------------------------------------


async def test_occupied_once_and_vacated_after_the_delay(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Items 83, 85: ``channel_occupied`` once on 0→1; ``channel_vacated`` once on 1→0, held for the delay."""
    emulator = await hooked()
    first, second = await open_ws(emulator), await open_ws(emulator)
    await first.subscribe("room")
    await second.subscribe("room")
    await receiver.wait_for(1)
    await first.unsubscribe("room")
    await receiver.quiet(1, DELAY + 0.15)

    left_at = await second.close()
    await wait_vacated(emulator, "room")
    arrived_at = await receiver.wait_for_event(lambda event: event["name"] == "channel_vacated")
    assert DELAY - 0.05 <= arrived_at - left_at <= DELAY + 1.0
    assert receiver.events() == [
        {"name": "channel_occupied", "channel": "room"},
        {"name": "channel_vacated", "channel": "room"},
    ]


async def test_leave_and_return_within_the_delay_sends_nothing(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Item 85: a vacate cancelled by a return within the delay sends neither ``channel_vacated`` nor a second
    ``channel_occupied``; a later, real vacate still does."""
    emulator = await hooked()
    client = await open_ws(emulator)
    await client.subscribe("room")
    await receiver.wait_for(1)
    await client.unsubscribe("room")
    await client.subscribe("room")
    replacement = await open_ws(emulator)
    await client.close()
    await replacement.subscribe("room")
    await receiver.quiet(1, DELAY + 0.2)

    await replacement.unsubscribe("room")
    await receiver.wait_for(2)
    assert receiver.events() == [
        {"name": "channel_occupied", "channel": "room"},
        {"name": "channel_vacated", "channel": "room"},
    ]


# -- presence -----------------------------------------------------------------------------------------------------

MEMBER_EVENTS = {"member_added", "member_removed"}


async def test_member_webhooks_fire_per_user_not_per_connection(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Items 84, 85: two connections of one user → one ``member_added``; ``member_removed`` only after the user's
    last connection leaves, held for the delay."""
    emulator = await hooked(Webhook(url=receiver.url, event_types=frozenset(MEMBER_EVENTS)))
    one_a, one_b, two = await open_ws(emulator), await open_ws(emulator), await open_ws(emulator)
    await one_a.subscribe("presence-room", user_id="1")
    await one_b.subscribe("presence-room", user_id="1")
    await two.subscribe("presence-room", user_id="2")
    # Both joins, whether one batch or two (a slow machine can take longer than the batch window between them).
    await receiver.until(lambda: len(receiver.events()) >= 2)
    await one_a.close()
    await receiver.quiet(len(receiver.deliveries), DELAY + 0.15)
    assert receiver.events() == [
        {"name": "member_added", "channel": "presence-room", "user_id": "1"},
        {"name": "member_added", "channel": "presence-room", "user_id": "2"},
    ]

    left_at = await one_b.close()
    arrived_at = await receiver.wait_for_event(lambda event: event["name"] == "member_removed")
    assert arrived_at - left_at >= DELAY - 0.05
    await two.unsubscribe("presence-room")
    await receiver.wait_for_event(lambda event: event == {**event, "name": "member_removed", "user_id": "2"})
    assert receiver.events(names={"member_removed"}) == [
        {"name": "member_removed", "channel": "presence-room", "user_id": "1"},
        {"name": "member_removed", "channel": "presence-room", "user_id": "2"},
    ]


async def test_member_removed_is_cancelled_when_the_user_returns(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Item 85: a user who reconnects within the delay causes neither ``member_removed`` nor another
    ``member_added`` (a page reload is not a leave)."""
    emulator = await hooked(Webhook(url=receiver.url, event_types=frozenset(MEMBER_EVENTS)))
    ann, bob = await open_ws(emulator), await open_ws(emulator)
    await ann.subscribe("presence-room", user_id="ann")
    await bob.subscribe("presence-room", user_id="bob")
    await ann.close()
    ann_again = await open_ws(emulator)
    await ann_again.subscribe("presence-room", user_id="ann")
    await asyncio.sleep(DELAY + 0.2)
    assert receiver.events() == [
        {"name": "member_added", "channel": "presence-room", "user_id": "ann"},
        {"name": "member_added", "channel": "presence-room", "user_id": "bob"},
    ]


# -- client events, cache misses, subscription counts ------------------------------------------------------------


async def test_client_event_webhook(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 48: ``client_event`` carries event, data (as relayed), ``socket_id``, and ``user_id`` on presence only."""
    emulator = await hooked(Webhook(url=receiver.url, event_types=frozenset({"client_event"})))
    alice, bob = await open_ws(emulator), await open_ws(emulator)
    await alice.subscribe("presence-room", user_id="alice")
    await bob.subscribe("presence-room", user_id="bob")
    await alice.subscribe("private-chat")
    await alice.send("client-typing", {"typing": True}, channel="presence-room")
    relayed = await bob.next_event("client-typing")
    assert relayed["user_id"] == "alice"
    await alice.send("client-note", "plain text", channel="private-chat")

    await receiver.wait_for_event(lambda event: event["channel"] == "private-chat")
    assert receiver.events() == [
        {
            "name": "client_event",
            "channel": "presence-room",
            "event": "client-typing",
            "data": '{"typing":true}',
            "socket_id": alice.socket_id,
            "user_id": "alice",
        },
        {
            "name": "client_event",
            "channel": "private-chat",
            "event": "client-note",
            "data": "plain text",
            "socket_id": alice.socket_id,
        },
    ]
    assert relayed["data"] == receiver.events()[0]["data"]


async def test_cache_miss_webhook(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 39: subscribing to an empty cache channel sends ``cache_miss``; once an event is cached, it does not."""
    emulator = await hooked(Webhook(url=receiver.url, event_types=frozenset({"cache_miss"})))
    first = await open_ws(emulator)
    await first.subscribe("cache-prices")
    assert (await first.recv())["event"] == "pusher:cache_miss"
    await receiver.wait_for(1)
    assert receiver.events() == [{"name": "cache_miss", "channel": "cache-prices"}]

    api = official_client(emulator)
    await asyncio.to_thread(api.trigger, "cache-prices", "price", "42")
    assert (await first.recv())["data"] == "42"
    second = await open_ws(emulator)
    await second.subscribe("cache-prices")
    assert await second.recv() == {"event": "price", "channel": "cache-prices", "data": "42"}
    await receiver.quiet(1, 0.15)


async def test_cache_miss_webhook_is_sent_once_for_a_crowd_and_again_after_the_cache_empties(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Every subscriber to an empty cache channel gets ``pusher:cache_miss``, but the app's server hears of it once
    (hosted Pusher dedupes it); a publish that fills the cache re-arms it, so the next miss after that one expires is
    posted at once."""
    emulator = await hooked(Webhook(url=receiver.url, event_types=frozenset({"cache_miss"})), cache_ttl=0.3)
    crowd = [await open_ws(emulator) for _ in range(3)]
    for client in crowd:
        await client.subscribe("cache-score")
        assert (await client.recv())["event"] == "pusher:cache_miss"
    await receiver.wait_for(1)
    await receiver.quiet(1, 0.15)

    api = official_client(emulator)
    await asyncio.to_thread(api.trigger, "cache-score", "score", "1-0")
    await asyncio.sleep(0.4)  # the cached event expires
    late = await open_ws(emulator)
    await late.subscribe("cache-score")
    assert (await late.recv())["event"] == "pusher:cache_miss"
    await receiver.wait_for(2)
    assert receiver.events() == [{"name": "cache_miss", "channel": "cache-score"}] * 2


async def test_subscription_count_webhook(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 38's webhook: with ``subscription_count`` on, each change on a non-presence channel is posted."""
    hook = Webhook(url=receiver.url, event_types=frozenset({"subscription_count"}))
    emulator = await hooked(hook, subscription_count=True)
    first, second = await open_ws(emulator), await open_ws(emulator)
    await first.subscribe("room")
    await second.subscribe("room")
    await first.subscribe("presence-room", user_id="1")
    await first.unsubscribe("room")
    await receiver.wait_for_event(lambda event: event["subscription_count"] == 1 and len(receiver.events()) == 3)
    await receiver.quiet(len(receiver.deliveries), 0.1)
    assert receiver.events() == [
        {"name": "subscription_count", "channel": "room", "subscription_count": count} for count in (1, 2, 1)
    ]


# -- delivery: batching, retries, filters, shutdown ---------------------------------------------------------------


async def test_batching_keeps_events_in_order(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 87: events within the batch window arrive in one POST, in the order they happened."""
    emulator = await hooked(webhook_batch_ms=150)
    client = await open_ws(emulator)
    channels = [f"c{i}" for i in range(5)]
    for channel in channels:
        await client.request_subscription(channel)
    for _ in channels:
        await client.next_event("pusher_internal:subscription_succeeded")
    (delivery,) = await receiver.wait_for(1)
    assert delivery.events == [{"name": "channel_occupied", "channel": channel} for channel in channels]

    await client.subscribe("later")
    await receiver.wait_for(2)
    assert receiver.deliveries[1].events == [{"name": "channel_occupied", "channel": "later"}]


async def test_failed_deliveries_are_retried_with_the_same_events(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Item 86: 500 and 503 are retried with growing back-off until a 2xx; every attempt carries the same events,
    stamped and signed when it is sent (receivers refuse a time_ms over five minutes old)."""
    receiver.statuses.extend([500, 503])
    emulator = await hooked()
    client = await open_ws(emulator)
    await client.subscribe("room")
    first, second, third = await receiver.wait_for(3, within=4.0)
    assert first.events == second.events == third.events
    stamps = [json.loads(delivery.body)["time_ms"] for delivery in (first, second, third)]
    assert stamps == sorted(stamps) and stamps[0] < stamps[2]
    assert receiver.signed_by(SECRET)
    assert 0.4 <= second.at - first.at <= 1.5
    assert second.at - first.at < third.at - second.at + 0.5
    assert third.at - second.at >= 0.9
    await receiver.quiet(3, 0.3)


async def test_retries_stop_after_retry_for(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 86: a webhook still failing when ``webhook_retry_for`` has passed is dropped (not retried forever). The
    first back-off (0.5-1 s) would pass retry_for: the last try is made at the deadline, then the batch is given up,
    holding nothing (a batch being retried counts as pending until it is delivered or dropped)."""
    receiver.statuses.extend([500] * 10)
    emulator = await hooked(webhook_retry_for=0.5)
    client = await open_ws(emulator)
    await client.subscribe("room")
    first, last = (await receiver.wait_for(2, within=2.0))[:2]
    assert 0.45 <= last.at - first.at <= 0.9  # the last try at the deadline, not 0.5-1 s after the first
    state = emulator.node.states["1"]
    for _ in range(50):
        if state.webhooks.pending == 0:
            break
        await asyncio.sleep(0.01)
    assert state.webhooks.pending == 0
    await receiver.quiet(2, 1.1)
    assert state.webhooks.pending == 0
    assert state.meter.webhook_statuses == {"500": 2}


async def test_event_type_and_channel_filters(hooked: StartHooked, receiver: Receiver, open_ws: OpenClient) -> None:
    """Item 88: each webhook gets only its ``event_types`` and channels matching its prefix and suffix."""
    url = receiver.url
    emulator = await hooked(
        Webhook(url=url + "/occupied", event_types=frozenset({"channel_occupied"})),
        Webhook(url=url + "/private", channel_prefix="private-"),
        Webhook(url=url + "/log", channel_suffix="-log"),
        Webhook(url=url + "/private-log", channel_prefix="private-", channel_suffix="-log"),
    )
    client = await open_ws(emulator)
    for channel in ("public-log", "private-x", "private-audit-log"):
        await client.subscribe(channel)
    await client.send("client-hi", {}, channel="private-x")
    await client.roundtrip()
    for channel in ("public-log", "private-x", "private-audit-log"):
        await client.unsubscribe(channel)

    def seen(path: str) -> list[tuple[str, str]]:
        return [(event["name"], event["channel"]) for event in receiver.events(path)]

    # Each webhook is its own request: wait for the last event at every path that gets it, then a little longer
    # so that an event sent where it does not belong would have arrived too.
    last = ("channel_vacated", "private-audit-log")
    await receiver.until(lambda: all(last in seen(path) for path in ("/private", "/log", "/private-log")))
    await asyncio.sleep(0.1)

    assert seen("/occupied") == [
        ("channel_occupied", "public-log"),
        ("channel_occupied", "private-x"),
        ("channel_occupied", "private-audit-log"),
    ]
    assert seen("/private") == [
        ("channel_occupied", "private-x"),
        ("channel_occupied", "private-audit-log"),
        ("client_event", "private-x"),
        ("channel_vacated", "private-x"),
        ("channel_vacated", "private-audit-log"),
    ]
    assert seen("/log") == [
        ("channel_occupied", "public-log"),
        ("channel_occupied", "private-audit-log"),
        ("channel_vacated", "public-log"),
        ("channel_vacated", "private-audit-log"),
    ]
    assert seen("/private-log") == [
        ("channel_occupied", "private-audit-log"),
        ("channel_vacated", "private-audit-log"),
    ]


async def test_close_flushes_batched_and_held_events(
    hooked: StartHooked, receiver: Receiver, open_ws: OpenClient
) -> None:
    """Shutdown: ``node.close()`` sends what is still batched or held for the delay, in order, before returning."""
    emulator = await hooked(webhook_batch_ms=10_000, webhook_delay=10.0)
    kept, left = await open_ws(emulator), await open_ws(emulator)
    await kept.subscribe("kept")
    await left.subscribe("left")
    await left.close()
    await wait_vacated(emulator, "left")
    await kept.close()
    await wait_vacated(emulator, "kept")
    await asyncio.sleep(0.1)
    assert receiver.deliveries == []

    started = time.monotonic()
    await emulator.node.close()
    assert time.monotonic() - started < 2.0
    (delivery,) = receiver.deliveries
    assert delivery.events == [
        {"name": "channel_occupied", "channel": "kept"},
        {"name": "channel_occupied", "channel": "left"},
        {"name": "channel_vacated", "channel": "left"},
        {"name": "channel_vacated", "channel": "kept"},
    ]
    assert delivery.header_values("x-pusher-signature") == [webhook_signature(SECRET, delivery.body)]
