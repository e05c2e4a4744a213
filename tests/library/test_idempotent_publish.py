"""Idempotent publishing: ``publish(…, idempotency_key=…)`` and ``publish_batch(…, idempotency_key=…)`` through
``Relay`` and ``AsyncRelay``, against a real emulator watched by real subscribers (a Pusher-protocol WebSocket, an
Ably realtime connection).

Ably dedupes a message id per channel for 2 minutes (ably-and-pricing.md, "Idempotent publishing"): the Ably
adapter's ids are ``<key>:<index>``, so a resend from another client (another process) is not delivered again. Pusher
has no idempotency in its HTTP API: the client's own memory of its keys stops a resend, within one client (the
emulator's extension of it, which dedupes across clients, is test_emulator_idempotency.py's).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, NamedTuple

import httpx
import pytest
import respx
from libsupport import FAST_RETRY, MakeRelay, Subscribe, Subscriber, Twin, server

from relay import AsyncRelay, Event, IdempotencyKeyReused, InvalidIdempotencyKey, MirrorError, PublishResult
from relay.adapters.ably import MAX_BATCH_REQUEST_BYTES, AblyAdapter
from relay.config import parse_url
from relay.errors import AuthenticationError, TransportError
from relay.idempotency import IdempotencyMemory
from relay.payload import Payload
from relay.protocol.idempotency_keys import MAX_IDEMPOTENCY_KEY_LENGTH, check_idempotency_key
from tests.ably.ablysupport import API_KEY, MESSAGE, AblyWire, ably_wire
from tests.conftest import RunningEmulator, emulator_url

KEY = "0b6f2d4e-5a1c-4e8f-9d3b-7c2a1e0f4b6d"
ONE_ATTEMPT = replace(FAST_RETRY, attempts=1)


def ably_url(running: RunningEmulator) -> str:
    return f"ably://{API_KEY}@127.0.0.1:{running.port}?tls=false"


def publishes(twin: Twin) -> list[str]:
    """The publish requests the client sent (Pusher's /events and /batch_events, Ably's messages)."""
    return [sent.url.path for sent in twin.requests if sent.method == "POST"]


async def pusher_events(subscriber: Subscriber, twin: Twin, channel: str) -> list[str]:
    """The names of the events ``subscriber`` got on ``channel`` until a sentinel published after them: what was
    delivered, each as often as it was."""
    await twin.publish(channel, "sentinel", "end")
    names = []
    while (frame := await subscriber.recv())["event"] != "sentinel":
        if frame.get("channel") == channel and not frame["event"].startswith("pusher"):
            names.append(frame["event"])
    return names


async def ably_messages(wire: AblyWire, twin: Twin, channel: str) -> list[dict[str, Any]]:
    """As :func:`pusher_events`, for an Ably realtime connection: the messages before the sentinel."""
    await twin.publish(channel, "sentinel", "end")
    messages: list[dict[str, Any]] = []
    while True:
        got = (await wire.expect(MESSAGE))["messages"]
        if got[-1]["name"] == "sentinel":
            return messages + got[:-1]
        messages += got


async def subscribed(subscriber: Subscribe, running: RunningEmulator, channel: str) -> Subscriber:
    watcher = await subscriber(running)
    await watcher.subscribe(channel)
    return watcher


# -- one client, a Pusher-protocol provider: the client's memory ---------------------------------------------------


async def test_a_resend_is_delivered_once_and_replays_the_first_result(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    relay = make_relay(emulator_url(emulator))
    first = await relay.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    again = await relay.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    assert first == PublishResult(("orders",)) and not first.replayed
    assert again == replace(first, replayed=True)
    assert publishes(relay) == ["/apps/1/events"]  # the resend sent nothing
    assert await pusher_events(watcher, relay, "orders") == ["created"]


async def test_a_batch_resend_is_delivered_once(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    relay = make_relay(emulator_url(emulator))
    events = [Event("orders", "created", {"id": 1}), {"channel": "orders", "name": "paid", "data": "x"}]
    first = await relay.publish_batch(events, idempotency_key=KEY)
    again = await relay.publish_batch(events, idempotency_key=KEY)
    assert again == replace(first, replayed=True) and first.channels == ("orders", "orders")
    assert publishes(relay) == ["/apps/1/batch_events"]
    assert await pusher_events(watcher, relay, "orders") == ["created", "paid"]


async def test_a_publish_without_a_key_is_sent_each_time(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    relay = make_relay(emulator_url(emulator))
    for _ in range(2):
        assert not (await relay.publish("orders", "created", "x")).replayed
    assert await pusher_events(watcher, relay, "orders") == ["created", "created"]


async def test_an_empty_batch_is_not_replayed(make_relay: MakeRelay, emulator: RunningEmulator) -> None:
    """A publish is replayed when every call it took was: a batch of no events took none, and was no replay."""
    relay = make_relay(emulator_url(emulator))
    assert await relay.publish_batch([]) == PublishResult(())
    assert publishes(relay) == []


async def test_two_clients_with_one_key_deliver_twice_through_pusher(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """What the docs warn of: Pusher's HTTP API has no idempotency, and each client remembers its own keys. (A
    pusher:// URL, as hosted Pusher, soketi or Reverb have, here to the emulator: the adapter sends the key to
    emulator:// URLs alone, see test_emulator_idempotency.py.)"""
    watcher = await subscribed(subscriber, emulator, "orders")
    app = emulator.app
    as_pusher = f"pusher://{app.key}:{app.secret}@127.0.0.1:{emulator.port}/apps/{app.app_id}?tls=false"
    one, other = make_relay(as_pusher), make_relay(as_pusher)
    for relay in (one, other):
        assert not (await relay.publish("orders", "created", "x", idempotency_key=KEY)).replayed
    assert await pusher_events(watcher, one, "orders") == ["created", "created"]


@pytest.mark.parametrize(
    ("change", "value"),
    [("channels", "audit"), ("event", "updated"), ("data", {"id": 2}), ("data", '{"id": 1}'), ("socket_id", "1.2")],
)
async def test_a_key_reused_for_another_publish_is_refused(
    make_relay: MakeRelay, emulator: RunningEmulator, change: str, value: object
) -> None:
    """Another channel, event, data (the same JSON as a str is other data: it reaches subscribers as a str) or
    socket_id: IdempotencyKeyReused, and nothing is sent."""
    relay = make_relay(emulator_url(emulator))
    request: dict[str, Any] = {"channels": "orders", "event": "created", "data": {"id": 1}, "socket_id": None}
    await relay.publish(**request, idempotency_key=KEY)
    with pytest.raises(IdempotencyKeyReused) as refused:
        await relay.publish(**{**request, change: value}, idempotency_key=KEY)
    assert refused.value.http_status == 422
    assert refused.value.message == (
        f"the idempotency key {KEY!r} was used for another publish in the last 120 seconds: a resend must repeat "
        "the same channels, event, data and socket_id; give a new publish a new key"
    )
    assert publishes(relay) == ["/apps/1/events"]


async def test_a_publishs_key_reused_for_a_batch_is_refused(make_relay: MakeRelay, emulator: RunningEmulator) -> None:
    relay = make_relay(emulator_url(emulator))
    await relay.publish("orders", "created", "x", idempotency_key=KEY)
    with pytest.raises(IdempotencyKeyReused):
        await relay.publish_batch([Event("orders", "created", "x")], idempotency_key=KEY)
    await relay.publish_batch([Event("orders", "created", "x")], idempotency_key="batch-1")
    with pytest.raises(IdempotencyKeyReused):
        await relay.publish_batch([Event("orders", "created", "y")], idempotency_key="batch-1")
    assert publishes(relay) == ["/apps/1/events", "/apps/1/batch_events"]


RULE = "an idempotency key is 1 to 200 printable ASCII characters without spaces (a UUID or a ULID fits)"


@pytest.mark.parametrize(
    ("key", "got"),
    [
        ("", "got an empty one"),
        ("k" * 201, "got 201 characters"),
        ("order 42", "got one holding ' '"),
        ("order\t42", "got one holding '\\t'"),
        ("commande-été", "got one holding 'é'"),
        ("new\nline", "got one holding '\\n'"),
        (42, "got int, not a str"),
    ],
)
async def test_a_bad_key_is_refused_naming_the_rule(
    make_relay: MakeRelay, emulator: RunningEmulator, key: object, got: str
) -> None:
    relay = make_relay(emulator_url(emulator))
    for publish in (
        relay.publish("orders", "created", "x", idempotency_key=key),
        relay.publish_batch([Event("orders", "created", "x")], idempotency_key=key),
    ):
        with pytest.raises(InvalidIdempotencyKey) as refused:
            await publish
        assert refused.value.message == f"{RULE}: {got}" and refused.value.http_status == 400
    assert publishes(relay) == []
    longest = "~" * 200  # the longest key, of the last printable character, is taken
    assert not (await relay.publish("orders", "created", "x", idempotency_key=longest)).replayed


# -- Ably: ids made of the key, deduped by the provider -------------------------------------------------------------


async def test_ably_resends_are_delivered_once_even_from_another_client(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    """One client replays from its memory (one request); a second client (another process) sends the same ids,
    which the emulator's Ably REST dedupes as Ably does: one delivery, and the same answer."""
    wire = await ably_wire(emulator)
    try:
        await wire.attach("orders")
        one, other = make_relay(ably_url(emulator)), make_relay(ably_url(emulator))
        first = await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
        assert first == PublishResult(("orders",), (f"{KEY}:0",))
        assert (await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)).replayed
        assert len(publishes(one)) == 1
        from_another = await other.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
        assert from_another == first  # sent (its memory is its own), and not delivered again
        assert [sent.json()[0]["id"] for sent in other.requests] == [f"{KEY}:0"]
        messages = await ably_messages(wire, one, "orders")
        assert [(message["name"], message["id"]) for message in messages] == [("created", f"{KEY}:0")]
    finally:
        await wire.close()


async def test_ably_batch_resends_from_another_client_are_delivered_once(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    wire = await ably_wire(emulator)
    try:
        await wire.attach("orders")
        events = [Event("orders", "created", {"id": 1}), Event("orders", "paid", {"id": 1})]
        results = [await make_relay(ably_url(emulator)).publish_batch(events, idempotency_key=KEY) for _ in range(2)]
        assert results[0] == results[1] == PublishResult(("orders", "orders"), (f"{KEY}:0", f"{KEY}:1"))
        messages = await ably_messages(wire, make_relay(ably_url(emulator)), "orders")
        assert [(message["name"], message["id"]) for message in messages] == [
            ("created", f"{KEY}:0"),
            ("paid", f"{KEY}:1"),
        ]
    finally:
        await wire.close()


# -- a first attempt in flight, or failed -------------------------------------------------------------------------


@asynccontextmanager
async def forwarding(
    running: RunningEmulator, answer: Callable[[int], bool], hold: asyncio.Event | None = None
) -> AsyncIterator[tuple[int, list[str], asyncio.Event]]:
    """A proxy in front of the emulator's HTTP API: the n-th request is forwarded, held until ``hold`` is set, and
    its answer passed back if ``answer(n)``, else the connection dropped (the provider published; the client never
    learns it). Yields its port, the paths it got and an event set at the first."""
    forwarded: list[str] = []
    arrived = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as upstream:
            try:
                while head := await reader.readuntil(b"\r\n\r\n"):
                    start, *lines = head.decode("latin-1").strip().split("\r\n")
                    method, target, _ = start.split(" ")
                    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
                    body = await reader.readexactly(int(headers.pop("content-length", 0)))
                    headers.pop("host", None)
                    forwarded.append(target.split("?")[0])
                    arrived.set()
                    number = len(forwarded)
                    if hold is not None:
                        await hold.wait()
                    reply = await upstream.request(method, target, content=body, headers=headers)
                    if not answer(number):
                        writer.transport.abort()
                        return
                    writer.write(
                        f"HTTP/1.1 {reply.status_code} OK\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(reply.content)}\r\n\r\n".encode()
                        + reply.content
                    )
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1], forwarded, arrived
    finally:
        listening.close()


class InFlight(NamedTuple):
    relay: Twin
    first: asyncio.Task[Any]
    hold: asyncio.Event
    forwarded: list[str]


@asynccontextmanager
async def first_in_flight(
    make_relay: MakeRelay, running: RunningEmulator, answer: Callable[[int], bool] = lambda _: True, *config: Any
) -> AsyncIterator[InFlight]:
    """A client publishing through :func:`forwarding` whose first publish with ``KEY`` is at the provider, held there
    until ``hold`` is set."""
    hold = asyncio.Event()
    async with forwarding(running, answer, hold) as (port, forwarded, arrived):
        relay = make_relay(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1", *config)
        first = asyncio.create_task(relay.publish("orders", "created", "x", idempotency_key=KEY))
        await arrived.wait()
        yield InFlight(relay, first, hold, forwarded)


async def test_a_resend_while_the_first_is_in_flight_waits_for_its_result(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    async with first_in_flight(make_relay, emulator) as (relay, first, hold, forwarded):
        resends = [asyncio.create_task(relay.publish("orders", "created", "x", idempotency_key=KEY)) for _ in range(2)]
        await asyncio.sleep(0.2)  # the resends are waiting (had either been sent, the proxy would hold it too)
        assert forwarded == ["/apps/1/events"] and not any(task.done() for task in [first, *resends])
        hold.set()
        results = [await first, *[await task for task in resends]]
        assert [result.replayed for result in results] == [False, True, True]
        assert forwarded == ["/apps/1/events"]
        assert await pusher_events(watcher, relay, "orders") == ["created"]


@pytest.mark.parametrize("make_relay", ["async"], indirect=True)
async def test_a_resend_cancelled_while_waiting_leaves_the_first_to_finish(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    async with first_in_flight(make_relay, emulator) as (relay, first, hold, forwarded):
        with pytest.raises(TimeoutError):  # a route handler's timeout cancels the resend that waits
            await asyncio.wait_for(relay.publish("orders", "created", "x", idempotency_key=KEY), 0.2)
        hold.set()
        assert not (await first).replayed
        assert (await relay.publish("orders", "created", "x", idempotency_key=KEY)).replayed
        assert forwarded == ["/apps/1/events"]
    assert await pusher_events(watcher, make_relay(emulator_url(emulator)), "orders") == ["created"]


@pytest.mark.parametrize("make_relay", ["async"], indirect=True)
async def test_a_resend_from_another_event_loop_waits_for_the_first(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """An AsyncRelay serves several event loops (library.md): a module-level client used by two threads' asyncio.run()
    with one key, the second while the first is in flight, waits for it there too, and delivers once."""
    watcher = await subscribed(subscriber, emulator, "orders")
    hold = asyncio.Event()
    async with forwarding(emulator, lambda _: True, hold) as (port, forwarded, arrived):
        shared = AsyncRelay(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1")

        def publish_in_a_loop_of_its_own() -> PublishResult:
            return asyncio.run(shared.publish("orders", "created", "x", idempotency_key=KEY))

        try:
            first = asyncio.create_task(asyncio.to_thread(publish_in_a_loop_of_its_own))
            await arrived.wait()
            resend = asyncio.create_task(asyncio.to_thread(publish_in_a_loop_of_its_own))
            await asyncio.sleep(0.2)
            hold.set()
            assert [(await first).replayed, (await resend).replayed] == [False, True]
            assert forwarded == ["/apps/1/events"]
        finally:
            await shared.aclose()
    assert await pusher_events(watcher, make_relay(emulator_url(emulator)), "orders") == ["created"]


async def test_a_resend_while_the_first_is_in_flight_gets_its_error(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    """The first's answer lost (outcome_unknown): a resend that waited for it gets that error, not a second send,
    and a later retry is sent (the key is not kept for a failure)."""
    async with first_in_flight(make_relay, emulator, lambda n: n > 1, ONE_ATTEMPT) as (relay, first, hold, forwarded):
        resend = asyncio.create_task(relay.publish("orders", "created", "x", idempotency_key=KEY))
        await asyncio.sleep(0.2)
        hold.set()
        with pytest.raises(TransportError) as failed:
            await first
        assert failed.value.outcome_unknown
        with pytest.raises(TransportError) as waited:
            await resend
        assert waited.value is failed.value
        assert not (await relay.publish("orders", "created", "x", idempotency_key=KEY)).replayed
        assert forwarded == ["/apps/1/events", "/apps/1/events"]


async def test_a_refused_first_attempt_does_not_keep_the_key(make_relay: MakeRelay, emulator: RunningEmulator) -> None:
    """A publish the provider refused (a wrong secret) is not remembered: the retry with its key is sent again."""
    refusing = make_relay(emulator_url(emulator, secret="wrong-secret"))
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await refusing.publish("orders", "created", "x", idempotency_key=KEY)
    assert publishes(refusing) == ["/apps/1/events", "/apps/1/events"]


async def test_ably_retry_after_a_lost_answer_is_delivered_once(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    """The first publish reached Ably (the emulator) and its answer was lost: outcome_unknown, the key not kept. The
    caller's retry with the key is sent again with the same ids, and Ably does not deliver it twice."""
    wire = await ably_wire(emulator)
    try:
        await wire.attach("orders")
        async with forwarding(emulator, lambda n: n > 1) as (port, forwarded, _):
            relay = make_relay(f"ably://{API_KEY}@127.0.0.1:{port}?tls=false", ONE_ATTEMPT)
            with pytest.raises(TransportError) as lost:
                await relay.publish("orders", "created", "x", idempotency_key=KEY)
            assert lost.value.outcome_unknown
            retried = await relay.publish("orders", "created", "x", idempotency_key=KEY)
            assert retried == PublishResult(("orders",), (f"{KEY}:0",))
            assert forwarded == ["/channels/orders/messages"] * 2
        messages = await ably_messages(wire, make_relay(ably_url(emulator)), "orders")
        assert [message["id"] for message in messages] == [f"{KEY}:0"]
    finally:
        await wire.close()


# -- mirror and failover ----------------------------------------------------------------------------------------


async def test_a_mirror_resend_is_delivered_once_by_each_provider(
    make_relay: MakeRelay, start_emulator: Any, subscriber: Subscribe
) -> None:
    """A mirror publishes once to each provider, and a resend replays the whole result: the Pusher-protocol provider
    and the Ably one each deliver once; the Ably one got the key's id."""
    pusher_side, ably_side = await start_emulator(), await start_emulator()
    watcher = await subscribed(subscriber, pusher_side, "orders")
    wire = await ably_wire(ably_side)
    try:
        await wire.attach("orders")
        relay = make_relay(f"mirror:{emulator_url(pusher_side)}|{ably_url(ably_side)}")
        first = await relay.publish("orders", "created", "x", idempotency_key=KEY)
        assert first == PublishResult(("orders",))  # the first provider's result, as a mirror answers
        assert (await relay.publish("orders", "created", "x", idempotency_key=KEY)) == replace(first, replayed=True)
        assert publishes(relay) == ["/apps/1/events", "/channels/orders/messages"]
        assert relay.requests[-1].json()[0]["id"] == f"{KEY}:0"
        assert await pusher_events(watcher, make_relay(emulator_url(pusher_side)), "orders") == ["created"]
        messages = await ably_messages(wire, make_relay(ably_url(ably_side)), "orders")
        assert [message["id"] for message in messages] == [f"{KEY}:0"]
    finally:
        await wire.close()


FAILED = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
PUBLISHED = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_mirror_retry_is_sent_only_to_the_provider_that_failed(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """One provider of a mirror delivered, the other failed (MirrorError): the caller's retry with the key goes to
    the one that failed alone, so the first does not deliver twice; then the key replays the whole result."""
    watcher = await subscribed(subscriber, emulator, "orders")
    async with server(lambda n: FAILED if n == 1 else PUBLISHED) as (other_url, other_got):
        relay = make_relay(f"mirror:{emulator_url(emulator)}|{other_url}", ONE_ATTEMPT)
        with pytest.raises(MirrorError) as failed:
            await relay.publish("orders", "created", "x", idempotency_key=KEY)
        assert list(failed.value.errors) == [other_url.replace("app-secret", "***")]
        with pytest.raises(IdempotencyKeyReused):  # what was delivered holds the key for that publish
            await relay.publish("orders", "updated", "x", idempotency_key=KEY)
        retried = await relay.publish("orders", "created", "x", idempotency_key=KEY)
        assert retried == PublishResult(("orders",)) and not retried.replayed
        assert (await relay.publish("orders", "created", "x", idempotency_key=KEY)) == replace(retried, replayed=True)
        assert len(other_got) == 2
        assert len(publishes(relay)) == 3  # the emulator once, the other provider twice
    assert await pusher_events(watcher, make_relay(emulator_url(emulator)), "orders") == ["created"]


async def test_a_failover_resend_is_not_sent_to_the_recovered_first_provider(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe, start_stoppable: Any
) -> None:
    """The first provider down, the second delivered: a resend with the key replays that, and does not go to the
    first provider, which would deliver it again to its own subscribers."""
    down = await start_stoppable()
    await down.stop()
    watcher = await subscribed(subscriber, emulator, "orders")
    relay = make_relay(f"failover:emulator://app-key:app-secret@127.0.0.1:{down.port}/apps/1|{emulator_url(emulator)}")
    first = await relay.publish("orders", "created", "x", idempotency_key=KEY)
    sent = len(relay.requests)
    assert (await relay.publish("orders", "created", "x", idempotency_key=KEY)).replayed
    assert len(relay.requests) == sent
    assert first == PublishResult(("orders",))
    assert await pusher_events(watcher, make_relay(emulator_url(emulator)), "orders") == ["created"]


# -- the memory's bounds ----------------------------------------------------------------------------------------


def test_keys_are_forgotten_after_the_window_and_past_the_cap() -> None:
    now = [0.0]
    memory: IdempotencyMemory[None] = IdempotencyMemory(lambda: None, window=120, capacity=2, clock=lambda: now[0])
    result = PublishResult(("orders",))
    for key in ("a", "b"):
        attempt, mine = memory.claim(key, b"request")
        assert mine
        memory.settle(key, attempt, result, None)
    assert memory.claim("a", b"request")[1] is False  # remembered
    now[0] = 119.9
    assert memory.claim("b", b"request")[1] is False
    now[0] = 120.0  # 2 minutes after they were published: forgotten
    assert memory.claim("a", b"request")[1] is True
    # Past the cap, the oldest is forgotten first
    memory.settle("a", memory.claim("a", b"request")[0], result, None)
    for key in ("c", "d"):
        memory.settle(key, memory.claim(key, b"request")[0], result, None)
    assert memory.claim("a", b"other")[1] is True  # forgotten, so no longer refused for another request
    with pytest.raises(IdempotencyKeyReused):
        memory.claim("d", b"other")


def test_remembered_batches_are_bounded_by_the_items_their_results_hold() -> None:
    """A batch's result lists a channel (and, on Ably, a message id) per event: 10,000 keys of 1,000-event batches
    held about 1.5 GB. The memory also caps the channels and ids its results hold, the oldest forgotten first."""
    memory: IdempotencyMemory[None] = IdempotencyMemory(lambda: None, capacity=10, max_items=2_500)
    batch = PublishResult(("orders",) * 1_000, tuple(f"{KEY}:{i}" for i in range(1_000)))
    for key in ("old", "new"):
        memory.settle(key, memory.claim(key, b"batch")[0], batch, None)
    assert memory.claim("new", b"batch")[1] is False
    assert memory.claim("old", b"another batch")[1] is True  # forgotten: the two held 4,000 items
    memory.settle("small", memory.claim("small", b"publish")[0], PublishResult(("orders",)), None)
    assert memory.claim("small", b"publish")[1] is False


def test_an_attempt_in_flight_is_not_forgotten_past_the_cap() -> None:
    """The cap forgets settled keys only: a resend of a publish still in flight waits for it rather than being sent a
    second time, however many keys settled meanwhile."""
    memory: IdempotencyMemory[None] = IdempotencyMemory(lambda: None, capacity=1)
    slow, mine = memory.claim("slow", b"request")
    assert mine
    for key in ("b", "c"):
        memory.settle(key, memory.claim(key, b"request")[0], PublishResult(("orders",)), None)
    assert memory.claim("slow", b"request") == (slow, False)
    with pytest.raises(IdempotencyKeyReused):  # c is the one the cap keeps
        memory.claim("c", b"other")
    assert memory.claim("b", b"other")[1] is True


def test_an_attempt_in_flight_does_not_keep_later_keys_past_their_window() -> None:
    """A publish in flight for long (retries of a provider that does not answer) does not hold the keys settled
    after it began: each is forgotten 2 minutes after its own answer."""
    now = [0.0]
    memory: IdempotencyMemory[None] = IdempotencyMemory(lambda: None, window=120, clock=lambda: now[0])
    memory.claim("slow", b"request")
    memory.settle("quick", memory.claim("quick", b"request")[0], PublishResult(("orders",)), None)
    now[0] = 120.0
    assert memory.claim("quick", b"another publish")[1] is True


def test_an_ably_batch_with_the_longest_key_is_split_within_the_request_size() -> None:
    """A key's characters are printable ASCII, of which JSON escapes ``"`` and ``\\`` to two: the ids of 200 of
    them, ``<key>:<i>``, must fit in the room the batch's parts leave for them, else a part sized to the limit is over
    it (and the emulator, whose requests are at most the same 1 MiB, refuses it whole with 413)."""
    adapter = AblyAdapter(parse_url(f"{ABLY_HOSTED}"))
    key = check_idempotency_key('"' * MAX_IDEMPOTENCY_KEY_LENGTH)
    for size in range(10_000, 10_400, 7):  # one of them packs a part's events up to the limit
        events = [(Event("orders", "e", "x" * size), Payload.of("x" * size)) for _ in range(120)]
        first = 0
        for part in adapter.batch_parts(events):
            request = adapter.publish_batch(part, key, first).request
            assert request is not None and len(request.body) <= MAX_BATCH_REQUEST_BYTES, size
            first += len(part)


@pytest.mark.parametrize("make_relay", ["async"], indirect=True)
async def test_a_cancelled_mirror_retry_keeps_what_the_first_attempt_delivered(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """The first attempt delivered on one provider and failed on the other (MirrorError); its retry, sent to the one
    that failed alone, is cancelled (a route handler's timeout): the next retry is still not sent to the provider
    that delivered, which would deliver it twice. (A sync client's call cannot be cancelled.)"""
    watcher = await subscribed(subscriber, emulator, "orders")
    held: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    # The other provider fails the first request, never answers the second, and publishes the rest
    async with server(lambda n: FAILED if n == 1 else held if n == 2 else PUBLISHED) as (other_url, other_got):
        relay = make_relay(f"mirror:{emulator_url(emulator)}|{other_url}", ONE_ATTEMPT)
        with pytest.raises(MirrorError):
            await relay.publish("orders", "created", "x", idempotency_key=KEY)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(relay.publish("orders", "created", "x", idempotency_key=KEY), 0.5)
        assert len(other_got) == 2
        retried = await relay.publish("orders", "created", "x", idempotency_key=KEY)
        assert retried == PublishResult(("orders",)) and len(other_got) == 3
        held.set_result(PUBLISHED)  # the held request ends, answered, rather than cancelled with the loop
    assert await pusher_events(watcher, make_relay(emulator_url(emulator)), "orders") == ["created"]


# -- hosted Ably and Pusher (respx): the exact requests -------------------------------------------------------------

ABLY_HOSTED = "ably://appid.keyid:ably-Secret-5a4b3c"
ABLY_REST = "https://rest.ably.io"


async def test_hosted_ably_gets_the_keys_ids(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    """One channel: ``[{…, "id": "<key>:0"}]``; a batch over two calls (Ably takes 100 events a call): its events
    numbered across both, so none shares an id with another."""
    single = respx_mock.post(f"{ABLY_REST}/channels/orders/messages").respond(201, json={})
    batch = respx_mock.post(f"{ABLY_REST}/messages").mock(
        side_effect=lambda request: httpx.Response(
            201, json=[{"results": [{"channel": "orders", "messageId": "m"}]} for _ in json.loads(request.content)]
        )
    )
    relay = make_relay(ABLY_HOSTED)
    result = await relay.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    assert json.loads(single.calls.last.request.content) == [
        {"name": "created", "data": '{"id":1}', "id": f"{KEY}:0", "encoding": "json"}
    ]
    assert result == PublishResult(("orders",), (f"{KEY}:0",))

    events = [Event("orders", "n", str(index)) for index in range(150)]
    await relay.publish_batch(events, idempotency_key="batch-key")
    sent = [json.loads(call.request.content) for call in batch.calls]
    assert [len(specs) for specs in sent] == [100, 50]
    ids = [spec["messages"][0]["id"] for specs in sent for spec in specs]
    assert ids == [f"batch-key:{index}" for index in range(150)]
    assert [spec["messages"][0]["data"] for specs in sent for spec in specs] == [str(i) for i in range(150)]


async def test_hosted_pusher_gets_one_request_for_a_resend(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    """Pusher's HTTP API has no idempotency field: the publish goes out as without a key, once."""
    route = respx_mock.post("https://api-eu.pusher.com/apps/1/events").respond(200, json={})
    relay = make_relay("pusher://key:secret@eu/apps/1")
    for _ in range(2):
        await relay.publish("orders", "created", "x", idempotency_key=KEY)
    assert route.call_count == 1
    assert json.loads(route.calls.last.request.content) == {"name": "created", "channels": ["orders"], "data": "x"}
