"""The senders' retries and Retry-After, the error mapping behind ``failover:``, ``mirror:``'s results and queries,
and the default client, each as docs/library.md states it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from libsupport import MakeRelay
from respx_checks import check_sent

import relay
from relay import ChannelInfo, MirrorError, PublishResult
from relay.errors import ClientClosed, PermissionDenied, RateLimited

PUSHER_KEY, PUSHER_SECRET = "k", "hosted-secret"
PUSHER_EU = f"pusher://{PUSHER_KEY}:{PUSHER_SECRET}@eu/apps/1"
PUSHER_US = f"pusher://{PUSHER_KEY}:{PUSHER_SECRET}@us2/apps/1"
EU_EVENTS = "https://api-eu.pusher.com/apps/1/events"
US_EVENTS = "https://api-us2.pusher.com/apps/1/events"
ABLY = "ably://appid.keyid:ably-Secret-5a4b3c"
ABLY_BASE = "https://rest.ably.io"


# -- Retry-After ----------------------------------------------------------------------------------------------------


async def test_retry_after_longer_than_max_delay_is_not_cut_short(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """docs/library.md: 429 answers are retried "honouring `Retry-After`". A provider that says "come back in an
    hour" must not be asked again after ``max_delay`` (1 s here): the caller gets RateLimited with the hour."""
    route = respx_mock.post(EU_EVENTS).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "3600"}, json={}), httpx.Response(200, json={})]
    )
    client = make_relay(PUSHER_EU)
    with pytest.raises(RateLimited) as raised:
        await client.publish("orders", "e", "x")
    assert raised.value.retry_after == 3600.0
    assert route.call_count == 1, "retried before the provider's Retry-After had elapsed"


async def test_retry_after_as_an_http_date_is_carried_by_rate_limited(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """docs/library.md: errors carry ``retry_after`` "where known". RFC 9110 allows Retry-After as an HTTP-date; the
    provider told the delay, so RateLimited carries it."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    respx_mock.get("https://api-eu.pusher.com/apps/1/channels/lobby").respond(
        429, headers={"Retry-After": when}, json={}
    )
    client = make_relay(PUSHER_EU)
    with pytest.raises(RateLimited) as raised:
        await client.channel("lobby")
    assert raised.value.retry_after is not None and 20 <= raised.value.retry_after <= 31


# -- failover -------------------------------------------------------------------------------------------------------


async def test_failover_does_not_move_on_when_ably_refuses_a_channel_with_401(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """docs/library.md: failover "moves on only when a provider is unreachable, rate-limited or answers 5xx; a client
    error (400, 401, 403, 413) is raised at once". Ably's batch answer refusing one channel with statusCode 401 is
    that client error (it was taken for a 5xx, and the event went again to Pusher, channels Ably had delivered
    included)."""
    refused = {"code": 40160, "statusCode": 401, "message": "action not permitted"}
    results = [
        {"channel": "ok", "messageId": "srv:0", "serials": ["s"]},
        {"channel": "locked", "error": refused},
    ]
    ably = respx_mock.post(f"{ABLY_BASE}/messages").respond(
        201, json=[{"successCount": 1, "failureCount": 1, "results": results}]
    )
    pusher = respx_mock.post(EU_EVENTS).respond(200, json={})
    client = make_relay(f"failover:{ABLY}|{PUSHER_EU}")
    with pytest.raises(PermissionDenied, match=r"^Ably refused the publish on 1 of 2 channels: locked ") as raised:
        await client.publish(["ok", "locked"], "e", "x")
    assert (raised.value.http_status, raised.value.code, raised.value.published) == (401, 40160, 1)
    assert ably.call_count == 1
    assert pusher.call_count == 0, "failed over on a 401 refusal; 'ok' got the event twice"


# -- mirror ---------------------------------------------------------------------------------------------------------


async def test_mirror_error_results_are_what_the_operation_returns(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """docs/library.md: MirrorError has ``results`` (what succeeded, by provider). A publish's result is a
    PublishResult, not the client's internal list of per-request parts."""
    eu = respx_mock.post(EU_EVENTS).respond(200, json={})
    us = respx_mock.post(US_EVENTS).respond(500, text="boom")
    client = make_relay(f"mirror:{PUSHER_EU}|{PUSHER_US}")
    with pytest.raises(MirrorError) as raised:
        await client.publish("orders", "e", "x")
    assert raised.value.results == {"pusher://k:***@api-eu.pusher.com/apps/1": PublishResult(("orders",))}
    # Both got the same event, each signed with its own request; a 500 on a publish is not retried.
    body = b'{"name":"e","channels":["orders"],"data":"x"}'
    for route in (eu, us):
        check_sent(route, PUSHER_KEY, PUSHER_SECRET, [body])


async def test_mirror_query_answers_from_the_first_provider_when_another_is_down(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """docs/library.md: in mirror mode "Channel authorization and queries use the first provider". The first
    provider answered; an outage of the second must not turn a read into a MirrorError."""
    eu = respx_mock.get("https://api-eu.pusher.com/apps/1/channels/orders").respond(
        200, json={"occupied": True, "subscription_count": 2}
    )
    us = respx_mock.get("https://api-us2.pusher.com/apps/1/channels/orders").mock(
        side_effect=httpx.ConnectError("down")
    )
    client = make_relay(f"mirror:{PUSHER_EU}|{PUSHER_US}")
    assert await client.channel("orders") == ChannelInfo("orders", True, 2, None)
    check_sent(eu, PUSHER_KEY, PUSHER_SECRET, [b""], extra={"info": "subscription_count"})
    assert not us.called, "a query asks the first provider only"


# -- the module-level default client --------------------------------------------------------------------------------


def test_reset_default_client_does_not_break_a_publish_in_flight_on_another_thread(
    monkeypatch: pytest.MonkeyPatch, respx_mock: respx.MockRouter
) -> None:
    """``reset_default_client`` closes the default client while another thread's publish is waiting to retry a 429
    with it: that publish ends with ClientClosed, a RelayError, not httpx's bare RuntimeError (docs/library.md:
    "Every error is a relay.errors.RelayError"), and the retry is never sent. The provider holds its 429 until
    the client is closed, so the retry always finds the client closed."""
    monkeypatch.setenv("RELAY_URL", PUSHER_EU)
    relay.reset_default_client()
    first_sent, closed = threading.Event(), threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        if not first_sent.is_set():
            first_sent.set()
            assert closed.wait(5)
            return httpx.Response(429, headers={"Retry-After": "0.3"}, json={})
        return httpx.Response(200, json={})

    route = respx_mock.post(EU_EVENTS).mock(side_effect=answer)
    outcome: list[Any] = []

    def publish() -> None:
        try:
            outcome.append(relay.publish("orders", "e", "x"))
        except Exception as error:
            outcome.append(error)

    worker = threading.Thread(target=publish)
    worker.start()
    try:
        assert first_sent.wait(5)
        relay.reset_default_client()
        closed.set()
        worker.join(5)
    finally:
        closed.set()
        relay.reset_default_client()
    assert not worker.is_alive()
    [result] = outcome
    assert isinstance(result, ClientClosed), f"{type(result).__name__}: {result}"
    assert route.call_count == 1, "the retry was sent with a closed client"
