"""Fixes from a bug hunt on the library, part 2: ``PUSHER_CLUSTER``, Ably refusing part of a publish, webhooks under
``mirror:`` and as str, ``ably://…?tls=false`` URLs, and inputs or answers that raised errors other than
``RelayError`` (part 1 is ``test_library_hunt_fixes.py``).

Against the real emulator where it can answer; Pusher's and Ably's clouds with respx, asserting the exact requests.
Every test that takes ``make_relay`` runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from libsupport import MakeRelay, Subscribe, Twin

from relay import AsyncRelay, Event, Relay, WebhookEvent
from relay.config import from_env, parse_url
from relay.errors import (
    ConfigError,
    InvalidChannelName,
    InvalidSignature,
    PermissionDenied,
    ProtocolError,
    StaleTimestamp,
    UnknownKey,
)
from relay.testing import signed_webhook
from tests.conftest import RunningEmulator

PUSHER_KEY, PUSHER_SECRET = "app-key", "app-secret"
PUSHER = f"pusher://{PUSHER_KEY}:{PUSHER_SECRET}@eu/apps/1"
PUSHER_BASE = "https://api-eu.pusher.com/apps/1"
ABLY_KEY, ABLY_SECRET = "appid.keyid", "ably-secret"
ABLY = f"ably://{ABLY_KEY}:{ABLY_SECRET}"
ABLY_BASE = "https://rest.ably.io"
DENIED = {"code": 40160, "statusCode": 401, "message": "Unable to perform channel operation (permission denied)"}
DENIED_TEXT = (
    "Unable to perform channel operation (permission denied), code 40160: the API key's capabilities do not allow it "
    "there: Ably dashboard → API Keys"
)


def published_on(channel: str) -> dict[str, Any]:
    return {"channel": channel, "messageId": "srv:0", "serials": ["s"]}


def batch_result(*results: dict[str, Any]) -> dict[str, Any]:
    failures = sum(1 for result in results if "error" in result)
    return {"successCount": len(results) - failures, "failureCount": failures, "results": list(results)}


async def refused_by_ably(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, send: Callable[[Twin], Awaitable[object]], *answers: object
) -> tuple[PermissionDenied, respx.Route]:
    """``send`` through a relay of :data:`ABLY` whose ``POST /messages`` answers 201 with ``answers`` (one: to every
    call; several: one per call, in turn): the PermissionDenied it raised, and the route."""
    route = respx_mock.post(f"{ABLY_BASE}/messages")
    if len(answers) == 1:
        route.respond(201, json=answers[0])
    else:
        route.mock(side_effect=[httpx.Response(201, json=answer) for answer in answers])
    relay = make_relay(ABLY)
    with pytest.raises(PermissionDenied) as raised:
        await send(relay)
    return raised.value, route


# -- 6. PUSHER_CLUSTER ------------------------------------------------------------------------------------------------

CREDENTIALS = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


@pytest.mark.parametrize("cluster", ["api-eu.pusher.com", "https://eu", "eu/x", "e u", "eu:443", "-eu"])
def test_pusher_cluster_is_a_short_name(cluster: str) -> None:
    """A host or URL in PUSHER_CLUSTER made hosts such as api-https://eu.pusher.com, failing at the first request as a
    network error."""
    with pytest.raises(ConfigError) as raised:
        from_env({**CREDENTIALS, "PUSHER_CLUSTER": cluster})
    assert str(raised.value) == (
        f"PUSHER_CLUSTER must be a cluster's short name such as eu, mt1, us2 or ap3, got {cluster!r} "
        "(a server's host goes in PUSHER_HOST, with PUSHER_PORT and PUSHER_SCHEME)"
    )
    for name, base_url in (
        ("eu", "https://api-eu.pusher.com"),
        ("EU", "https://api-eu.pusher.com"),
        ("", "https://api-mt1.pusher.com"),
    ):
        assert from_env({**CREDENTIALS, "PUSHER_CLUSTER": name}).base_url == base_url


# -- 7. Ably refusing part of a publish ------------------------------------------------------------------------------


async def test_ably_refusing_some_channels_says_which_and_counts_the_others(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Ably answers a multi-channel publish channel by channel. Refusing one (40160, with status 401) was an
    AuthenticationError telling to check the key and secret, with published None: a caller sending again delivered
    the published channels twice."""
    answer = batch_result(published_on("orders"), {"channel": "audit", "error": DENIED}, published_on("kitchen"))
    error, route = await refused_by_ably(
        make_relay,
        respx_mock,
        lambda relay: relay.publish(["orders", "audit", "kitchen"], "order-ready", {"id": 42}),
        [answer],
    )
    assert str(error) == (
        f"Ably refused the publish on 1 of 3 channels: audit ({DENIED_TEXT}); the rest (2) was published: do not "
        "send it again"
    )
    assert (error.published, error.http_status, error.code, error.answered_by) == (2, 401, 40160, "Ably")
    assert route.call_count == 1
    [spec] = json.loads(route.calls.last.request.content)
    assert spec["channels"] == ["orders", "audit", "kitchen"]
    assert [message["name"] for message in spec["messages"]] == ["order-ready"]


async def test_ably_refusing_an_event_of_a_batch_names_it(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    answers = [batch_result(published_on("a")), batch_result({"channel": "b", "error": DENIED})]
    error, route = await refused_by_ably(
        make_relay, respx_mock, lambda relay: relay.publish_batch([Event("a", "e", 1), Event("b", "e", 2)]), answers
    )
    assert str(error) == (
        f"Ably refused the publish on 1 of 2 events: batch[1] on b ({DENIED_TEXT}); the rest (1) was published: do "
        "not send it again"
    )
    assert error.published == 1
    assert [spec["channels"] for spec in json.loads(route.calls.last.request.content)] == [["a"], ["b"]]


async def test_ably_refusing_part_of_a_later_call_counts_every_published_channel(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    channels = [f"c{i}" for i in range(150)]
    later = [published_on(channel) for channel in channels[100:]]
    later[10] = {"channel": "c110", "error": DENIED}
    error, route = await refused_by_ably(
        make_relay,
        respx_mock,
        lambda relay: relay.publish(channels, "tick", 1),
        [batch_result(*(published_on(channel) for channel in channels[:100]))],
        [batch_result(*later)],
    )
    assert error.published == 149
    assert str(error) == (
        f"Ably refused the publish on 1 of 50 channels: c110 ({DENIED_TEXT}); the rest (49) was published: do not "
        "send it again; channels 0-99 were already published by the calls before this one (its first call took "
        "100)"
    )
    assert [json.loads(call.request.content)[0]["channels"] for call in route.calls] == [channels[:100], channels[100:]]


async def test_ably_refusing_part_of_a_first_call_says_the_later_calls_were_not_sent(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Ably refused one channel of the first call of 100 and published the rest: the error said "the rest (99) was
    published: do not send it again", and the 50 channels of the call after it, never sent, were named nowhere, so a
    caller sending again only the refused channel lost them."""
    channels = [f"c{i}" for i in range(150)]
    first = [published_on(channel) for channel in channels[:100]]
    first[0] = {"channel": "c0", "error": DENIED}
    error, route = await refused_by_ably(
        make_relay, respx_mock, lambda relay: relay.publish(channels, "tick", 1), [batch_result(*first)]
    )
    assert error.published == 99
    assert str(error) == (
        f"Ably refused the publish on 1 of 100 channels: c0 ({DENIED_TEXT}); the rest (99) was published: do not "
        "send it again; the channels after this call's (1 more call) were not sent: send them too"
    )
    assert route.call_count == 1


# -- 8. webhooks: the provider that sent them, str or bytes ---------------------------------------------------------


def pusher_webhook(
    secret: str = PUSHER_SECRET, *, time_ms: int | None = None, **event: Any
) -> tuple[dict[str, str], bytes]:
    fields = event or {"name": "channel_occupied", "channel": "orders"}
    body = json.dumps({"time_ms": time_ms or int(time.time() * 1000), "events": [fields]}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Pusher-Key": PUSHER_KEY, "X-Pusher-Signature": signature}, body


def ably_webhook(secret: str = ABLY_SECRET, *, item: dict[str, Any] | None = None) -> tuple[dict[str, str], bytes]:
    opened = {"name": "channel.opened", "timestamp": int(time.time() * 1000), "data": {"channelId": "orders"}}
    body = json.dumps({"items": [item or opened]}).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"X-Ably-Key": ABLY_KEY, "X-Ably-Signature": signature}, body


@pytest.mark.parametrize("urls", [(PUSHER, ABLY), (ABLY, PUSHER)], ids=["pusher-first", "ably-first"])
def test_mirror_reports_the_failure_of_the_provider_the_webhook_claims(urls: tuple[str, str]) -> None:
    """An Ably webhook with a bad signature was reported with the Pusher adapter's failure (X-Pusher-Key missing)."""
    client = Relay(f"mirror:{urls[0]}|{urls[1]}")
    with pytest.raises(InvalidSignature, match="X-Ably-Signature does not match"):
        client.verify_webhook(*ably_webhook("wrong-secret"))
    with pytest.raises(InvalidSignature, match="X-Pusher-Signature does not match"):
        client.verify_webhook(*pusher_webhook("wrong-secret"))
    with pytest.raises(StaleTimestamp):
        client.verify_webhook(*pusher_webhook(time_ms=int(time.time() * 1000) - 400_000))
    with pytest.raises(UnknownKey, match="X-Ably-Key is missing or not this key's name"):
        client.verify_webhook({**ably_webhook()[0], "X-Ably-Key": "appid.other"}, ably_webhook()[1])


def test_mirror_of_one_provider_twice_reports_the_one_whose_key_the_webhook_has() -> None:
    other = "pusher://other-key:other-secret@api-us2.pusher.com/apps/2"
    for urls in ((other, PUSHER), (PUSHER, other)):
        with pytest.raises(InvalidSignature):
            Relay(f"mirror:{urls[0]}|{urls[1]}").verify_webhook(*pusher_webhook("wrong-secret"))


@pytest.mark.parametrize(
    ("url", "signed"),
    [(PUSHER, pusher_webhook), (ABLY, ably_webhook), ("memory://hunt-webhooks", None)],
    ids=["pusher", "ably", "memory"],
)
def test_verify_webhook_takes_bytes_or_their_str(url: str, signed: Any) -> None:
    """Pusher took a str body and Ably raised TypeError on one."""
    if signed is None:
        headers, body = pusher_webhook()
        headers["X-Pusher-Key"] = "memory-key"
        headers["X-Pusher-Signature"] = hmac.new(b"memory-secret", body, hashlib.sha256).hexdigest()
    else:
        headers, body = signed()
    client = Relay(url)
    events = client.verify_webhook(headers, body)
    assert [(event.kind, event.channel) for event in events] == [("channel_occupied", "orders")]
    assert client.verify_webhook(headers, body.decode()) == events
    with pytest.raises(ProtocolError, match="a webhook body is the raw bytes \\(or str\\) received, not dict"):
        client.verify_webhook(headers, json.loads(body))


# -- 9. ably://…?tls=false ------------------------------------------------------------------------------------------


async def test_an_ably_url_keeps_tls_false(emulator: RunningEmulator, subscriber: Subscribe) -> None:
    """repr and url() dropped ?tls=false from ably:// URLs (the one `relay emulator` prints): the URL written back
    spoke HTTPS to a plain-HTTP server."""
    url = f"ably://{emulator.app.ably_api_key}@127.0.0.1:{emulator.port}?tls=false"
    config = parse_url(url)
    key_name = emulator.app.ably_api_key.partition(":")[0]
    assert repr(Relay(url)) == f"Relay('ably://{key_name}:***@127.0.0.1:{emulator.port}?tls=false')"
    assert config.url(privacy=False) == url
    assert parse_url(config.url(privacy=False)) == config
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    async with AsyncRelay(config.url(privacy=False)) as written_back:
        await written_back.publish("orders", "order-ready", {"id": 42})
    assert json.loads((await sub.expect("order-ready", "orders"))["data"]) == {"id": 42}


@pytest.mark.parametrize("host", ["", "@rest.ably.io", "@REST.ABLY.IO.", "@main.realtime.ably.net:80"])
def test_an_ably_url_to_ably_s_cloud_refuses_tls_false_before_sending_the_secret(
    respx_mock: respx.MockRouter, host: str
) -> None:
    """ably://KEY:SECRET?tls=false was taken for Ably's cloud: the first publish went to http://rest.ably.io with the
    key in Basic auth, readable on the way, and Ably answered 40103 (Basic auth only over TLS), which the library
    reported as a wrong key or clock. Now the URL is refused, and nothing is sent."""
    message = "names Ably's cloud .*, which takes a key only over TLS \\(Ably error 40103\\) and would have its secret"
    with pytest.raises(ConfigError, match=message):
        Relay(f"ably://appid.keyid:s3cret{host}?tls=false")
    assert not respx_mock.calls
    assert repr(Relay("ably://appid.keyid:s3cret@rest.ably.io")) == "Relay('ably://appid.keyid:***@rest.ably.io')"


# -- 10. errors that were not RelayErrors -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", [5, None, b"presence-"])
@pytest.mark.parametrize("url", [PUSHER, ABLY, "memory://hunt-prefix"], ids=["pusher", "ably", "memory"])
async def test_channels_refuses_a_prefix_that_is_not_a_str(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, url: str, prefix: object
) -> None:
    """channels(5) was an AttributeError on Pusher; Ably sent prefix=5 and memory answered {}."""
    relay = make_relay(url)
    with pytest.raises(InvalidChannelName) as raised:
        await relay.channels(prefix)
    assert str(raised.value) == f"a channel name prefix must be a string, got {prefix!r}"
    assert not respx_mock.calls


@pytest.mark.parametrize(
    ("url", "path", "query", "body", "problem"),
    [
        (
            PUSHER,
            f"{PUSHER_BASE}/channels/lobby",
            lambda relay: relay.channel("lobby"),
            b"[1]",
            "JSON that is not an object",
        ),
        (
            PUSHER,
            f"{PUSHER_BASE}/channels",
            lambda relay: relay.channels(),
            b'{"channels": [1]}',
            'what is not {"channels"',
        ),
        (
            PUSHER,
            f"{PUSHER_BASE}/channels/presence-room/users",
            lambda relay: relay.presence_members("presence-room"),
            b'{"users": [{"name": "no id"}]}',
            'what is not {"users"',
        ),
        (PUSHER, f"{PUSHER_BASE}/channels/lobby", lambda relay: relay.channel("lobby"), b"<html>", "invalid JSON"),
        (
            ABLY,
            f"{ABLY_BASE}/channels/lobby",
            lambda relay: relay.channel("lobby"),
            b"[1]",
            "what is not a ChannelDetails",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/channels",
            lambda relay: relay.channels(),
            b"[1, 2]",
            "what is not a list of channel names",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/channels/presence-room/presence",
            lambda relay: relay.presence_members("presence-room"),
            b'{"clientId": "alice"}',
            "what is not a list of PresenceMessages",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/channels/presence-room/presence",
            lambda relay: relay.presence_members("presence-room"),
            b'[{"action": 1, "data": "x"}]',
            "a PresenceMessage without its clientId",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/messages",
            lambda relay: relay.publish(["a", "b"], "e", 1),
            b'[{"results": {"a": 1}}]',
            "what is not a BatchResult",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/channels/lobby",
            lambda relay: relay.channel("lobby"),
            b'{"channelId": "lobby", "status": "active"}',  # a status that is not a ChannelStatus
            "what is not a ChannelDetails",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/messages",
            lambda relay: relay.publish(["a", "b"], "e", 1),
            b'[{"channel": "a", "messageId": "m"}, {"channel": "b", "messageId": "m"}]',  # protocol 1's
            "what is not a BatchResult",
        ),
        # A publish answered with what no publish is answered with: it was taken as published
        (PUSHER, f"{PUSHER_BASE}/events", lambda relay: relay.publish("lobby", "e", 1), b"<html>", "invalid JSON"),
        (
            PUSHER,
            f"{PUSHER_BASE}/events",
            lambda relay: relay.publish("lobby", "e", 1),
            b"[1, 2]",
            "JSON that is not an object",
        ),
        (
            PUSHER,
            f"{PUSHER_BASE}/batch_events",
            lambda relay: relay.publish_batch([Event("lobby", "e", 1)]),
            b'"queued"',
            "JSON that is not an object",
        ),
        (
            PUSHER,
            f"{PUSHER_BASE}/events",
            lambda relay: relay.send_to_user("alice", "e", 1),
            b"null",
            "JSON that is not an object",
        ),
        (
            ABLY,
            f"{ABLY_BASE}/channels/lobby/messages",
            lambda relay: relay.publish("lobby", "e", 1),
            b"[1]",
            "JSON that is not an object",
        ),
    ],
    ids=[
        "pusher-channel",
        "pusher-channels",
        "pusher-users",
        "pusher-html",
        "ably-channel",
        "ably-channels",
        "ably-presence",
        "ably-presence-without-client-id",
        "ably-batch",
        "ably-channel-status-not-an-object",
        "ably-batch-of-protocol-1",
        "pusher-publish-html",
        "pusher-publish",
        "pusher-batch",
        "pusher-send-to-user",
        "ably-publish",
    ],
)
async def test_an_answer_of_the_wrong_shape_is_a_protocol_error_naming_it(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, url: str, path: str, query: Any, body: bytes, problem: str
) -> None:
    """A 200 of JSON that is not what the API answers was an AttributeError (a 500 in the gateway): a ProtocolError
    naming the answer, with 502, as the provider broke the protocol, not the request. A publish answered so was taken
    as published: it may have been (the answer says nothing), so its outcome is unknown; a query's is not."""
    respx_mock.route(url__startswith=path).respond(200, content=body)
    relay = make_relay(url)
    with pytest.raises(ProtocolError) as raised:
        await query(relay)
    provider = "Pusher" if url == PUSHER else "Ably"
    assert str(raised.value).startswith(f"{provider} answered 200 with {problem}")
    assert str(raised.value).endswith(f": {body!r}")
    assert (raised.value.http_status, raised.value.answered_by) == (502, provider)
    assert raised.value.outcome_unknown is path.endswith(("/events", "/batch_events", "/messages"))


QUERIES = {
    "channel": (lambda relay: relay.channel("lobby"), "/channels/lobby"),
    "presence channel": (lambda relay: relay.channel("presence-room"), "/channels/presence-room"),
    "channels": (lambda relay: relay.channels(), "/channels"),
    "presence members": (lambda relay: relay.presence_members("presence-room"), "/channels/presence-room/"),
}


@pytest.mark.parametrize("answer", [httpx.Response(200), httpx.Response(204), httpx.Response(200, json={})])
@pytest.mark.parametrize(("url", "base"), [(PUSHER, PUSHER_BASE), (ABLY, ABLY_BASE)], ids=["pusher", "ably"])
@pytest.mark.parametrize("query", QUERIES, ids=str)
async def test_an_empty_answer_to_a_query_is_a_protocol_error_not_an_idle_channel(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, query: str, url: str, base: str, answer: httpx.Response
) -> None:
    """An empty 200 (a proxy, a path prefix routed elsewhere) was read as an unoccupied channel, no channels or no
    members: both APIs always answer these with the channel or list named, so anything else is the provider's (or
    the path's) fault, said as such."""
    ask, path = QUERIES[query]
    respx_mock.route(url__startswith=f"{base}{path}").mock(return_value=answer)
    with pytest.raises(ProtocolError) as raised:
        await ask(make_relay(url))
    provider = "Pusher" if url == PUSHER else "Ably"
    assert str(raised.value).startswith(f"{provider} answered {answer.status_code} with ")
    assert (raised.value.http_status, raised.value.answered_by) == (502, provider)
    assert not raised.value.outcome_unknown  # a query changes nothing


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"info": {"name": "Alice"}}, "a user needs an id: the mapping's 'id' (or 'user_id') is missing or empty"),
        ({"id": ""}, "a user needs an id: the mapping's 'id' (or 'user_id') is missing or empty"),
        ({"id": "alice", "info": ["admin"]}, "a user's info is a mapping, not list"),
        (4.2, "a user is a User, a mapping or an id (a str or an int), not float"),
    ],
)
async def test_a_user_relay_cannot_read_is_a_protocol_error(make_relay: MakeRelay, user: object, message: str) -> None:
    """A user mapping without an id was a ValueError, other shapes an AttributeError or TypeError."""
    relay = make_relay("memory://hunt-users")
    for sign in (
        lambda: relay.authenticate_user("1.2", user),
        lambda: relay.authorize_channel("1.2", "presence-a", user),
    ):
        with pytest.raises(ProtocolError) as raised:
            await sign()
        assert str(raised.value) == message


def signed_webhook_events(url: str, events: list[dict[str, Any]]) -> list[WebhookEvent]:
    """``events`` in a webhook of ``url``'s provider: Pusher's events, or as Ably items of that event's kind."""
    if url == PUSHER:
        body = json.dumps({"time_ms": int(time.time() * 1000), "events": events}).encode()
        signature = hmac.new(PUSHER_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return Relay(url).verify_webhook({"X-Pusher-Key": PUSHER_KEY, "X-Pusher-Signature": signature}, body)
    items = [
        {
            "name": "presence.message",
            "timestamp": int(time.time() * 1000),
            "data": {
                **({"channelId": event["channel"]} if "channel" in event else {}),
                "presence": [{"action": 2, "clientId": event.get("user_id")}],
            },
        }
        for event in events
    ]
    body = json.dumps({"items": items}).encode()
    signature = base64.b64encode(hmac.new(ABLY_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    return Relay(url).verify_webhook({"X-Ably-Key": ABLY_KEY, "X-Ably-Signature": signature}, body)


@pytest.mark.parametrize("url", [PUSHER, ABLY], ids=["pusher", "ably"])
def test_webhook_events_are_read_alike_from_both_providers(url: str) -> None:
    """An event without a channel became channel 'None' (Pusher) or '' (Ably), and an integer user id passed as an
    int: refused, or a str of its digits, alike for both."""
    [member] = signed_webhook_events(url, [{"name": "member_added", "channel": "presence-room", "user_id": 7}])
    assert (member.kind, member.channel, member.user_id) == ("member_added", "presence-room", "7")
    with pytest.raises(ProtocolError, match=r"\[0\] \(member_added\) has no channel$"):
        signed_webhook_events(url, [{"name": "member_added", "user_id": "alice"}])
    with pytest.raises(ProtocolError, match=r"\[1\] \(member_added\) has a user id that is neither a string nor an"):
        signed_webhook_events(
            url,
            [
                {"name": "member_added", "channel": "presence-room", "user_id": "alice"},
                {"name": "member_added", "channel": "presence-room", "user_id": {"id": 1}},
            ],
        )


def test_webhook_headers_are_taken_as_every_web_framework_gives_them() -> None:
    """Flask's request.headers (werkzeug's Headers) lists (name, value) pairs: a webhook with a wrong signature was
    an AttributeError (a 500) rather than InvalidSignature, and None an AttributeError too. Mappings, werkzeug's
    Headers and an ASGI scope's raw pairs of bytes are all read, by name in any case."""
    from werkzeug.datastructures import Headers

    client = Relay.from_url("memory://webhook-headers")
    headers, body = signed_webhook([{"name": "channel_occupied", "channel": "orders"}], client=client)
    raw_pairs = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    for given in (headers, Headers(list(headers.items())), raw_pairs, {n.upper(): v for n, v in headers.items()}):
        assert [(event.kind, event.channel) for event in client.verify_webhook(given, body)] == [
            ("channel_occupied", "orders")
        ]
    forged = Headers([*headers.items()])
    forged["X-Pusher-Signature"] = "0" * 64
    with pytest.raises(InvalidSignature):
        client.verify_webhook(forged, body)
    with pytest.raises(ProtocolError, match=r"^headers must be the request's headers: .*, not NoneType$"):
        client.verify_webhook(None, body)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"^a header must be a \(name, value\) pair of str \(or bytes\), not"):
        client.verify_webhook({"X-Pusher-Key": None}, body)  # type: ignore[dict-item]
