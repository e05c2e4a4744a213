"""The Pusher adapter against the real emulator, with real WebSocket subscribers (issue 6, "Tests").

Every test runs twice, through ``Relay`` and ``AsyncRelay`` (the ``make_relay`` fixture). Subscriptions, sign-ins and
encrypted channels use the bodies ``relay.authorize_channel`` / ``relay.authenticate_user`` return, so the emulator
accepting them proves they are what pusher-js would send.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import nacl.secret
import pytest
from libsupport import KEY, SECRET, Emulator, MakeRelay, StartEmulator, Subscribe, emulator_url

from relay import ChannelInfo, Event, PresenceMember, PublishResult, WebhookEvent
from relay.emulator.config import App, Webhook
from relay.errors import (
    AuthenticationError,
    ConfigError,
    InvalidChannelName,
    InvalidData,
    InvalidSignature,
    InvalidSocketId,
    LimitExceeded,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    UnknownKey,
)
from relay.protocol.signing import webhook_signature
from tests.webhook_receiver import Receiver

MASTER_KEY = bytes(range(100, 132))
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()


# -- publish ------------------------------------------------------------------------------------------------------


async def test_publish_to_one_channel(emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe) -> None:
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    result = await relay.publish("orders", "order-ready", {"id": 42, "items": ["a", "ü"]})
    assert result == PublishResult(("orders",))
    frame = await sub.expect("order-ready", "orders")
    assert json.loads(frame["data"]) == {"id": 42, "items": ["a", "ü"]}
    # A str is sent as is, not JSON-encoded a second time.
    await relay.publish(["orders"], "note", "plain text")
    assert (await sub.expect("note", "orders"))["data"] == "plain text"
    [first, second] = relay.requests
    assert (first.method, first.url.path) == ("POST", "/apps/1/events")
    assert first.json() == {"name": "order-ready", "channels": ["orders"], "data": '{"id":42,"items":["a","ü"]}'}
    assert second.json()["data"] == "plain text"


async def test_publish_to_250_channels_is_split(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """The emulator refuses more than 100 channels per event (§8), so 250 channels go out as 100 + 100 + 50."""
    relay = make_relay(emulator_url(emulator))
    channels = [f"fanout-{i}" for i in range(250)]
    first, last = await subscriber(emulator), await subscriber(emulator)
    await first.subscribe(channels[0])
    await last.subscribe(channels[249])
    result = await relay.publish(channels, "tick", {"n": 1})
    assert result.channels == tuple(channels)
    assert [len(sent.json()["channels"]) for sent in relay.requests] == [100, 100, 50]
    assert [channel for sent in relay.requests for channel in sent.json()["channels"]] == channels
    assert {sent.json()["data"] for sent in relay.requests} == {'{"n":1}'}
    assert json.loads((await first.expect("tick", channels[0]))["data"]) == {"n": 1}
    assert json.loads((await last.expect("tick", channels[249]))["data"]) == {"n": 1}


async def test_a_channel_named_twice_is_published_to_once(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    result = await relay.publish(["orders", "audit", "orders"], "order-ready", "1")
    assert result == PublishResult(("orders", "audit"))
    assert relay.requests[0].json()["channels"] == ["orders", "audit"]
    await sub.expect("order-ready", "orders")
    await relay.publish("orders", "next", "2")
    assert (await sub.expect("next", "orders"))["data"] == "2"


async def test_socket_id_exclusion(emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe) -> None:
    relay = make_relay(emulator_url(emulator))
    excluded, other = await subscriber(emulator), await subscriber(emulator)
    await excluded.subscribe("room")
    await other.subscribe("room")
    await relay.publish("room", "said", {"text": "hi"}, socket_id=excluded.socket_id)
    assert relay.requests[0].json()["socket_id"] == excluded.socket_id
    assert (await other.expect("said", "room"))["data"] == '{"text":"hi"}'
    await relay.publish("room", "after", "x")
    # The excluded socket's next event is the second publish: it never got the first one.
    assert (await excluded.expect("after", "room"))["data"] == "x"
    assert (await other.expect("after", "room"))["data"] == "x"


async def test_an_empty_socket_id_excludes_no_one(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """``socket_id=""`` is no socket id, as pusher-http-python reads it (``if socket_id:``): a backend passing on a
    request's missing ``X-Socket-Id`` header as "" publishes to everyone (it was refused, and the event lost); the
    same in a batch. No ``socket_id`` goes in the request."""
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe("room")
    await relay.publish("room", "said", "x", socket_id="")
    assert "socket_id" not in relay.requests[0].json()
    assert (await sub.expect("said", "room"))["data"] == "x"
    await relay.publish_batch(
        [
            Event("room", "batched", "y", socket_id=""),
            {"channel": "room", "name": "mapped", "data": "z", "socket_id": ""},
        ]
    )
    assert all("socket_id" not in item for item in relay.requests[1].json()["batch"])
    assert (await sub.expect("batched", "room"))["data"] == "y"
    assert (await sub.expect("mapped", "room"))["data"] == "z"


async def test_publish_batch_is_split_above_10(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    sub, excluded = await subscriber(emulator), await subscriber(emulator)
    await sub.subscribe("batch")
    await excluded.subscribe("batch")
    events: list[Event | dict[str, Any]] = [Event("batch", f"e-{i}", {"i": i}) for i in range(11)]
    events.append({"channel": "batch", "name": "e-11", "data": "last", "socket_id": excluded.socket_id})
    result = await relay.publish_batch(events)
    assert result.channels == ("batch",) * 12
    assert [sent.url.path for sent in relay.requests] == ["/apps/1/batch_events"] * 2
    assert [len(sent.json()["batch"]) for sent in relay.requests] == [10, 2]
    assert relay.requests[1].json()["batch"][1] == {
        "name": "e-11",
        "channel": "batch",
        "data": "last",
        "socket_id": excluded.socket_id,
    }
    for i in range(11):
        assert json.loads((await sub.expect(f"e-{i}", "batch"))["data"]) == {"i": i}
        assert json.loads((await excluded.expect(f"e-{i}", "batch"))["data"]) == {"i": i}
    assert (await sub.expect("e-11", "batch"))["data"] == "last"
    await relay.publish("batch", "marker", "m")
    assert (await excluded.expect("marker", "batch"))["data"] == "m"


async def test_invalid_input_is_refused_before_any_request(emulator: Emulator, make_relay: MakeRelay) -> None:
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(InvalidChannelName, match="characters outside"):
        await relay.publish("bad channel!", "e", "x")
    with pytest.raises(LimitExceeded, match="at least one channel"):
        await relay.publish([], "e", "x")
    with pytest.raises(InvalidSocketId):
        await relay.publish("ok", "e", "x", socket_id="not-a-socket")
    with pytest.raises(InvalidData, match="JSON-serialisable"):
        await relay.publish("ok", "e", {"when": object()})
    with pytest.raises(ProtocolError, match="one at a time"):
        await relay.publish(["private-encrypted-a", "b"], "e", "x")
    with pytest.raises(ConfigError, match="encryption_master_key"):
        await relay.publish("private-encrypted-a", "e", "x")
    assert relay.requests == []


# -- queries and auth bodies ----------------------------------------------------------------------------------------


async def test_presence_and_channel_queries(emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe) -> None:
    relay = make_relay(emulator_url(emulator))
    member = await subscriber(emulator)
    auth = await relay.authorize_channel(member.socket_id, "presence-room", {"id": "alice", "info": {"name": "Alice"}})
    assert set(auth) == {"auth", "channel_data"}
    assert json.loads(auth["channel_data"]) == {"user_id": "alice", "user_info": {"name": "Alice"}}
    succeeded = await member.subscribe("presence-room", auth)
    assert json.loads(succeeded["data"])["presence"]["hash"] == {"alice": {"name": "Alice"}}
    private = await relay.authorize_channel(member.socket_id, "private-inbox")
    assert set(private) == {"auth"} and private["auth"].startswith(f"{KEY}:")
    await member.subscribe("private-inbox", private)
    await member.subscribe("lobby")

    assert await relay.presence_members("presence-room") == [PresenceMember("alice")]
    assert await relay.channel("presence-room") == ChannelInfo("presence-room", True, None, 1)
    # The default app counts no subscriptions, as a Pusher app unless enabled: no subscription_count
    assert await relay.channel("lobby") == ChannelInfo("lobby", True, None, None)
    assert await relay.channel("empty") == ChannelInfo("empty", False, None, None)
    assert set(await relay.channels()) == {"presence-room", "private-inbox", "lobby"}
    assert await relay.channels(prefix="presence-") == {"presence-room": ChannelInfo("presence-room", True, None, 1)}
    assert await relay.channels(prefix="priv") == {"private-inbox": ChannelInfo("private-inbox", True)}
    with pytest.raises(InvalidChannelName, match="not a presence channel"):
        await relay.presence_members("lobby")
    with pytest.raises(ProtocolError, match="authorize it with a user"):
        await relay.authorize_channel(member.socket_id, "presence-room")
    with pytest.raises(InvalidChannelName, match="only private and presence need auth"):
        await relay.authorize_channel(member.socket_id, "lobby")
    assert all(sent.method == "GET" for sent in relay.requests)


async def test_user_signin_send_to_user_and_terminate(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    alice, bystander = await subscriber(emulator), await subscriber(emulator)
    body = await relay.authenticate_user(alice.socket_id, {"id": "alice", "info": {"role": "admin"}})
    assert json.loads(body["user_data"]) == {"id": "alice", "user_info": {"role": "admin"}}
    success = await alice.signin(body)
    assert success["data"] == {"user_data": body["user_data"]}
    await bystander.subscribe("lobby")

    await relay.send_to_user("alice", "direct", {"hello": "alice"})
    frame = await alice.expect("direct", "#server-to-user-alice")
    assert json.loads(frame["data"]) == {"hello": "alice"}

    await relay.terminate_user_connections("alice")
    assert await alice.closed() == 4009
    assert relay.requests[-1].url.path == "/apps/1/users/alice/terminate_connections"
    # The emulator kept serving everyone else.
    await relay.publish("lobby", "still-here", "1")
    assert (await bystander.expect("still-here", "lobby"))["data"] == "1"


async def test_encrypted_publish(emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe) -> None:
    relay = make_relay(emulator_url(emulator, query=f"encryption_master_key={MASTER_KEY_B64}"))
    channel = "private-encrypted-vault"
    sub = await subscriber(emulator)
    auth = await relay.authorize_channel(sub.socket_id, channel)
    assert set(auth) == {"auth", "shared_secret"}
    await sub.subscribe(channel, {"auth": auth["auth"]})
    await relay.publish(channel, "secret-event", {"pin": 1234})
    sent = relay.requests[0].json()["data"]
    assert "1234" not in sent
    frame = await sub.expect("secret-event", channel)
    encrypted = json.loads(frame["data"])
    assert set(encrypted) == {"nonce", "ciphertext"}
    box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
    plain = box.decrypt(base64.b64decode(encrypted["ciphertext"]), base64.b64decode(encrypted["nonce"]))
    assert json.loads(plain) == {"pin": 1234}
    # Batches encrypt per event too; a fresh nonce every time.
    await relay.publish_batch([Event(channel, "b", "plain"), Event(channel, "b", "plain")])
    nonces = set()
    for _ in range(2):
        encrypted = json.loads((await sub.expect("b", channel))["data"])
        nonces.add(encrypted["nonce"])
        assert box.decrypt(base64.b64decode(encrypted["ciphertext"]), base64.b64decode(encrypted["nonce"])) == b"plain"
    assert len(nonces) == 2


# -- errors -------------------------------------------------------------------------------------------------------


async def test_wrong_secret_is_an_authentication_error(
    emulator: Emulator, make_relay: MakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Secret-777"
    relay = make_relay(emulator_url(emulator, secret=wrong))
    with pytest.raises(AuthenticationError) as raised:
        await relay.publish("orders", "e", "x")
    assert raised.value.http_status == 401
    assert "invalid auth_signature" in str(raised.value)
    assert "check the key and secret" in str(raised.value)
    with pytest.raises(AuthenticationError):
        await relay.channel("orders")
    assert len(relay.requests) == 2, "a 401 is not retried, not even for an idempotent GET"
    for text in (str(raised.value), repr(raised.value), repr(relay.client), caplog.text):
        assert wrong not in text


async def test_unknown_app_is_not_found(emulator: Emulator, make_relay: MakeRelay) -> None:
    relay = make_relay(emulator_url(emulator, app_id="999"))
    with pytest.raises(NotFound) as raised:
        await relay.publish("orders", "e", "x")
    assert raised.value.http_status == 404
    assert "unknown app id" in str(raised.value) and "check the app id" in str(raised.value)


async def test_data_over_10kb_is_payload_too_large(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish("orders", "big", "x" * 10_241)
    assert raised.value.http_status == 413
    assert "10241 bytes; the limit is 10240" in str(raised.value)
    assert len(relay.requests) == 1
    # Exactly at the limit is fine, and the emulator still serves.
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    await relay.publish("orders", "big", "x" * 10_240)
    assert len((await sub.expect("big", "orders"))["data"]) == 10_240


async def test_pusher_environment_against_the_emulator(
    emulator: Emulator, subscriber: Subscribe, make_relay: MakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PUSHER_HOST``/``PUSHER_PORT``/``PUSHER_SCHEME`` point the hosted-Pusher configuration at any server."""
    from relay import Relay

    env = {
        "PUSHER_APP_ID": "1",
        "PUSHER_KEY": KEY,
        "PUSHER_SECRET": SECRET,
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(emulator.port),
        "PUSHER_SCHEME": "http",
    }
    sub = await subscriber(emulator)
    await sub.subscribe("env")
    with Relay.from_env(env) as client:
        await asyncio.to_thread(client.publish, "env", "from-env", "ok")
    assert (await sub.expect("from-env", "env"))["data"] == "ok"


# -- webhooks -----------------------------------------------------------------------------------------------------


async def test_verify_webhook_sent_by_the_emulator(
    receiver: Receiver, start_emulator: StartEmulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """The receiver is set up first so that it outlives the emulator (which flushes webhooks as it closes)."""
    app = App(
        app_id="1",
        key=KEY,
        secret=SECRET,
        webhooks=(Webhook(receiver.url),),
        webhook_batch_ms=10,
        webhook_delay=0.05,
    )
    emulator = await start_emulator(app=app)
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    auth = await relay.authorize_channel(sub.socket_id, "presence-hooked", {"id": "bob"})
    await sub.subscribe("presence-hooked", auth)
    delivery = (await receiver.wait_for(1))[0]
    headers, body = delivery.headers, delivery.body
    assert headers["x-pusher-key"] == KEY
    events = await relay.verify_webhook(headers, body)
    time_ms = json.loads(body)["time_ms"]
    assert sorted(events, key=lambda e: e.kind) == [
        WebhookEvent("channel_occupied", "presence-hooked", time_ms),
        WebhookEvent("member_added", "presence-hooked", time_ms, user_id="bob"),
    ]
    # Header names are case-insensitive; a changed byte or another key is refused.
    assert await relay.verify_webhook({k.upper(): v for k, v in headers.items()}, body) == events
    with pytest.raises(InvalidSignature):
        await relay.verify_webhook(headers, body.replace(b"bob", b"eve"))
    with pytest.raises(UnknownKey):
        await relay.verify_webhook({**headers, "x-pusher-key": "other-key"}, body)
    with pytest.raises(AuthenticationError):
        await relay.verify_webhook({"content-type": "application/json"}, body)


@pytest.mark.parametrize(
    "body",
    [b'{"time_ms":1,"events":["x"]}', b'{"time_ms":1,"events":{"name":"x"}}', b'{"time_ms":1,"events":[null]}'],
)
async def test_a_signed_webhook_that_is_not_pusher_s_shape_is_a_protocol_error(
    make_relay: MakeRelay, body: bytes
) -> None:
    """A correctly signed body whose events are not objects is refused as malformed (a gateway answers 400), not
    left to fail inside the parser."""
    relay = make_relay(f"emulator://{KEY}:{SECRET}@127.0.0.1:1/apps/1")
    headers = {"X-Pusher-Key": KEY, "X-Pusher-Signature": webhook_signature(SECRET, body)}
    with pytest.raises(ProtocolError, match="webhook events must be a list of objects"):
        await relay.verify_webhook(headers, body)
