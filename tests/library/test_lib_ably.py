"""Ably over REST with respx (rest.ably.io is unreachable from here): exact requests, errors, tokens, webhooks.

Facts from ably-and-pricing.md §A: Basic auth with the key name and secret (A.2), ``POST /channels/{ch}/messages``
with idempotent ids ``<base>:<index>`` and ``encoding: json`` for object data (A.3), ``POST /messages`` batch specs and
their per-channel results (A.4), presence (A.6), channel status (A.7), enumeration (A.8), TokenRequest MACs (A.10),
capabilities (A.12), error bodies ``{"error": {code, statusCode, message}}`` (A.1) and signed batched webhooks (D.9).
What a channel token may do is also tried for real, against the emulator's Ably side with ably-python.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pusher as pusher_http  # type: ignore[import-untyped]
import pytest
import respx
from ably import AblyException, AblyRealtime  # type: ignore[import-untyped]
from ably.types.tokenrequest import TokenRequest  # type: ignore[import-untyped]
from libsupport import MakeRelay
from respx_checks import check_sent

from relay import AsyncRelay, ChannelInfo, Event, MirrorError, PresenceMember, PublishResult, User, WebhookEvent
from relay.adapters.ably import AblyAdapter
from relay.config import parse_url
from relay.errors import (
    AuthenticationError,
    InvalidChannelName,
    InvalidSignature,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolError,
    ProviderError,
    RateLimited,
    RelayError,
    TransportError,
    UnknownKey,
    UnsupportedCapability,
)
from relay.protocol.ably import parse_capability, verify_token_request
from tests.ably.ablysupport import MESSAGE, PRESENCE, ably_wire
from tests.conftest import StartEmulator

KEY_NAME, KEY_SECRET = "appid.keyid", "ably-Secret-5a4b3c"
URL = f"ably://{KEY_NAME}:{KEY_SECRET}"
BASE = "https://rest.ably.io"
BASIC = "Basic " + base64.b64encode(f"{KEY_NAME}:{KEY_SECRET}".encode()).decode()
MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{12,}:(\d+)$")


def check_headers(request: httpx.Request, *, body: bool = True) -> None:
    assert request.headers["authorization"] == BASIC
    assert request.headers["x-ably-version"] == "3"
    assert request.headers["accept"] == "application/json"
    assert (request.headers.get("content-type") == "application/json") == body
    assert request.url.scheme == "https" and request.url.host == "rest.ably.io"


def message_id_base(message_id: str, index: int = 0) -> str:
    match = MESSAGE_ID.match(message_id)
    assert match is not None, f"not an idempotent message id: {message_id!r}"
    assert int(match.group(1)) == index
    return message_id.rpartition(":")[0]


def batch_result(*channels: str, failed: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    failures = failed or {}
    results: list[dict[str, Any]] = [
        {"channel": channel, "messageId": "srv:0", "serials": ["s"]} for channel in channels if channel not in failures
    ]
    results += [{"channel": channel, "error": error} for channel, error in failures.items()]
    return {"successCount": len(channels) - len(failures), "failureCount": len(failures), "results": results}


# -- publish ------------------------------------------------------------------------------------------------------


async def test_publish_to_one_channel(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/channels/orders/messages").respond(
        201, json={"channel": "orders", "messageId": "x:0", "serials": ["01"]}
    )
    relay = make_relay(URL)
    result = await relay.publish("orders", "order-ready", {"id": 42})
    request = route.calls.last.request
    check_headers(request)
    [message] = json.loads(request.content)
    assert message == {"name": "order-ready", "data": '{"id":42}', "id": message["id"], "encoding": "json"}
    message_id_base(message["id"])
    assert result == PublishResult(("orders",), (message["id"],))
    assert request.url.params == httpx.QueryParams()


async def test_publish_string_data_and_connection_key(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/channels/user%40example.com/messages").respond(201, json={})
    relay = make_relay(URL)
    await relay.publish("user@example.com", "e", "plain", socket_id="123.456")
    request = route.calls.last.request
    assert request.url.raw_path == b"/channels/user%40example.com/messages"
    [message] = json.loads(request.content)
    assert set(message) == {"name", "data", "id", "connectionKey"}, "a str is not marked as json"
    assert (message["data"], message["connectionKey"]) == ("plain", "123.456")


INVALID_KEY = {
    "error": {
        "code": 40006,
        "statusCode": 400,
        "message": "Malformed message; invalid connectionKey. (See https://help.ably.io/error/40006 for help.)",
    }
}


@pytest.mark.parametrize("channels", [["orders"], ["orders", "audit"]])
async def test_a_refused_connection_key_is_dropped_not_the_publish(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture, channels: list[str]
) -> None:
    """Ably refuses the whole publish for a connectionKey that is not a connection's (a pusher-js socket id sent to
    Ably's REST API: ably-php#165). The same message, same id, goes again without the key, and a warning says so:
    the sender may see its own message, every other subscriber still gets it."""
    path = "/channels/orders/messages" if len(channels) == 1 else "/messages"
    route = respx_mock.post(f"{BASE}{path}").mock(
        side_effect=[
            httpx.Response(400, json=INVALID_KEY),
            httpx.Response(201, json={} if len(channels) == 1 else [batch_result(*channels)]),
        ]
    )
    with caplog.at_level(logging.WARNING, "relay.adapters.ably"):
        result = await make_relay(URL).publish(channels, "e", "x", socket_id="123.456")
    first, second = (json.loads(call.request.content) for call in route.calls)
    keyed = first[0] if len(channels) == 1 else first[0]["messages"][0]
    unkeyed = second[0] if len(channels) == 1 else second[0]["messages"][0]
    assert keyed["connectionKey"] == "123.456" and "connectionKey" not in unkeyed
    assert unkeyed == {key: value for key, value in keyed.items() if key != "connectionKey"}
    assert result.message_ids == (keyed["id"],)
    assert "sent again without it" in caplog.text and "invalid connectionKey" in caplog.text


async def test_a_batch_refused_for_a_connection_key_goes_again_without_keys(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{BASE}/messages").mock(
        side_effect=[
            httpx.Response(400, json=INVALID_KEY),
            httpx.Response(201, json=[batch_result("a"), batch_result("a")]),
        ]
    )
    events = [Event("a", "e", "1", socket_id="123.456"), Event("a", "e", "2")]
    result = await make_relay(URL).publish_batch(events)
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert [spec["messages"][0].get("connectionKey") for spec in first] == ["123.456", None]
    assert [spec["messages"][0].get("connectionKey") for spec in second] == [None, None]
    assert [spec["messages"][0]["id"] for spec in second] == [spec["messages"][0]["id"] for spec in first]
    assert len(result.message_ids) == 2


@pytest.mark.parametrize(
    ("socket_id", "answer"),
    [
        (None, INVALID_KEY),  # no key sent: nothing to drop
        ("123.456", {"error": {"code": 40006, "statusCode": 400, "message": "Malformed message; invalid data"}}),
    ],
)
async def test_other_malformed_message_refusals_are_raised_at_once(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, socket_id: str | None, answer: dict[str, Any]
) -> None:
    route = respx_mock.post(f"{BASE}/channels/orders/messages").respond(400, json=answer)
    with pytest.raises(RelayError, match="Malformed message") as raised:
        await make_relay(URL).publish("orders", "e", "x", socket_id=socket_id)
    assert (raised.value.http_status, raised.value.code, route.call_count) == (400, 40006, 1)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [('{"id": 42}', "json"), ("[1, 2]", "json"), ("42", "json"), ("NaN", None), ("{not json", None), ("", None)],
)
async def test_a_str_pusher_js_would_parse_is_sent_as_json(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, data: str, encoding: str | None
) -> None:
    """pusher-js JSON.parses every data string it can: ``publish(ch, e, json.dumps(obj))``, the pusher-http-python
    habit, gives its subscribers the object, and now ably-js's too (encoding json; the text is sent as it is)."""
    route = respx_mock.post(f"{BASE}/channels/orders/messages").respond(201, json={})
    await make_relay(URL).publish("orders", "e", data)
    [message] = json.loads(route.calls.last.request.content)
    assert (message["data"], message.get("encoding")) == (data, encoding)


async def test_publish_to_many_channels_is_a_batch(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    channels = [f"c{i}" for i in range(150)]
    route = respx_mock.post(f"{BASE}/messages").mock(
        side_effect=[
            httpx.Response(201, json=[batch_result(*channels[:100])]),
            httpx.Response(201, json=[batch_result(*channels[100:])]),
        ]
    )
    relay = make_relay(URL)
    result = await relay.publish(channels, "tick", [1])
    assert result.channels == tuple(channels)
    specs = [json.loads(call.request.content) for call in route.calls]
    assert [len(spec) for spec in specs] == [1, 1]
    assert [spec[0]["channels"] for spec in specs] == [channels[:100], channels[100:]]
    ids = []
    for spec, call in zip(specs, route.calls, strict=True):
        [message] = spec[0]["messages"]
        assert {key: value for key, value in message.items() if key != "id"} == {
            "name": "tick",
            "data": "[1]",
            "encoding": "json",
        }
        message_id_base(message["id"])
        ids.append(message["id"])
        check_headers(call.request)
    assert result.message_ids == tuple(ids)


async def test_batch_partial_failure_names_the_channel(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    error = {"code": 40160, "statusCode": 401, "message": "action not permitted"}
    respx_mock.post(f"{BASE}/messages").respond(201, json=[batch_result("ok", "locked", failed={"locked": error})])
    relay = make_relay(URL)
    # Ably's 401 with 40160 is a refused capability, the caller's to fix (no failover), not a wrong key
    with pytest.raises(PermissionDenied) as raised:
        await relay.publish(["ok", "locked"], "e", "x")
    assert str(raised.value).startswith("Ably refused the publish on 1 of 2 channels: locked (action not permitted")
    assert (raised.value.http_status, raised.value.code, raised.value.published) == (401, 40160, 1)


async def test_publish_batch(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/messages").respond(201, json=[batch_result("a"), batch_result("b")])
    relay = make_relay(URL)
    result = await relay.publish_batch([Event("a", "e1", {"n": 1}), Event("b", "e2", "two", socket_id="9.9")])
    specs = json.loads(route.calls.last.request.content)
    check_headers(route.calls.last.request)
    assert [spec["channels"] for spec in specs] == [["a"], ["b"]]
    first, second = (spec["messages"][0] for spec in specs)
    base = message_id_base(first["id"], 0)
    assert message_id_base(second["id"], 1) == base, "one base id, indexed per message"
    assert first == {"name": "e1", "data": '{"n":1}', "id": f"{base}:0", "encoding": "json"}
    assert second == {"name": "e2", "data": "two", "id": f"{base}:1", "connectionKey": "9.9"}
    assert result == PublishResult(("a", "b"), (f"{base}:0", f"{base}:1"))


async def test_publish_batch_over_100_events_is_split(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/messages").mock(
        side_effect=[
            httpx.Response(201, json=[batch_result("c") for _ in range(100)]),
            httpx.Response(201, json=[batch_result("c")]),
        ]
    )
    relay = make_relay(URL)
    result = await relay.publish_batch([Event("c", "e", i) for i in range(101)])
    assert [len(json.loads(call.request.content)) for call in route.calls] == [100, 1]
    assert len(result.channels) == 101 and len(set(result.message_ids)) == 101


# -- queries ------------------------------------------------------------------------------------------------------


async def test_channel_status_presence_and_enumeration(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    metrics = {"connections": 3, "presenceMembers": 2, "subscribers": 3, "publishers": 1}
    status = respx_mock.get(f"{BASE}/channels/presence-room").respond(
        200, json={"channelId": "presence-room", "status": {"isActive": True, "occupancy": {"metrics": metrics}}}
    )
    idle = respx_mock.get(f"{BASE}/channels/lobby").respond(
        200, json={"channelId": "lobby", "status": {"isActive": False, "occupancy": {"metrics": {"subscribers": 0}}}}
    )
    members = respx_mock.get(f"{BASE}/channels/presence-room/presence").respond(
        200,
        json=[
            {"clientId": "alice", "action": 1, "data": '{"name":"Alice"}', "encoding": "json"},
            {"clientId": "bob", "action": 1, "data": {"name": "Bob"}},
            {"clientId": "carol", "action": 1},
            {"clientId": "alice", "connectionId": "her-phone", "action": 1, "data": {"name": "Alice"}},
        ],
    )
    details = {"channelId": "presence-room", "status": {"isActive": True, "occupancy": {"metrics": metrics}}}
    # Active a while after its last member left: Ably lists it, Pusher would not
    left = {"channelId": "presence-left", "status": {"isActive": True, "occupancy": {"metrics": {"subscribers": 0}}}}
    listing = respx_mock.get(f"{BASE}/channels").respond(
        200, json=[details, {"channelId": "presence-x"}, left, "presence-y"]
    )
    # Active, nobody subscribed (a publish nobody received, a subscriber who just left): not occupied, as on Pusher
    lingering = respx_mock.get(f"{BASE}/channels/hall").respond(
        200, json={"channelId": "hall", "status": {"isActive": True, "occupancy": {"metrics": {"subscribers": 0}}}}
    )
    relay = make_relay(URL)
    assert await relay.channel("presence-room") == ChannelInfo("presence-room", True, 3, 2)
    assert await relay.channel("lobby") == ChannelInfo("lobby", False, 0, None)
    assert await relay.channel("hall") == ChannelInfo("hall", False, 0, None) and lingering.called
    assert await relay.presence_members("presence-room") == [
        PresenceMember("alice", {"name": "Alice"}),
        PresenceMember("bob", {"name": "Bob"}),
        PresenceMember("carol", None),
    ]
    # Presence channels are listed with their user counts (as Pusher lists them): Ably's ChannelDetails (by=value),
    # which also tell the active channels nobody is subscribed to, left out as Pusher leaves them out
    assert await relay.channels(prefix="presence-") == {
        "presence-room": ChannelInfo("presence-room", True, None, 2),
        "presence-x": ChannelInfo("presence-x", True),
        "presence-y": ChannelInfo("presence-y", True),
    }
    assert dict(members.calls.last.request.url.params) == {"limit": "1000"}
    assert dict(listing.calls.last.request.url.params) == {"prefix": "presence-", "by": "value", "limit": "1000"}
    assert await relay.channels() == {
        name: ChannelInfo(name, True) for name in ("presence-room", "presence-x", "presence-y")
    }
    assert dict(listing.calls.last.request.url.params) == {"by": "id", "limit": "1000"}
    for route in (status, idle, members, listing):
        check_headers(route.calls.last.request, body=False)
        assert route.calls.last.request.method == "GET"


STALE = {"error": {"code": 40011, "statusCode": 400, "message": "Stale ring state"}}
NEXT_PAGE = {"Link": '<./channels?by=id&cursor=2>; rel="next"'}


async def test_a_channel_listing_whose_pages_went_stale_starts_again(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Ably's channel enumeration may go stale between pages (40011, reference A.8: restart it); the listing is asked
    for again from the first page, and only what that pass gives is kept ("gone" was listed before it closed)."""
    listing = respx_mock.get(f"{BASE}/channels").mock(
        side_effect=[
            httpx.Response(200, json=["a", "gone"], headers=NEXT_PAGE),
            httpx.Response(400, json=STALE),
            httpx.Response(200, json=["a", "b"], headers=NEXT_PAGE),
            httpx.Response(200, json=["b", "c"]),  # a page may repeat a channel: listed once
        ]
    )
    assert list(await make_relay(URL).channels()) == ["a", "b", "c"]
    assert [dict(call.request.url.params) for call in listing.calls] == [
        {"by": "id", "limit": "1000"},
        {"by": "id", "cursor": "2"},
        {"by": "id", "limit": "1000"},
        {"by": "id", "cursor": "2"},
    ]


async def test_a_listing_that_keeps_going_stale_fails_with_ably_s_error(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    first, stale = httpx.Response(200, json=["a"], headers=NEXT_PAGE), httpx.Response(400, json=STALE)
    listing = respx_mock.get(f"{BASE}/channels").mock(side_effect=[first, stale] * 3)
    with pytest.raises(RelayError, match="Stale ring state") as raised:
        await make_relay(URL).channels()
    assert (raised.value.code, listing.call_count) == (40011, 6)  # the first pass and two restarts


async def test_a_stale_error_on_the_first_page_is_not_retried(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    listing = respx_mock.get(f"{BASE}/channels").respond(400, json=STALE)
    with pytest.raises(RelayError):
        await make_relay(URL).channels()
    assert listing.call_count == 1


@pytest.mark.parametrize(
    "link",
    [
        "<https://collector.example/collect?cursor=2>",
        "<http://rest.ably.io/channels?by=id&cursor=2>",  # the same host, without TLS
        "<https://rest.ably.io:8443/channels?by=id&cursor=2>",
        "<//collector.example/channels>",
    ],
)
async def test_a_next_page_at_another_origin_is_not_followed_with_the_key(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, link: str
) -> None:
    """The next page's request carries the API key: an answer (of a proxy in the middle, say) linking elsewhere would
    have been followed, key and all. It is an answer Ably never gives: a 502, and nothing sent there."""
    respx_mock.get(f"{BASE}/channels").respond(200, json=["a"], headers={"Link": f'{link}; rel="next"'})
    elsewhere = respx_mock.route().respond(200, json=["stolen"])  # whatever else would be asked
    with pytest.raises(ProtocolError) as raised:
        await make_relay(URL).channels()
    assert raised.value.http_status == 502
    assert "answered 200 with a next page at another origin" in str(raised.value)
    assert not elsewhere.called
    assert KEY_SECRET not in str(raised.value)


async def test_paginated_answers_are_followed_to_the_last_page(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Ably pages a channel list and a presence set (reference A.6, A.8) with RFC 5988 links relative to the request's
    path; every page is fetched, with the same authentication, and joined."""
    listing = respx_mock.get(f"{BASE}/channels").mock(
        side_effect=[
            httpx.Response(200, json=["a", "b"], headers={"Link": '<./channels?by=id&cursor=2>; rel="next"'}),
            httpx.Response(
                200,
                json=[{"channelId": "c"}],
                # an absolute link to the same origin, its port written out, is as good as a relative one
                headers={"Link": f'<./channels?by=id>; rel="first", <{BASE}:443/channels?by=id&cursor=3>; rel="next"'},
            ),
            httpx.Response(200, json=["d"], headers={"Link": '<./channels?by=id>; rel="first"'}),
        ]
    )
    members = respx_mock.get(f"{BASE}/channels/presence-room/presence").mock(
        side_effect=[
            httpx.Response(200, json=[{"clientId": "ann"}], headers={"Link": '<./presence?cursor=x>; rel="next"'}),
            httpx.Response(200, json=[{"clientId": "ben"}, {"clientId": "ann", "connectionId": "second"}]),
        ]
    )
    relay = make_relay(URL)
    assert list(await relay.channels()) == ["a", "b", "c", "d"]
    assert [dict(call.request.url.params) for call in listing.calls] == [
        {"by": "id", "limit": "1000"},
        {"by": "id", "cursor": "2"},
        {"by": "id", "cursor": "3"},
    ]
    # ann on two connections, one on each page, is one user, as Pusher lists users
    assert [m.user_id for m in await relay.presence_members("presence-room")] == ["ann", "ben"]
    assert [dict(call.request.url.params) for call in members.calls] == [{"limit": "1000"}, {"cursor": "x"}]
    for call in [*listing.calls, *members.calls]:
        check_headers(call.request, body=False)


# -- unsupported operations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "args"),
    [
        ("send_to_user", ("alice", "e", {"x": 1})),
        ("terminate_user_connections", ("alice",)),
        ("authenticate_user", ("123.456", {"id": "alice"})),
    ],
)
async def test_unsupported_operations_name_provider_and_operation(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, operation: str, args: tuple[Any, ...]
) -> None:
    relay = make_relay(URL)
    with pytest.raises(UnsupportedCapability) as raised:
        await getattr(relay, operation)(*args)
    assert (raised.value.provider, raised.value.operation) == ("Ably", operation)
    assert str(raised.value).startswith(f"Ably does not support {operation}")
    assert not respx_mock.calls, "never sent, never a silent no-op"


@pytest.mark.parametrize(
    "publish",
    [
        lambda relay: relay.publish("private-encrypted-card", "e", {"pan": "4111"}),
        lambda relay: relay.publish(["orders", "private-encrypted-card"], "e", {"pan": "4111"}),
        lambda relay: relay.publish_batch([Event("orders", "e", 1), Event("private-encrypted-card", "e", {"pan": 1})]),
    ],
    ids=["one-channel", "among-channels", "in-a-batch"],
)
async def test_encrypted_channels_are_refused_not_published_in_clear(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, publish: Callable[[Any], Awaitable[object]]
) -> None:
    """Ably has no end-to-end encrypted channels: a publish to a private-encrypted- channel is refused before anything
    is sent (it went out in clear), naming the channel; private- channels publish as before."""
    relay = make_relay(URL)
    with pytest.raises(UnsupportedCapability) as raised:
        await publish(relay)
    assert raised.value.provider == "Ably" and raised.value.operation == "end-to-end encrypted channels"
    assert "'private-encrypted-card' would be published in clear" in str(raised.value)
    assert not respx_mock.calls
    respx_mock.post(f"{BASE}/channels/private-card/messages").respond(201, json={"messageId": "m", "channel": "c"})
    assert (await relay.publish("private-card", "e", {"pan": "4111"})).channels == ("private-card",)


# -- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, 40000, ProtocolError),
        (400, 40009, ProtocolError),
        (401, 40101, AuthenticationError),
        (401, 40160, PermissionDenied),  # capability denied: the key is right, Ably answers 401 all the same
        (403, 40300, PermissionDenied),
        (404, 40400, NotFound),
        (413, 40009, PayloadTooLarge),
        (429, 42910, RateLimited),
        (500, 50000, ProviderError),
        (502, 50002, ProviderError),
        (503, 50003, ProviderError),
    ],
)
async def test_error_status_mapping(
    make_relay: MakeRelay,
    respx_mock: respx.MockRouter,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: int,
    error_class: type[RelayError],
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"error": {"code": code, "statusCode": status, "message": f"problem {code}"}}
    route = respx_mock.post(f"{BASE}/channels/orders/messages").respond(status, json=body)
    relay = make_relay(URL)
    with pytest.raises(error_class) as raised:
        await relay.publish("orders", "e", "x")
    error = raised.value
    assert type(error) is error_class
    assert (error.http_status, error.code) == (status, code)
    assert f"Ably answered {status}: problem {code}" in str(error)
    retried = status in (429, 500, 502, 503)  # an Ably publish carries its id, so it is idempotent
    assert route.call_count == (3 if retried else 1)
    if retried:
        assert len({call.request.content for call in route.calls}) == 1, "retries reuse the message id"
    for text in (str(error), repr(error), caplog.text, repr(relay.client)):
        assert KEY_SECRET not in text and BASIC.split()[1] not in text


async def test_retry_after_and_recovery(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/channels/lobby").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "0.2"}, json={"error": {"code": 42910, "message": "slow"}}),
            httpx.Response(500, text="oops"),
            httpx.Response(200, json={"channelId": "lobby", "status": {"isActive": True}}),
        ]
    )
    relay = make_relay(URL)
    started = time.monotonic()
    assert (await relay.channel("lobby")).occupied
    assert time.monotonic() - started >= 0.2
    assert route.call_count == 3


async def test_rate_limited_carries_retry_after(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/channels/lobby").respond(429, headers={"Retry-After": "0"}, json={"error": {"code": 42911}})
    relay = make_relay(URL)
    with pytest.raises(RateLimited) as raised:
        await relay.channel("lobby")
    assert (raised.value.retry_after, raised.value.code, raised.value.http_status) == (0.0, 42911, 429)


async def test_network_errors(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/channels/orders/messages").mock(side_effect=httpx.ConnectError("refused"))
    relay = make_relay(URL)
    with pytest.raises(TransportError, match=r"could not reach rest\.ably\.io:443: ConnectError"):
        await relay.publish("orders", "e", "x")
    assert route.call_count == 3
    route.side_effect = [httpx.ReadTimeout("slow"), httpx.Response(201, json={})]
    await relay.publish("orders", "e", "x")
    assert route.call_count == 5, "an Ably publish is idempotent, so a timeout is retried"


# -- token requests -------------------------------------------------------------------------------------------------


def ably_oracle_accepts(token_request: dict[str, Any]) -> bool:
    """ably-python's own TokenRequest.sign_request recomputes the same mac."""
    request = TokenRequest.from_json(dict(token_request))
    supplied = request.mac
    request.sign_request(KEY_SECRET)
    return bool(request.mac == supplied)


@pytest.mark.parametrize(
    ("channel", "user", "client_events", "operations"),
    [
        # Pusher lets a subscriber send only client-* events, and only where the app enables them (off by default);
        # an Ably capability cannot restrict names, so "publish" would let it send any event as if from the server.
        ("private-orders", None, False, ["subscribe"]),
        ("private-orders", {"id": "alice"}, False, ["subscribe"]),
        ("private-orders", {"id": "alice"}, True, ["publish", "subscribe"]),
        ("private-encrypted-vault", None, False, ["subscribe"]),
        ("private-encrypted-vault", None, True, ["subscribe"]),  # pusher-js refuses client events there
        ("presence-room", {"id": "alice", "info": {"name": "Alice"}}, False, ["presence", "subscribe"]),
        ("presence-room", "bob", False, ["presence", "subscribe"]),
        ("presence-room", "bob", True, ["presence", "publish", "subscribe"]),
        ("news", None, False, ["subscribe"]),
        ("news", None, True, ["subscribe"]),  # no client events on public channels
    ],
)
async def test_authorize_channel_returns_a_token_request(
    make_relay: MakeRelay, channel: str, user: Any, client_events: bool, operations: list[str]
) -> None:
    relay = make_relay(f"{URL}?client_events=true" if client_events else URL)
    token_request = await relay.authorize_channel("123.456", channel, user)
    assert set(token_request) == {"keyName", "timestamp", "nonce", "capability", "mac"} | (
        {"clientId"} if user is not None else set()
    )
    assert token_request["keyName"] == KEY_NAME
    assert abs(token_request["timestamp"] - time.time() * 1000) < 5000
    assert len(token_request["nonce"]) >= 16
    assert parse_capability(token_request["capability"]) == {channel: operations}
    assert token_request["capability"] == json.dumps({channel: operations}, separators=(",", ":"))
    if user is not None:
        assert token_request["clientId"] == (user if isinstance(user, str) else user["id"])
    verify_token_request(token_request, KEY_NAME, KEY_SECRET, now_ms=int(time.time() * 1000))
    assert ably_oracle_accepts(token_request)
    # Tampering with the scope breaks both verifiers.
    widened = {**token_request, "capability": '{"*":["*"]}'}
    with pytest.raises(InvalidSignature):
        verify_token_request(widened, KEY_NAME, KEY_SECRET, now_ms=int(time.time() * 1000))
    assert not ably_oracle_accepts(widened)


async def test_token_requests_use_fresh_nonces(make_relay: MakeRelay) -> None:
    relay = make_relay(URL)
    first = await relay.authorize_channel("1.1", "private-a")
    second = await relay.authorize_channel("1.1", "private-a")
    assert first["nonce"] != second["nonce"] and first["mac"] != second["mac"]


async def test_presence_without_user_is_refused(make_relay: MakeRelay) -> None:
    relay = make_relay(URL)
    with pytest.raises(ProtocolError, match="presence channel: authorize it with a user"):
        await relay.authorize_channel("123.456", "presence-room")


async def test_authorize_channels_signs_one_token_for_every_channel_with_its_kind_s_operations(
    make_relay: MakeRelay,
) -> None:
    relay = make_relay(f"{URL}?client_events=true")
    names = ["news", "private-orders", "presence-room", "news"]
    token_request = await relay.authorize_channels(names, {"id": "alice", "info": {"name": "Alice"}})
    assert parse_capability(token_request["capability"]) == {
        "news": ["subscribe"],
        "private-orders": ["publish", "subscribe"],
        "presence-room": ["presence", "publish", "subscribe"],
    }
    assert len(json.loads(token_request["capability"])) == 3  # "news", named twice, is asked for once
    assert token_request["clientId"] == "alice"
    verify_token_request(token_request, KEY_NAME, KEY_SECRET, now_ms=int(time.time() * 1000))
    assert ably_oracle_accepts(token_request)
    one = await relay.authorize_channels(["private-orders"])
    assert "clientId" not in one and parse_capability(one["capability"]) == {"private-orders": ["publish", "subscribe"]}
    generated = await relay.authorize_channels(name for name in ("private-orders",))  # any iterable, as publish()
    assert parse_capability(generated["capability"]) == parse_capability(one["capability"])


@pytest.mark.parametrize(
    ("channels", "user", "error", "message"),
    [
        ([], None, ProtocolError, "a token is asked for 1 to 100 channels, not 0"),
        ([f"c-{n}" for n in range(101)], None, ProtocolError, "a token is asked for 1 to 100 channels, not 101"),
        ("private-orders", None, ProtocolError, "channels must be a list of channel names, not str"),
        (None, None, ProtocolError, "channels must be a list of channel names, not NoneType"),
        (["news", ":orders"], None, InvalidChannelName, "':orders': must not start with ':'"),
        (["news", "chat:*"], None, InvalidChannelName, "in a token's capability '\\*' is a wildcard"),
        (["news", "presence-room"], None, ProtocolError, "'presence-room' is a presence channel: authorize it"),
        (["news"], {"id": "*"}, ProtocolError, "user id '\\*' cannot be authorized on Ably"),
    ],
    ids=["none", "over-100", "a-str", "None", "bad-name", "wildcard", "presence-without-user", "wildcard-user"],
)
async def test_authorize_channels_refuses_what_it_cannot_sign(
    make_relay: MakeRelay, channels: Any, user: Any, error: type[Exception], message: str
) -> None:
    relay = make_relay(URL)
    with pytest.raises(error, match=message):
        await relay.authorize_channels(channels, user)


@pytest.mark.parametrize("url", ["pusher://k:s@eu/apps/1", "emulator://k:s@127.0.0.1:6001/apps/1", "memory://tokens"])
async def test_authorize_channels_is_ably_s_alone_and_says_what_to_use(make_relay: MakeRelay, url: str) -> None:
    relay = make_relay(url)
    with pytest.raises(UnsupportedCapability) as raised:
        await relay.authorize_channels(["private-orders"], {"id": "alice"})
    assert raised.value.operation == "authorize_channels"
    assert str(raised.value).endswith(
        "pusher-js authorizes each channel on its own: use authorize_channel (channel_name)"
    )


@pytest.mark.parametrize("client_events", [False, True], ids=["default", "client_events"])
@pytest.mark.parametrize(("channel", "user"), [("private-order-42", None), ("presence-kitchen", User("cook-1"))])
async def test_a_channel_token_publishes_only_with_client_events(
    start_emulator: StartEmulator, channel: str, user: User | None, client_events: bool
) -> None:
    """A customer authorized for ``private-order-42`` must not publish a fake ``order-ready`` that the kitchen,
    subscribed to the same channel, takes for the server's. ably-python, holding the token that ``authorize_channel``'s
    TokenRequest is exchanged for, subscribes (and enters presence) but its publish is refused with 40160 and reaches
    nobody; the server's publish still arrives. With ``?client_events=true`` its publish arrives, as a Pusher client
    event would where the app enables them."""
    running = await start_emulator()
    query = "?tls=false&client_events=true" if client_events else "?tls=false"
    relay = AsyncRelay(f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}{query}")
    kitchen = await ably_wire(running)  # the API key: a back office's connection, which sees everything published
    customer: Any = None
    try:
        token_request = relay.authorize_channel("1.1", channel, user)  # signing only: no request
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as http:
            exchanged = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
        assert exchanged.status_code == 200, exchanged.text
        await kitchen.attach(channel)

        customer = AblyRealtime(token=exchanged.json()["token"], endpoint=f"127.0.0.1:{running.port}", tls=False)
        received: asyncio.Queue[Any] = asyncio.Queue()
        order = customer.channels.get(channel)
        await order.subscribe(received.put_nowait)
        if user is not None:
            await order.presence.enter({"station": "grill"})
            assert (await kitchen.expect(PRESENCE))["presence"][0]["clientId"] == "cook-1"

        if client_events:
            await order.publish("order-ready", {"order": 42})
            forged = (await kitchen.expect(MESSAGE))["messages"][0]
            assert (forged["name"], forged["data"]) == ("order-ready", '{"order": 42}')
        else:
            with pytest.raises(AblyException) as refused:
                await order.publish("order-ready", {"order": 42})
            assert (refused.value.code, refused.value.status_code) == (40160, 401)
            assert f"Unable to publish to {channel!r}: not permitted by the capability" in refused.value.message
            assert str(customer.connection.state).endswith("CONNECTED")  # a refused publish, not a failed connection

        await relay.publish(channel, "order-status", {"status": "cooking"})
        # Messages arrive in order: without client events the server's is the first the kitchen gets.
        assert (await kitchen.expect(MESSAGE))["messages"][0]["name"] == "order-status"
        names = [(await asyncio.wait_for(received.get(), 3)).name for _ in range(2 if client_events else 1)]
        assert names == (["order-ready", "order-status"] if client_events else ["order-status"])
    finally:
        if customer is not None:
            await customer.close()
        await kitchen.ws.close()
        await relay.aclose()


@pytest.mark.parametrize(
    ("channel", "user", "operations"),
    [
        ("private-order-42", None, ["history", "subscribe"]),
        ("presence-kitchen", User("cook-1"), ["history", "presence", "subscribe"]),
        ("news", None, ["history", "subscribe"]),
    ],
)
def test_history_option_adds_the_history_operation(channel: str, user: User | None, operations: list[str]) -> None:
    adapter = AblyAdapter(parse_url(f"{URL}?history=true"))
    token_request = adapter.authorize_channel("1.1", channel, user)
    assert parse_capability(token_request["capability"]) == {channel: operations}


@pytest.mark.parametrize("history", [False, True], ids=["default", "history"])
async def test_a_channel_token_reads_history_only_with_the_option(start_emulator: StartEmulator, history: bool) -> None:
    """ably-python holding a channel token from ``authorize_channel``: ``history()`` gets what the server published
    before with ``?history=true``, and is refused with 40160 without it (as Ably refuses it), while the token's
    live subscription works either way."""
    running = await start_emulator()
    query = "?tls=false&history=true" if history else "?tls=false"
    relay = AsyncRelay(f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}{query}")
    try:
        await relay.publish("private-order-42", "order-status", {"status": "cooking"})
        token_request = relay.authorize_channel("1.1", "private-order-42")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as http:
            exchanged = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
            assert exchanged.status_code == 200, exchanged.text
            bearer = {"Authorization": "Bearer " + base64.b64encode(exchanged.json()["token"].encode()).decode()}
            read = await http.get("/channels/private-order-42/messages", headers=bearer)
        if history:
            assert read.status_code == 200 and [m["name"] for m in read.json()] == ["order-status"]
        else:
            assert read.status_code == 401 and read.json()["error"]["code"] == 40160
    finally:
        await relay.aclose()


@pytest.mark.parametrize("occupancy", [False, True], ids=["default", "occupancy"])
async def test_a_channel_token_has_occupancy_events_only_with_the_option(
    start_emulator: StartEmulator, occupancy: bool
) -> None:
    """``?occupancy=true`` grants ``channel-metadata``: a page attaching with the occupancy param gets its viewer
    count; without it the attach is refused with 40160, as Ably refuses it."""
    running = await start_emulator()
    query = "?tls=false&occupancy=true" if occupancy else "?tls=false"
    relay = AsyncRelay(f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}{query}")
    try:
        token_request = relay.authorize_channel("1.1", "match-7")
        assert ("channel-metadata" in parse_capability(token_request["capability"])["match-7"]) is occupancy
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}") as http:
            exchanged = await http.post(f"/keys/{token_request['keyName']}/requestToken", json=token_request)
        page = await ably_wire(running, f"accessToken={exchanged.json()['token']}")
        await page.send({"action": 10, "channel": "match-7", "params": {"occupancy": "metrics.connections"}})
        answer = await page.recv()
        if occupancy:
            assert answer["action"] == 11 and answer["params"] == {"occupancy": "metrics.connections"}
            event = (await page.expect(MESSAGE))["messages"][0]
            assert (event["name"], json.loads(event["data"])) == ("[meta]occupancy", {"metrics": {"connections": 1}})
        else:
            assert (answer["action"], answer["error"]["code"]) == (9, 40160)
        await page.ws.close()
    finally:
        await relay.aclose()


def test_fixed_clock_token_request() -> None:
    adapter = AblyAdapter(parse_url(URL), clock=lambda: 1_700_000_000.25)
    token_request = adapter.authorize_channel("1.1", "private-orders", None)
    assert token_request["timestamp"] == 1_700_000_000_250
    verify_token_request(token_request, KEY_NAME, KEY_SECRET, now_ms=1_700_000_060_000)
    with pytest.raises(AuthenticationError, match="not current"):
        verify_token_request(token_request, KEY_NAME, KEY_SECRET, now_ms=1_700_000_000_250 + 121_000)


# -- webhooks -----------------------------------------------------------------------------------------------------


def webhook_body(now_ms: int) -> bytes:
    """A batched webhook of Ably's, its items stamped ``now_ms`` and just after (Ably refuses stale ones)."""
    return json.dumps(
        {
            "items": [
                {
                    "webhookId": "w1",
                    "source": "channel.lifecycle",
                    "timestamp": now_ms + 1,
                    "name": "channel.opened",
                    "data": {"channelId": "room", "name": "[meta]channel.lifecycle", "status": {"isActive": True}},
                },
                {
                    "webhookId": "w1",
                    "source": "channel.presence",
                    "timestamp": now_ms + 2,
                    "name": "presence.message",
                    "data": {
                        "channelId": "presence-room",
                        "site": "eu-west-1-A",
                        "presence": [
                            {"clientId": "alice", "action": 2, "timestamp": now_ms + 10},
                            {"clientId": "carol", "action": 1, "timestamp": now_ms + 11},
                            {"clientId": "bob", "action": 3, "timestamp": now_ms + 12},
                        ],
                    },
                },
                {
                    "webhookId": "w1",
                    "source": "channel.message",
                    "timestamp": now_ms + 3,
                    "name": "channel.message",
                    "data": {
                        "channelId": "room",
                        "site": "eu-west-1-A",
                        "messages": [
                            {"id": "m:0", "clientId": "alice", "name": "said", "data": "hi", "timestamp": now_ms + 20},
                            {"id": "m:1", "name": "json", "data": '{"a":1}', "encoding": "json"},
                        ],
                    },
                },
                {
                    "webhookId": "w1",
                    "source": "channel.lifecycle",
                    "timestamp": now_ms + 4,
                    "name": "channel.closed",
                    "data": {"channelId": "room"},
                },
            ]
        }
    ).encode()


# For refusals found before the timestamp is read (signature, key, shape): stamped at collection
WEBHOOK_BODY = webhook_body(int(time.time() * 1000))


def ably_signature(body: bytes, secret: str = KEY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def test_verify_ably_webhook(make_relay: MakeRelay) -> None:
    relay = make_relay(URL)
    now_ms = int(time.time() * 1000)
    body = webhook_body(now_ms)
    headers = {"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(body), "X-Ably-Version": "1.2"}
    events = await relay.verify_webhook(headers, body)
    assert events == [
        WebhookEvent("channel_occupied", "room", now_ms + 1),
        WebhookEvent("member_added", "presence-room", now_ms + 10, user_id="alice"),
        WebhookEvent("member_removed", "presence-room", now_ms + 12, user_id="bob"),
        WebhookEvent("message", "room", now_ms + 20, user_id="alice", event="said", data="hi"),
        WebhookEvent("message", "room", now_ms + 3, event="json", data='{"a":1}'),
        WebhookEvent("channel_vacated", "room", now_ms + 4),
    ]
    lowered = {name.lower(): value for name, value in headers.items()}
    assert await relay.verify_webhook(lowered, body) == events
    # Ably's docs say the header carries "the keyId"; verifiers in the wild see the key name: either is this key
    assert await relay.verify_webhook({**lowered, "x-ably-key": KEY_NAME.partition(".")[2]}, body) == events


@pytest.mark.parametrize(
    ("headers", "body", "error_class"),
    [
        (
            {"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(WEBHOOK_BODY, "other")},
            WEBHOOK_BODY,
            InvalidSignature,
        ),
        (
            {"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(WEBHOOK_BODY)},
            WEBHOOK_BODY + b" ",
            InvalidSignature,
        ),
        ({"X-Ably-Key": KEY_NAME}, WEBHOOK_BODY, InvalidSignature),
        ({"X-Ably-Key": "appid.other", "X-Ably-Signature": ably_signature(WEBHOOK_BODY)}, WEBHOOK_BODY, UnknownKey),
        ({"X-Ably-Signature": ably_signature(WEBHOOK_BODY)}, WEBHOOK_BODY, UnknownKey),
        ({"X-Ably-Key": "", "X-Ably-Signature": ably_signature(WEBHOOK_BODY)}, WEBHOOK_BODY, UnknownKey),
        ({"X-Ably-Key": "other", "X-Ably-Signature": ably_signature(WEBHOOK_BODY)}, WEBHOOK_BODY, UnknownKey),
        ({"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(b'{"x":1}')}, b'{"x":1}', ProtocolError),
        *(
            ({"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(body)}, body, ProtocolError)
            for body in (
                b'{"items":["x"]}',
                b'{"items":[{"name":"channel.message","data":{"messages":[1]}}]}',
                b'{"items":[{"name":"presence.message","data":{"presence":[{"action":"two"}]},"timestamp":"t"}]}',
            )
        ),
    ],
)
async def test_bad_ably_webhooks(
    make_relay: MakeRelay, headers: dict[str, str], body: bytes, error_class: type[RelayError]
) -> None:
    relay = make_relay(URL)
    with pytest.raises(error_class) as raised:
        await relay.verify_webhook(headers, body)
    assert KEY_SECRET not in str(raised.value)


def _signed_message_webhook(*messages: tuple[str, object]) -> tuple[dict[str, str], bytes]:
    now = int(time.time() * 1000)
    item = {
        "name": "channel.message",
        "timestamp": now,
        "data": {
            "channelId": "c",
            "messages": [
                {"name": "e", "data": data, "encoding": encoding, "timestamp": now} for data, encoding in messages
            ],
        },
    }
    body = json.dumps({"items": [item]}).encode()
    return {"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(body)}, body


CIPHERTEXT = bytes(range(32))


@pytest.mark.parametrize(
    ("data", "encoding", "decoded", "left"),
    [
        ("AP8=", "base64", b"\x00\xff", None),  # binary data, as Ably's JSON carries it
        (base64.b64encode("é".encode()).decode(), "utf-8/base64", "é", None),
        (base64.b64encode(b'{"a":1}').decode(), "json/utf-8/base64", '{"a":1}', None),  # JSON text, as Pusher's data
        ('{"a":1}', "json", '{"a":1}', None),
        ("plain", "", "plain", None),
        # relay holds no cipher key: the decoding stops there, and the ciphertext is what is left, the steps on it said
        (
            base64.b64encode(CIPHERTEXT).decode(),
            "utf-8/cipher+aes-128-cbc/base64",
            CIPHERTEXT,
            "utf-8/cipher+aes-128-cbc",
        ),
        ("delta", "vcdiff", "delta", "vcdiff"),
    ],
)
async def test_ably_webhook_data_is_decoded_as_the_sdks_decode_it(
    make_relay: MakeRelay, data: str, encoding: str, decoded: object, left: str | None
) -> None:
    [event] = await make_relay(URL).verify_webhook(*_signed_message_webhook((data, encoding)))
    assert (event.data, event.encoding) == (decoded, left)


@pytest.mark.parametrize(
    ("data", "encoding", "kept", "left"),
    [
        ("not base64!", "base64", "not base64!", "base64"),
        ("//4=", "utf-8/base64", b"\xff\xfe", "utf-8"),  # base64, of bytes that are not UTF-8
        ("{", "json", "{", None),  # JSON text is not parsed: what a Pusher webhook's data would be
    ],
)
async def test_ably_webhook_data_its_encoding_does_not_describe_is_kept_as_it_came(
    make_relay: MakeRelay, data: str, encoding: str, kept: object, left: str | None
) -> None:
    """One odd message of a batch is delivered as far as it decodes, the steps it did not follow said; the rest of
    the batch decodes."""
    events = await make_relay(URL).verify_webhook(*_signed_message_webhook((data, encoding), ("AP8=", "base64")))
    assert [(event.data, event.encoding) for event in events] == [(kept, left), (b"\x00\xff", None)]


async def test_ably_webhook_encoding_that_is_not_a_string_is_refused(make_relay: MakeRelay) -> None:
    with pytest.raises(ProtocolError) as raised:
        await make_relay(URL).verify_webhook(*_signed_message_webhook(("x", 7)))
    assert str(raised.value) == "Ably webhook items[0] message has an encoding that is not a string: 7"


# -- Pusher and Ably together -------------------------------------------------------------------------------------


async def test_mirror_pusher_and_ably(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    """A migration: every publish goes to both; what Ably cannot do is reported per provider, never dropped."""
    pusher_key, pusher_secret = "pkey", "pusher-Secret-1"
    pusher_url = f"pusher://{pusher_key}:{pusher_secret}@eu/apps/9"
    pusher = respx_mock.post("https://api-eu.pusher.com/apps/9/events").respond(200, json={})
    ably = respx_mock.post(f"{BASE}/channels/orders/messages").respond(201, json={})
    relay = make_relay(f"mirror:{pusher_url}|{URL}")
    result = await relay.publish("orders", "e", {"a": 1})
    assert result == PublishResult(("orders",)), "mirror returns the primary's result when all succeed"
    published = b'{"name":"e","channels":["orders"],"data":"{\\"a\\":1}"}'
    check_sent(pusher, pusher_key, pusher_secret, [published])
    [ably_call] = ably.calls
    check_headers(ably_call.request)
    [message] = json.loads(ably_call.request.content)
    assert message == {"name": "e", "data": '{"a":1}', "id": message["id"], "encoding": "json"}
    message_id_base(message["id"])

    with pytest.raises(MirrorError) as raised:
        await relay.send_to_user("alice", "e", "x")
    error = raised.value
    assert list(error.results) == ["pusher://pkey:***@api-eu.pusher.com/apps/9"]
    [(label, failure)] = error.errors.items()
    assert label == f"ably://{KEY_NAME}:***@rest.ably.io"
    assert isinstance(failure, UnsupportedCapability) and failure.operation == "send_to_user"
    assert "1 of 2 providers failed" in str(error) and "Ably does not support send_to_user" in str(error)
    assert pusher_secret not in str(error) and KEY_SECRET not in str(error)
    to_user = b'{"name":"e","channels":["#server-to-user-alice"],"data":"x"}'
    check_sent(pusher, pusher_key, pusher_secret, [published, to_user])
    assert ably.call_count == 1, "Ably was asked nothing it cannot do"

    # Webhooks from either provider verify; the auth body is the primary's (Pusher).
    body = webhook_body(int(time.time() * 1000))
    assert (await relay.verify_webhook({"X-Ably-Key": KEY_NAME, "X-Ably-Signature": ably_signature(body)}, body))[
        0
    ].kind == "channel_occupied"
    official = pusher_http.Pusher(app_id="9", key=pusher_key, secret=pusher_secret)
    assert await relay.authorize_channel("1.1", "private-a") == official.authenticate(
        channel="private-a", socket_id="1.1"
    )


async def test_mirror_with_a_pusher_socket_id_still_reaches_ably(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """A migration's publish on behalf of a pusher-js client: Pusher leaves that socket out; Ably refuses the socket
    id as a connectionKey (40006) and gets the message again without it, so its subscribers are not left out."""
    pusher = respx_mock.post("https://api-eu.pusher.com/apps/9/events").respond(200, json={})
    ably = respx_mock.post(f"{BASE}/channels/orders/messages").mock(
        side_effect=[httpx.Response(400, json=INVALID_KEY), httpx.Response(201, json={})]
    )
    relay = make_relay(f"mirror:pusher://pkey:pusher-Secret-1@eu/apps/9|{URL}")
    await relay.publish("orders", "e", "x", socket_id="123.456")
    assert json.loads(pusher.calls.last.request.content)["socket_id"] == "123.456"
    assert [json.loads(call.request.content)[0].get("connectionKey") for call in ably.calls] == ["123.456", None]


def test_the_module_level_authorize_channels_uses_the_default_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import relay

    monkeypatch.setenv("RELAY_URL", URL)
    relay.reset_default_client()
    try:
        token_request = relay.authorize_channels(["private-a", "presence-b"], 7)
    finally:
        relay.reset_default_client()
    assert parse_capability(token_request["capability"]) == {
        "private-a": ["subscribe"],
        "presence-b": ["presence", "subscribe"],
    }
    assert token_request["clientId"] == "7"
