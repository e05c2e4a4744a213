"""What the library makes of a provider's refusals and of input no provider can carry, against real servers.

A provider's answer names the provider (``answered_by``), so a 401 about Relay's own key is told from one about a
caller's; data no subscriber could read (NaN, a lone UTF-16 surrogate) is refused before anything is sent; a batch
refused after its first call says what was already published; a closed ``memory://`` client is closed; a TLS or
plain-HTTP mismatch says which setting to change. Every test runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import pytest
from libsupport import FAST_RETRY, KEY, SECRET, Emulator, MakeRelay, StartEmulator, Subscribe, emulator_url

from relay import AsyncRelay, Event, PublishResult, Relay
from relay.adapters.memory import memory_store
from relay.emulator.config import App
from relay.errors import (
    AuthenticationError,
    ClientClosed,
    InvalidChannelName,
    InvalidEventName,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolError,
    TransportError,
)
from relay.http_errors import parse_retry_after
from relay.protocol.signing import webhook_signature
from relay.senders import AsyncSender, SyncSender
from tests.operations.support import make_certificate, trusting

EMULATOR = "the Relay emulator"
SURROGATE = (
    "contains a lone UTF-16 surrogate ('\\ud800' at character {at}), which UTF-8 cannot encode: a string cut in the "
    "middle of a character"
)
NAN = (
    "event data holds NaN or Infinity, which JSON cannot carry (JSON.parse in pusher-js and ably-js refuses the "
    "message): send null or a string instead"
)


# -- 1. a provider's refusal says it is the provider's -----------------------------------------------------------------


async def test_a_provider_s_refusal_keeps_its_type_and_names_the_provider(
    start_emulator: StartEmulator, make_relay: MakeRelay
) -> None:
    """The type says what went wrong (as documented), ``answered_by`` who said so: a 401 the provider answered is
    about the key Relay was configured with (the gateway answers it with 502), one Relay raises is about its input."""
    disabled = App(app_id="2", key="off-key", secret="off-secret", enabled=False)
    emulator = await start_emulator(apps=(disabled,))
    cases = [
        (emulator_url(emulator, secret="wrong-secret"), AuthenticationError, 401, "invalid auth_signature"),
        (emulator_url(emulator, app_id="999"), NotFound, 404, "unknown app id '999'"),
        (f"emulator://off-key:off-secret@127.0.0.1:{emulator.port}/apps/2", PermissionDenied, 403, "app is disabled"),
    ]
    for url, error_class, status, reason in cases:
        relay = make_relay(url)
        with pytest.raises(error_class) as raised:
            await relay.publish("orders", "e", "x")
        assert type(raised.value) is error_class
        assert (raised.value.http_status, raised.value.answered_by) == (status, EMULATOR)
        assert str(raised.value).startswith(f"{EMULATOR} answered {status}: ") and reason in str(raised.value)
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(InvalidChannelName) as own:
        await relay.publish("no spaces", "e", "x")
    assert (own.value.http_status, own.value.answered_by) == (400, None)
    assert await relay.publish("orders", "e", "x") == PublishResult(("orders",))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("1", 1.0), ("0.25", 0.25), ("-3", 0.0), ("inf", None), ("-inf", None), ("nan", None), ("1e400", None)],
)
def test_retry_after_is_a_finite_delay_or_none(header: str, seconds: float | None) -> None:
    """ "inf" parses as a float but is no delay: it would make a RateLimited nobody can wait out, and a gateway
    could not write it back as a Retry-After (an OverflowError, a 500)."""
    assert parse_retry_after(header) == seconds


# -- 2. data no subscriber could read ----------------------------------------------------------------------------------


async def test_a_lone_surrogate_is_refused_before_anything_is_sent(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """JSON.stringify of an emoji cut in half gives "\\ud800"; UTF-8 cannot encode it, which was a bare
    UnicodeEncodeError (a 500 in the gateway)."""
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    with pytest.raises(ProtocolError) as raised:
        await relay.publish("orders", "e", "broken \ud800")
    assert str(raised.value) == "event data " + SURROGATE.format(at=7)
    with pytest.raises(ProtocolError) as raised:
        await relay.publish("orders", "e", {"text": "\ud800"})  # JSON-encoded: {"text":"\ud800"}
    assert str(raised.value) == "event data " + SURROGATE.format(at=9)
    with pytest.raises(InvalidEventName) as named:
        await relay.publish("orders", "order-\ud800", "x")
    assert str(named.value) == "event name " + SURROGATE.format(at=6)
    with pytest.raises(InvalidEventName):
        await relay.send_to_user("alice", "\ud800", "x")
    with pytest.raises(ProtocolError) as batched:
        await relay.publish_batch([Event("orders", "ok", "1"), Event("orders", "e", ["\ud800"])])
    assert str(batched.value) == "events[1]: event data " + SURROGATE.format(at=2)
    with pytest.raises(InvalidChannelName) as in_path:  # refused as memory:// refuses it, before anything is sent
        await relay.terminate_user_connections("\ud800")
    assert str(in_path.value) == "user id " + SURROGATE.format(at=0)
    assert relay.requests == []
    await relay.publish("orders", "e", "whole \U0001f600")
    assert (await sub.expect("e", "orders"))["data"] == "whole \U0001f600"


async def test_nan_and_infinity_are_refused_before_anything_is_sent(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """Python writes NaN into JSON, which JSON.parse (pusher-js) cannot read: every subscriber would drop it."""
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    for data in ({"price": float("nan")}, [float("inf")], {"low": -float("inf")}, float("nan")):
        with pytest.raises(ProtocolError) as raised:
            await relay.publish("orders", "e", data)
        assert str(raised.value) == NAN
    with pytest.raises(ProtocolError) as batched:
        await relay.publish_batch(
            [Event("orders", "e", 1), Event("orders", "e", 2), Event("orders", "e", float("nan"))]
        )
    assert str(batched.value) == f"events[2]: {NAN}"
    assert relay.requests == []
    # The words are data like any other: only the numbers are refused
    await relay.publish("orders", "e", {"label": "NaN", "note": "Infinity"})
    assert json.loads((await sub.expect("e", "orders"))["data"]) == {"label": "NaN", "note": "Infinity"}


async def test_memory_refuses_what_pusher_cannot_carry(make_relay: MakeRelay) -> None:
    relay = make_relay("memory://unreadable-data")
    store = memory_store("unreadable-data")
    store.clear()
    with pytest.raises(ProtocolError, match="lone UTF-16 surrogate"):
        await relay.publish("orders", "e", "\ud800")
    with pytest.raises(ProtocolError) as raised:
        await relay.publish("orders", "e", {"n": float("nan")})
    assert str(raised.value) == NAN
    assert store.published == []
    await relay.publish("orders", "e", "fine")
    assert [entry.data for entry in store.published] == ["fine"]


# -- 3. a batch split into calls ---------------------------------------------------------------------------------------


async def test_a_batch_refused_after_its_first_call_says_what_was_published(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """Pusher takes 10 events per call: event 12 is the third event of the second call, which the emulator calls
    batch[2]. The caller's list numbers it 12, and events 0-9 were delivered: sending all 25 again would deliver
    them twice."""
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    events = [Event("orders", f"e{i}", str(i)) for i in range(25)]
    events[12] = Event("orders", "e12", "x" * 11_000)
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish_batch(events)
    assert str(raised.value) == (
        f"{EMULATOR} answered 413: batch[12]: data is 11000 bytes; the limit is 10240 (the payload is over the "
        "provider's size limit); events 0-9 were already published by the calls before this one (its first call took "
        "10): send only the events from 10 on again"
    )
    assert (raised.value.http_status, raised.value.published) == (413, 10)
    assert len(relay.requests) == 2, "the third call is not sent"
    assert [(await sub.expect(f"e{i}", "orders"))["data"] for i in range(10)] == [str(i) for i in range(10)]
    # Nothing of the refused call arrived (the next frame is the resend's first event), and the client goes on
    rest = events[10:12] + events[13:]
    assert len((await relay.publish_batch(rest)).channels) == 14
    assert [(await sub.expect(e.name, "orders"))["data"] for e in rest] == [e.data for e in rest]


async def test_a_batch_refused_in_its_only_call_is_reported_as_the_provider_said(
    emulator: Emulator, make_relay: MakeRelay
) -> None:
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish_batch([Event("orders", "a", "1"), Event("orders", "b", "x" * 11_000)])
    assert str(raised.value) == (
        f"{EMULATOR} answered 413: batch[1]: data is 11000 bytes; the limit is 10240 (the payload is over the "
        "provider's size limit)"
    )
    assert raised.value.published is None


# -- 4. a closed memory client -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://closed", "mirror:memory://closed|memory://closed-too"])
async def test_a_closed_memory_client_raises_client_closed(make_relay: MakeRelay, url: str) -> None:
    """docs/library.md: a client used after close() raises ClientClosed. An emulator:// client's sender said so;
    memory sends nothing, so it published on, and a mirror's would be a MirrorError of ClientCloseds."""
    store = memory_store("closed")
    store.clear()
    relay = make_relay(url)
    await relay.publish("orders", "before", 1)
    await relay.close()
    operations = [
        relay.publish("orders", "after", 2),
        relay.publish_batch([Event("orders", "after", 3)]),
        relay.send_to_user("alice", "after", 4),
        relay.terminate_user_connections("alice"),
        relay.channel("orders"),
        relay.channels(),
        relay.presence_members("presence-room"),
    ]
    for operation in operations:
        with pytest.raises(ClientClosed, match="this Relay client is closed: create another one"):
            await operation
    assert [entry.event for entry in store.published] == ["before"]
    assert store.terminated_users == []
    await make_relay(url).publish("orders", "other-client", 5)  # the store, shared by name, is not closed
    assert [entry.event for entry in store.published] == ["before", "other-client"]


def test_a_memory_client_is_closed_after_its_with_block() -> None:
    with Relay.from_url("memory://closed-with") as client:
        client.publish("orders", "e", 1)
    with pytest.raises(ClientClosed):
        client.publish("orders", "e", 2)

    async def async_block() -> None:
        async with AsyncRelay.from_url("memory://closed-with") as async_client:
            await async_client.publish("orders", "e", 3)
        with pytest.raises(ClientClosed):
            await async_client.publish("orders", "e", 4)

    asyncio.run(async_block())
    assert [entry.data for entry in memory_store("closed-with").published] == ["1", "3"]


# -- 5. TLS against plain HTTP, and the other way round ----------------------------------------------------------------


HTTPS_TO_PLAIN = (
    r"could not reach 127\.0\.0\.1:{port}: ConnectError; the TLS handshake failed \([A-Z_ ]+\): if the server speaks "
    r"plain HTTP, set PUSHER_SCHEME=http, an http:// PUSHER_URL or \?tls=false \(emulator:// URLs are plain HTTP "
    r"unless \?tls=true\)$"
)


async def test_https_to_a_plain_http_emulator_says_to_use_http(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """pusher:// is HTTPS unless ?tls=false: pointed at the emulator it failed as 'check the host, port and
    network', which both were."""
    https = f"pusher://{KEY}:{SECRET}@127.0.0.1:{emulator.port}/apps/1"
    relay = make_relay(https)
    with pytest.raises(TransportError, match=HTTPS_TO_PLAIN.format(port=emulator.port)):
        await relay.publish("orders", "e", "x")
    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": KEY, "PUSHER_SECRET": SECRET, "PUSHER_HOST": "127.0.0.1"}
    with (
        Relay.from_env({**env, "PUSHER_PORT": str(emulator.port)}, retry=FAST_RETRY) as client,
        pytest.raises(TransportError, match=HTTPS_TO_PLAIN.format(port=emulator.port)),
    ):
        await asyncio.to_thread(client.publish, "orders", "e", "x")
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    await make_relay(f"{https}?tls=false").publish("orders", "e", "over http")
    assert (await sub.expect("e", "orders"))["data"] == "over http"


async def test_an_https_pusher_url_at_a_plain_http_emulator_says_to_give_it_http(emulator: Emulator) -> None:
    """PUSHER_URL wins over PUSHER_SCHEME and takes no ?tls= option: the hint named only those two, neither of which
    the user could apply; it names PUSHER_URL's own scheme too."""
    env = {"PUSHER_URL": f"https://{KEY}:{SECRET}@127.0.0.1:{emulator.port}/apps/1"}
    with Relay.from_env(env, retry=FAST_RETRY) as client, pytest.raises(TransportError) as raised:
        await asyncio.to_thread(client.publish, "orders", "e", "x")
    assert "an http:// PUSHER_URL" in str(raised.value)
    with Relay.from_env({"PUSHER_URL": env["PUSHER_URL"].replace("https://", "http://")}) as fixed:
        assert await asyncio.to_thread(fixed.publish, "orders", "e", "x") == PublishResult(("orders",))


async def test_http_to_a_tls_emulator_says_to_use_https(
    tmp_path: Path, start_emulator: StartEmulator, make_relay: MakeRelay
) -> None:
    """emulator:// is plain HTTP unless ?tls=true; the TLS server hangs up on a plain request without an answer."""
    cert, key = make_certificate(tmp_path)
    emulator = await start_emulator(tls_cert=str(cert), tls_key=str(key))
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "e", "x")
    # The request went out, so a publish may have been delivered (a reset after the answer looks the same)
    assert str(raised.value) in {
        f"the connection to 127.0.0.1:{emulator.port} failed during the request: {name}; the request was sent and "
        "may have been processed: a publish may have been delivered, check before sending it again; the server "
        "closed the connection without an HTTP answer: if it serves HTTPS, set PUSHER_SCHEME=https, an https:// "
        "PUSHER_URL or ?tls=true on the URL"
        for name in ("RemoteProtocolError", "ReadError")
    }
    # With TLS, a certificate nobody trusts is that, not a scheme to change
    untrusted = make_relay(emulator_url(emulator, query="tls=true"))
    with pytest.raises(TransportError, match=r"TLS certificate did not verify \(self.signed certificate\)$"):
        await untrusted.publish("orders", "e", "x")
    # and with it trusted, the same emulator takes the publish
    context = trusting(cert)
    url = emulator_url(emulator, query="tls=true")
    if relay.is_async:
        async with AsyncRelay(url, sender=AsyncSender(FAST_RETRY, client=httpx.AsyncClient(verify=context))) as ok:
            assert await ok.publish("orders", "e", "x") == PublishResult(("orders",))
    else:
        with Relay(url, sender=SyncSender(FAST_RETRY, client=httpx.Client(verify=context))) as sync_ok:
            assert await asyncio.to_thread(sync_ok.publish, "orders", "e", "x") == PublishResult(("orders",))


# -- 6. signed webhook bodies the parser cannot take -------------------------------------------------------------------

NOT_MILLISECONDS = "webhook time_ms must be a whole number of milliseconds since 1970, not "


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 3000, "webhook body nests arrays and objects too deeply"),
        (b'{"time_ms": Infinity, "events": []}', "webhook body is not valid JSON: Infinity is not a finite number"),
        (b'{"time_ms": 1e400, "events": []}', "webhook body is not valid JSON: 1e400 is not a finite number"),
        (b'{"time_ms": ' + b"9" * 400 + b', "events": []}', f"{NOT_MILLISECONDS}{'9' * 40}"),
        (b'{"time_ms": NaN, "events": []}', "webhook body is not valid JSON: NaN is not a finite number"),
        (b'{"time_ms": "1796566307000", "events": []}', f"{NOT_MILLISECONDS}a string"),
        (b'{"time_ms": true, "events": []}', f"{NOT_MILLISECONDS}a boolean"),
        (b'{"time_ms": null, "events": []}', f"{NOT_MILLISECONDS}null"),
        (b'{"time_ms": 1796566307000.5, "events": []}', f"{NOT_MILLISECONDS}1796566307000.5"),
        (b'{"time_ms": -1, "events": []}', f"{NOT_MILLISECONDS}-1"),
    ],
    ids=["nested", "infinity", "float-overflow", "int-overflow", "nan", "text", "true", "null", "fraction", "negative"],
)
async def test_a_signed_pusher_webhook_the_parser_cannot_take_is_a_protocol_error(
    make_relay: MakeRelay, body: bytes, message: str
) -> None:
    """Signed, so past the signature check: a RecursionError or OverflowError escaped (a 500 in the gateway), and
    a time that is no JSON integer (text, ``true``) was read as one."""
    relay = make_relay(f"emulator://{KEY}:{SECRET}@127.0.0.1:1/apps/1")
    headers = {"X-Pusher-Key": KEY, "X-Pusher-Signature": webhook_signature(SECRET, body)}
    with pytest.raises(ProtocolError) as raised:
        await relay.verify_webhook(headers, body)
    assert (type(raised.value), str(raised.value), raised.value.http_status) == (ProtocolError, message, 400)
    good = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_vacated", "channel": "a"}]})
    good_headers = {"X-Pusher-Key": KEY, "X-Pusher-Signature": webhook_signature(SECRET, good.encode())}
    assert [event.kind for event in await relay.verify_webhook(good_headers, good.encode())] == ["channel_vacated"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"items": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"items": [{"name": "channel.opened", "timestamp": Infinity, "data": {"channelId": "a"}}]}',
    ],
    ids=["nested", "infinity"],
)
async def test_a_signed_ably_webhook_the_parser_cannot_take_is_a_protocol_error(
    make_relay: MakeRelay, body: bytes
) -> None:
    relay = make_relay("ably://app.key:ably-secret@rest.ably.io")

    def headers(signed: bytes) -> dict[str, str]:
        digest = hmac.new(b"ably-secret", signed, hashlib.sha256).digest()
        return {"X-Ably-Key": "app.key", "X-Ably-Signature": base64.b64encode(digest).decode()}

    with pytest.raises(ProtocolError, match="webhook body") as raised:
        await relay.verify_webhook(headers(body), body)
    assert raised.value.http_status == 400
    opened = {"name": "channel.opened", "timestamp": int(time.time() * 1000), "data": {"channelId": "a"}}
    good = json.dumps({"items": [opened]}).encode()
    assert [event.kind for event in await relay.verify_webhook(headers(good), good)] == ["channel_occupied"]
