"""Mirror and failover across providers of different kinds: a socket id belongs to one provider's connection, and a
failover that ends in an error still says a publish may have been delivered by a provider tried before."""

from __future__ import annotations

import json
import socket

import pytest
import respx
from libsupport import MakeRelay, server

from relay import Event
from relay.errors import InvalidSocketId, ProtocolError, TransportError
from relay.senders import RetryPolicy

ONCE = RetryPolicy(attempts=1, backoff=0.01, max_delay=0.1, timeout=5.0)
PUSHER = "pusher://pkey:pusher-Secret-1@eu/apps/9"
PUSHER_EVENTS = "https://api-eu.pusher.com/apps/9/events"
PUSHER_BATCH = "https://api-eu.pusher.com/apps/9/batch_events"
ABLY = "ably://app.keyid:ably-secret"
ABLY_MESSAGES = "https://rest.ably.io/channels/orders/messages"
ABLY_BATCH = "https://rest.ably.io/messages"
# What ably-js's connection.key looks like: {connectionId}!{secret}
CONNECTION_KEY = "hZ8cqJnEZJ!mN3xQ7kPJZ0wu2l-4e"
REFUSED = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad"


def sent_to(channel: str) -> dict[str, object]:
    """Ably's BatchResult of a spec published to ``channel``."""
    result = {"channel": channel, "messageId": "srv:0", "serials": ["s"]}
    return {"successCount": 1, "failureCount": 0, "results": [result]}


def closed_port_url() -> str:
    """An emulator:// URL nothing listens on: connecting is refused, so nothing of a request is sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1"


@pytest.mark.parametrize("order", ["pusher-first", "ably-first"])
async def test_a_mirror_publishes_with_an_ably_connection_key_leaving_it_out_of_pusher(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, order: str
) -> None:
    """Mid-migration, a page on ably-js sends its connection key as the socket id. It was refused for the Pusher
    side's format, so the event reached neither provider; the key is Ably's alone, and Pusher has no such connection
    to leave out."""
    pusher = respx_mock.post(PUSHER_EVENTS).respond(200, json={})
    ably = respx_mock.post(ABLY_MESSAGES).respond(201, json={})
    urls = [PUSHER, ABLY] if order == "pusher-first" else [ABLY, PUSHER]
    relay = make_relay(f"mirror:{'|'.join(urls)}")
    await relay.publish("orders", "e", "x", socket_id=CONNECTION_KEY)
    assert "socket_id" not in json.loads(pusher.calls.last.request.content)
    assert json.loads(ably.calls.last.request.content)[0]["connectionKey"] == CONNECTION_KEY


async def test_a_mirror_batch_leaves_an_ably_connection_key_out_of_pusher_alone(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    pusher = respx_mock.post(PUSHER_BATCH).respond(200, json={"batch": [{}, {}]})
    ably = respx_mock.post(ABLY_BATCH).respond(201, json=[sent_to("orders"), sent_to("payments")])
    relay = make_relay(f"mirror:{PUSHER}|{ABLY}")
    await relay.publish_batch([Event("orders", "e", 1, CONNECTION_KEY), Event("payments", "e", 2, "123.456")])
    sent = json.loads(pusher.calls.last.request.content)["batch"]
    assert [item.get("socket_id") for item in sent] == [None, "123.456"]
    specs = json.loads(ably.calls.last.request.content)
    assert [spec["messages"][0]["connectionKey"] for spec in specs] == [CONNECTION_KEY, "123.456"]


async def test_a_mirror_still_refuses_a_socket_id_no_provider_takes(make_relay: MakeRelay) -> None:
    relay = make_relay(f"mirror:{PUSHER}|memory://other")
    with pytest.raises(InvalidSocketId, match=r"invalid socket_id 'abc!def': expected digits '\.' digits"):
        await relay.publish("orders", "e", "x", socket_id="abc!def")


async def test_failover_refused_after_a_provider_that_may_have_delivered_says_so(make_relay: MakeRelay) -> None:
    """The first provider got the publish and hung up without an answer; the second answered 400. The 400 alone
    said the outcome was known, and a caller sending the event again had it delivered twice."""
    async with server(lambda _: None) as (first, got_first), server(lambda _: REFUSED) as (second, _):
        relay = make_relay(f"failover:{first}|{second}", retry=ONCE)
        with pytest.raises(ProtocolError) as raised:
            await relay.publish("orders", "paid", 1)
    assert len(got_first) == 1
    assert raised.value.outcome_unknown
    assert raised.value.http_status == 400
    port = first.split("@")[1].split("/")[0]
    assert raised.value.message.startswith("the Relay emulator answered 400: bad")
    earlier = f"an earlier provider, emulator://app-key:***@{port}/apps/1, got it and gave no answer"
    assert f"{earlier}: it may have processed it" in raised.value.message


async def test_failover_refused_after_a_provider_that_published_part_of_it_says_so(make_relay: MakeRelay) -> None:
    """The first provider published the first call (100 channels), then answered 503 to the second; the second
    provider refused the publish. Its refusal alone said nothing of the 100 channels already delivered: a caller
    sending it all again had them delivered twice there."""
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
    published = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    async with (
        server(lambda n: published if n == 1 else unavailable) as (first, got_first),
        server(lambda _: REFUSED) as (second, _),
    ):
        relay = make_relay(f"failover:{first}|{second}", retry=ONCE)
        with pytest.raises(ProtocolError) as raised:
            await relay.publish([f"c{i}" for i in range(101)], "paid", 1)
    assert len(got_first) == 2
    port = first.split("@")[1].split("/")[0]
    assert raised.value.message.startswith("the Relay emulator answered 400: bad; an earlier provider, ")
    assert (
        f"an earlier provider, emulator://app-key:***@{port}/apps/1, had published part of it before it failed (the "
        "Relay emulator answered 503: busy; channels 0-99 were already published by the calls before this one"
    ) in raised.value.message


async def test_failover_unreachable_after_a_provider_that_may_have_delivered_says_so(make_relay: MakeRelay) -> None:
    async with server(lambda _: None) as (first, _):
        relay = make_relay(f"failover:{first}|{closed_port_url()}", retry=ONCE)
        with pytest.raises(TransportError) as raised:
            await relay.publish("orders", "paid", 1)
    assert raised.value.message.startswith("could not reach 127.0.0.1:")
    assert raised.value.outcome_unknown
    assert "an earlier provider" in raised.value.message


async def test_failover_whose_providers_all_refused_the_connection_is_of_known_outcome(make_relay: MakeRelay) -> None:
    relay = make_relay(f"failover:{closed_port_url()}|{closed_port_url()}", retry=ONCE)
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "paid", 1)
    assert not raised.value.outcome_unknown
    assert "an earlier provider" not in raised.value.message
