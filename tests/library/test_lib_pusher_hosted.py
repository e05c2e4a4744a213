"""Hosted Pusher (api-eu.pusher.com, unreachable from here) with respx: exact requests, error mapping, retries.

Signatures are recomputed independently with the official ``pusher`` package (``respx_checks.check_signed``). Every
test runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import time

import httpx
import pytest
import respx
from libsupport import FAST_RETRY, MakeRelay
from pusher.http import make_query_string  # type: ignore[import-untyped]
from pusher.signature import sign  # type: ignore[import-untyped]
from respx_checks import check_sent, check_signed

from relay import ChannelInfo, Event, PresenceMember, PublishResult
from relay.adapters.base import HttpRequest, HttpResponse
from relay.adapters.pusher import PusherAdapter
from relay.config import from_env, parse_url
from relay.errors import (
    AuthenticationError,
    InvalidChannelName,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolError,
    ProviderError,
    RateLimited,
    RelayError,
    TransportError,
)
from relay.payload import Payload
from relay.senders import RetryPolicy, retry_delay

KEY, SECRET, APP_ID = "hosted-key", "hosted-Secret-9f8e7d", "123"
URL = f"pusher://{KEY}:{SECRET}@eu/apps/{APP_ID}"
BASE = "https://api-eu.pusher.com"
ORDERS_X = b'{"name":"e","channels":["orders"],"data":"x"}'  # publish("orders", "e", "x")


# -- exact requests -------------------------------------------------------------------------------------------------


async def test_publish_request(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(200, json={})
    relay = make_relay(URL)
    result = await relay.publish("orders", "order-ready", {"id": 42, "name": "ü"})
    assert result == PublishResult(("orders",))
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.scheme == "https" and request.url.host == "api-eu.pusher.com" and request.url.port is None
    assert request.headers["content-type"] == "application/json"
    assert (
        request.content
        == '{"name":"order-ready","channels":["orders"],"data":"{\\"id\\":42,\\"name\\":\\"ü\\"}"}'.encode()
    )
    check_signed(request, KEY, SECRET)


async def test_publish_with_socket_id_and_string_data(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(200, json={})
    relay = make_relay(URL)
    await relay.publish(["a", "b"], "e", "raw text", socket_id="123.456")
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "name": "e",
        "channels": ["a", "b"],
        "data": "raw text",
        "socket_id": "123.456",
    }
    check_signed(request, KEY, SECRET)


async def test_publish_over_100_channels_is_split(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(200, json={})
    relay = make_relay(URL)
    channels = [f"c{i}" for i in range(201)]
    result = await relay.publish(channels, "e", [1, 2])
    assert result.channels == tuple(channels)
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [len(body["channels"]) for body in bodies] == [100, 100, 1]
    assert {body["data"] for body in bodies} == {"[1,2]"}
    for call in route.calls:
        check_signed(call.request, KEY, SECRET)


async def test_publish_batch_request(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/batch_events").respond(200, json={})
    relay = make_relay(URL)
    events = [Event(f"c{i}", "e", {"i": i}, socket_id="1.2" if i == 0 else None) for i in range(11)]
    result = await relay.publish_batch(events)
    assert result.channels == tuple(f"c{i}" for i in range(11))
    first, second = (json.loads(call.request.content)["batch"] for call in route.calls)
    assert first[0] == {"name": "e", "channel": "c0", "data": '{"i":0}', "socket_id": "1.2"}
    assert len(first) == 10 and second == [{"name": "e", "channel": "c10", "data": '{"i":10}'}]
    for call in route.calls:
        check_signed(call.request, KEY, SECRET)


async def test_channel_queries(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    presence = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/presence-room").respond(
        200, json={"occupied": True, "user_count": 3}
    )
    public = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/lobby").respond(
        200, json={"occupied": True, "subscription_count": 7}
    )
    listing = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels").respond(
        200, json={"channels": {"presence-room": {"user_count": 3}}}
    )
    users = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/presence-room/users").respond(
        200, json={"users": [{"id": "1"}, {"id": 2}]}
    )
    relay = make_relay(URL)
    assert await relay.channel("presence-room") == ChannelInfo("presence-room", True, None, 3)
    assert await relay.channel("lobby") == ChannelInfo("lobby", True, 7, None)
    assert await relay.channels(prefix="presence-") == {"presence-room": ChannelInfo("presence-room", True, None, 3)}
    assert await relay.presence_members("presence-room") == [PresenceMember("1"), PresenceMember("2")]
    check_signed(presence.calls.last.request, KEY, SECRET, extra={"info": "user_count"})
    check_signed(public.calls.last.request, KEY, SECRET, extra={"info": "subscription_count"})
    check_signed(listing.calls.last.request, KEY, SECRET, extra={"filter_by_prefix": "presence-", "info": "user_count"})
    check_signed(users.calls.last.request, KEY, SECRET)
    for route in (presence, public, listing, users):
        assert route.calls.last.request.content == b""
        assert "content-type" not in route.calls.last.request.headers
    await relay.channels()
    check_signed(listing.calls.last.request, KEY, SECRET)


async def test_user_operations(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    events = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(200, json={})
    terminate = respx_mock.post(f"{BASE}/apps/{APP_ID}/users/alice/terminate_connections").respond(200, json={})
    relay = make_relay(URL)
    await relay.send_to_user("alice", "note", {"n": 1})
    assert json.loads(events.calls.last.request.content) == {
        "name": "note",
        "channels": ["#server-to-user-alice"],
        "data": '{"n":1}',
    }
    check_signed(events.calls.last.request, KEY, SECRET)
    await relay.terminate_user_connections("alice")
    assert terminate.calls.last.request.content == b"{}"
    check_signed(terminate.calls.last.request, KEY, SECRET)


def test_fixed_clock_gives_the_exact_request() -> None:
    """Adapters take ``clock=``: with a fixed clock the whole URL is known in advance."""
    adapter = PusherAdapter(parse_url(URL), clock=lambda: 1_700_000_000.9)
    request = adapter.publish(["orders"], "e", Payload.of({"a": 1}), None).request
    assert isinstance(request, HttpRequest)
    body = b'{"name":"e","channels":["orders"],"data":"{\\"a\\":1}"}'
    md5 = hashlib.md5(body).hexdigest()
    unsigned = {"auth_key": KEY, "auth_timestamp": "1700000000", "auth_version": "1.0", "body_md5": md5}
    signature = sign(SECRET, f"POST\n/apps/{APP_ID}/events\n{make_query_string(unsigned)}")
    assert request.url == (
        f"{BASE}/apps/{APP_ID}/events?auth_key={KEY}&auth_timestamp=1700000000&auth_version=1.0"
        f"&body_md5={md5}&auth_signature={signature}"
    )
    assert (request.method, request.body, request.idempotent) == ("POST", body, False)
    assert dict(request.headers) == {"Content-Type": "application/json"}


# -- error mapping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class", "fragment"),
    [
        (400, ProtocolError, "check"),
        (401, AuthenticationError, "check the key and secret"),
        (403, PermissionDenied, "disabled, over quota"),
        (404, NotFound, "check the app id and host"),
        (413, PayloadTooLarge, "over the provider's size limit"),
        (422, ProtocolError, ""),
        (500, ProviderError, ""),
        (502, ProviderError, ""),
    ],
)
async def test_error_status_mapping(
    make_relay: MakeRelay,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error_class: type[RelayError],
    fragment: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(status, json={"error": f"check {status} failed"})
    relay = make_relay(URL)
    with pytest.raises(error_class) as raised:
        await relay.publish("orders", "e", "x")
    error = raised.value
    assert type(error) is error_class
    assert error.http_status == status
    assert f"Pusher answered {status}: check {status} failed" in str(error)
    assert fragment in str(error)
    assert route.call_count == 1, "a publish is not retried on 4xx, 500 or 502"
    for text in (str(error), repr(error), caplog.text, repr(relay.client)):
        assert SECRET not in text


async def test_plain_text_and_empty_error_bodies(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[httpx.Response(400, text="Invalid channel name\n"), httpx.Response(500)]
    )
    relay = make_relay(URL)
    with pytest.raises(ProtocolError, match=r"Pusher answered 400: Invalid channel name$"):
        await relay.publish("orders", "e", "x")
    with pytest.raises(ProviderError, match=r"500: \(empty body\)"):
        await relay.publish("orders", "e", "x")


async def test_invalid_json_on_success_is_a_relay_error(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/lobby").respond(200, text="<html>proxy</html>")
    relay = make_relay(URL)
    with pytest.raises(RelayError, match="invalid JSON"):
        await relay.channel("lobby")


@pytest.mark.parametrize(
    "body", [{"occupied": "false"}, {"occupied": True, "subscription_count": "7"}, {"occupied": True, "user_count": -1}]
)
async def test_a_channel_answer_that_is_not_pusher_s_is_a_502_not_a_guess(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, body: dict[str, object]
) -> None:
    """{"occupied": "false"} read as occupied (bool of a non-empty string), a string count was passed on as one."""
    respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/lobby").respond(200, json=body)
    with pytest.raises(ProtocolError) as raised:
        await make_relay(URL).channel("lobby")
    assert raised.value.http_status == 502
    assert str(raised.value).startswith(
        "Pusher answered 200 with what is not a channel {occupied: true|false, subscription_count, user_count}: "
    )


async def test_laravel_reverb_s_empty_channel_list_is_no_channels(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Reverb answers GET /channels with no channel occupied as {"channels": []} (PHP writes an empty map as a list):
    a ProtocolError (502), where it is no channels."""
    respx_mock.get(f"{BASE}/apps/{APP_ID}/channels").respond(200, json={"channels": []})
    assert await make_relay(URL).channels() == {}


async def test_429_is_retried_after_retry_after(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "0.3"}, json={"error": "slow"}), httpx.Response(200)]
    )
    relay = make_relay(URL)
    started = time.monotonic()
    await relay.publish("orders", "e", "x")
    assert time.monotonic() - started >= 0.3, "Retry-After wins over the 1 ms backoff"
    check_sent(route, KEY, SECRET, [ORDERS_X] * 2)


async def test_429_exhausted_is_rate_limited(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(429, headers={"Retry-After": "0"}, json={})
    relay = make_relay(URL)
    with pytest.raises(RateLimited) as raised:
        await relay.publish("orders", "e", "x")
    assert (raised.value.http_status, raised.value.retry_after) == (429, 0.0)
    check_sent(route, KEY, SECRET, [ORDERS_X] * FAST_RETRY.attempts)


async def test_idempotent_get_is_retried_on_500_then_succeeds(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/lobby").mock(
        side_effect=[httpx.Response(500), httpx.Response(502), httpx.Response(200, json={"occupied": False})]
    )
    relay = make_relay(URL)
    assert await relay.channel("lobby") == ChannelInfo("lobby", False)
    check_sent(route, KEY, SECRET, [b""] * 3, extra={"info": "subscription_count"})


async def test_idempotent_get_exhausted_is_provider_error(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels").respond(500, json={"error": "boom"})
    relay = make_relay(URL, retry=RetryPolicy(attempts=4, backoff=0.001))
    with pytest.raises(ProviderError) as raised:
        await relay.channels()
    assert raised.value.http_status == 500
    check_sent(route, KEY, SECRET, [b""] * 4)


async def test_publish_retried_on_503_but_not_500(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={}), httpx.Response(500), httpx.Response(200)]
    )
    relay = make_relay(URL)
    await relay.publish("orders", "e", "first")
    first = b'{"name":"e","channels":["orders"],"data":"first"}'
    check_sent(route, KEY, SECRET, [first] * 2)
    with pytest.raises(ProviderError) as raised:
        await relay.publish("orders", "e", "second")
    assert raised.value.http_status == 500
    second = b'{"name":"e","channels":["orders"],"data":"second"}'
    check_sent(route, KEY, SECRET, [first, first, second])  # a 500 on a publish may have been processed: not retried


async def test_publish_retried_on_connect_errors(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.Response(200, json={})]
    )
    relay = make_relay(URL)
    await relay.publish("orders", "e", "x")
    check_sent(route, KEY, SECRET, [ORDERS_X] * 3)


async def test_connect_errors_exhausted_are_transport_errors(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(side_effect=httpx.ConnectError("refused"))
    relay = make_relay(URL)
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "e", "x")
    assert "could not reach api-eu.pusher.com:443: ConnectError" in str(raised.value)
    check_sent(route, KEY, SECRET, [ORDERS_X] * FAST_RETRY.attempts)
    assert SECRET not in caplog.text and SECRET not in str(raised.value)


async def test_read_timeout_retries_only_idempotent_requests(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    publish = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(side_effect=httpx.ReadTimeout("slow"))
    query = respx_mock.get(f"{BASE}/apps/{APP_ID}/channels/lobby").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={"occupied": True})]
    )
    relay = make_relay(URL)
    with pytest.raises(TransportError, match="ReadTimeout"):
        await relay.publish("orders", "e", "x")
    check_sent(publish, KEY, SECRET, [ORDERS_X])  # the publish may have arrived: not sent twice
    assert (await relay.channel("lobby")).occupied
    check_sent(query, KEY, SECRET, [b""] * 2, extra={"info": "subscription_count"})


# -- the retry schedule -----------------------------------------------------------------------------------------


def _response(status: int, **headers: str) -> HttpResponse:
    return HttpResponse(status, headers, b"")


@pytest.mark.parametrize(
    ("idempotent", "response", "sent", "retried"),
    [
        (False, _response(429), True, True),
        (False, _response(503), True, True),
        (False, _response(500), True, False),
        (False, _response(502), True, False),
        (True, _response(500), True, True),
        (True, _response(504), True, True),
        (True, _response(404), True, False),
        (False, _response(400), True, False),
        (False, None, False, True),
        (False, None, True, False),
        (True, None, True, True),
    ],
)
def test_retry_delay_decisions(idempotent: bool, response: HttpResponse | None, sent: bool, retried: bool) -> None:
    request = HttpRequest("POST", f"{BASE}/x", idempotent=idempotent)
    policy = RetryPolicy(attempts=3, backoff=0.5)
    delay = retry_delay(policy, 1, request, response, request_was_sent=sent, jitter=lambda: 1.0)
    assert (delay is not None) == retried
    assert retry_delay(policy, 3, request, response, request_was_sent=sent, jitter=lambda: 1.0) is None


def test_retry_delay_backoff_jitter_and_retry_after() -> None:
    request = HttpRequest("GET", f"{BASE}/x", idempotent=True)
    policy = RetryPolicy(attempts=10, backoff=0.5, max_delay=3.0)

    def delay(attempt: int, response: HttpResponse, jitter: float = 1.0) -> float | None:
        return retry_delay(policy, attempt, request, response, request_was_sent=True, jitter=lambda: jitter)

    assert [delay(attempt, _response(500)) for attempt in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert delay(2, _response(500), jitter=0.0) == 0.5, "full jitter keeps at least half the delay"
    assert delay(1, _response(429, **{"retry-after": "2"})) == 2.0
    assert delay(1, _response(503, **{"retry-after": "120"})) is None, "longer than max_delay: the caller's to wait"
    assert delay(1, _response(429, **{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0, "a date gone by"
    soon = email.utils.formatdate(time.time() + 2, usegmt=True)  # an HTTP-date (RFC 9110 §10.2.3)
    assert delay(1, _response(429, **{"retry-after": soon})) == pytest.approx(2.0, abs=1.1)


def test_sync_sender_sleeps_the_retry_after(respx_mock: respx.MockRouter) -> None:
    """The sync sender's ``sleep`` is injectable: the exact delays are observable."""
    from relay import Relay
    from relay.senders import SyncSender

    respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503),
            httpx.Response(200, json={}),
        ]
    )
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, backoff=0.25, max_delay=10.0)
    with Relay(URL, sender=SyncSender(policy, sleep=slept.append, jitter=lambda: 1.0)) as relay:
        relay.publish("orders", "e", "x")
    assert slept == [7.0, 0.5]


async def test_a_retry_is_signed_anew_so_a_long_wait_does_not_send_a_stale_signature(
    respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pusher refuses a signature over 600 s old: a retry after waits adding up to more than that was refused (401)
    when it resent the first attempt's signature. Each attempt is now signed at its own time, sync and async."""
    from relay.senders import AsyncSender, Sending, SyncSender

    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "700"}), httpx.Response(200, json={})] * 2
    )
    clock = iter([1_700_000_000.0, 1_700_000_700.0, 1_700_001_000.0, 1_700_001_700.0])
    adapter = PusherAdapter(parse_url(URL), clock=lambda: next(clock))
    sending = Sending(adapter.error_for, "pusher", True, adapter.name)
    policy = RetryPolicy(attempts=2, max_delay=900.0)
    slept: list[float] = []

    async def no_wait(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    sync_sender, async_sender = SyncSender(policy, sleep=slept.append), AsyncSender(policy)
    for send in (sync_sender.send, async_sender.send):
        request = adapter.publish(["orders"], "e", Payload.of("x"), None).request
        assert request is not None
        answer = send(request, sending)
        assert (answer if isinstance(answer, HttpResponse) else await answer).status == 200
    sync_sender.close()
    await async_sender.aclose()
    assert slept == [700.0, 700.0]
    timestamps = [call.request.url.params["auth_timestamp"] for call in route.calls]
    assert timestamps == ["1700000000", "1700000700", "1700001000", "1700001700"]
    for call in route.calls:
        assert call.request.content == b'{"name":"e","channels":["orders"],"data":"x"}'
        query = dict(call.request.url.params)
        unsigned = {name: value for name, value in query.items() if name != "auth_signature"}
        assert query["auth_signature"] == sign(SECRET, f"POST\n/apps/{APP_ID}/events\n{make_query_string(unsigned)}")


# -- hosted Pusher's channel-name limit ---------------------------------------------------------------------------


async def test_hosted_pusher_refuses_channel_names_over_164_characters_before_sending(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Hosted Pusher refuses a subscription to a name over 164 characters, prefix included, though its HTTP libraries
    allow 200: such a channel could be published to and never subscribed to, so relay refuses it up front, and a user
    id its #server-to-user- channel cannot carry; a self-hosted Pusher-protocol server keeps the protocol's 200."""
    route = respx_mock.post(f"{BASE}/apps/{APP_ID}/events").respond(200, json={})
    relay = make_relay(URL)
    longest = "private-" + "a" * 156
    assert await relay.publish(longest, "e", "x") == PublishResult((longest,))
    assert (await relay.authorize_channel("123.456", longest))["auth"].startswith(f"{KEY}:")
    for call in (
        lambda: relay.publish(longest + "b", "e", "x"),
        lambda: relay.authorize_channel("123.456", longest + "b"),
        lambda: relay.channel(longest + "b"),
    ):
        with pytest.raises(InvalidChannelName) as refused:
            await call()
        assert str(refused.value) == "channel name is 165 characters long; the limit is 164"
    with pytest.raises(InvalidChannelName) as refused:
        await relay.send_to_user("u" * 149, "e", "x")
    assert "it goes in the channel #server-to-user-{id}, so it is 1 to 148 of" in str(refused.value)
    await relay.send_to_user("u" * 148, "e", "x")
    assert route.call_count == 2

    self_hosted = respx_mock.post("http://soketi:6001/apps/1/events").respond(200, json={})
    relay = make_relay("pusher://key:secret@soketi:6001/apps/1?tls=false")
    await relay.publish("a" * 200, "e", "x")
    await relay.send_to_user("u" * 184, "e", "x")
    assert self_hosted.call_count == 2
    with pytest.raises(InvalidChannelName, match=r"^channel name is 201 characters long; the limit is 200$"):
        await relay.publish("a" * 201, "e", "x")


@pytest.mark.parametrize("host", ["API-EU.PUSHER.COM", "api-eu.pusher.com.", "Api.PusherApp.com."])
def test_hosted_pusher_is_recognised_however_its_host_is_written(host: str) -> None:
    """DNS names ignore case and a trailing dot names the same host: PUSHER_HOST written so is still hosted Pusher,
    with its limit and its name in errors."""
    adapter = PusherAdapter(
        from_env({"PUSHER_APP_ID": APP_ID, "PUSHER_KEY": KEY, "PUSHER_SECRET": SECRET, "PUSHER_HOST": host})
    )
    assert adapter.name == "Pusher"
    with pytest.raises(InvalidChannelName, match="the limit is 164"):
        adapter.check_channel("a" * 165)
