"""Fixes of the library audit: user ids a provider cannot take as they were given, environment values with
whitespace, app ids a request path cannot carry, the encryption key beside ``PUSHER_URL``, Ably's presence counts
and webhook replays, Ably batches over its request size, and Pusher request paths as the official SDKs send them.

Against the real emulator where a provider answers; hosted Pusher with respx, asserting the exact request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import replace
from typing import Any

import nacl.secret
import pytest
import respx
from libsupport import APP_ID, KEY, SECRET, MakeRelay, Subscribe, emulator_url
from pusher.http import make_query_string  # type: ignore[import-untyped]
from pusher.pusher_client import PusherClient  # type: ignore[import-untyped]
from pusher.signature import sign  # type: ignore[import-untyped]

from relay import ChannelInfo, Event, PresenceMember, User
from relay.adapters.ably import MAX_BATCH_REQUEST_BYTES, AblyAdapter
from relay.adapters.base import refuse_replayed_webhook
from relay.adapters.memory import MemoryAdapter
from relay.adapters.pusher import PusherAdapter
from relay.config import ProviderConfig, from_env, parse_url
from relay.errors import AuthenticationError, ConfigError, ProtocolError, StaleTimestamp
from relay.payload import Payload
from tests.conftest import RunningEmulator

ABLY_HOSTED = "ably://appid.keyid:ably-secret"
MASTER_KEY = bytes(range(32))
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()


def ably_url(running: RunningEmulator) -> str:
    return f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}?tls=false"


# -- 1. user ids Ably cannot take ----------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["presence-room", "private-room", "room"])
async def test_ably_refuses_the_wildcard_user_id(make_relay: MakeRelay, channel: str) -> None:
    """A TokenRequest with clientId '*' was signed: Ably takes '*' as a wildcard, so whoever held the token could
    enter presence as any user (enterClient('bob')), where user ids are chosen by users. Refused before signing."""
    relay = make_relay(ABLY_HOSTED)
    with pytest.raises(ProtocolError) as raised:
        await relay.authorize_channel("1.2", channel, User("*"))
    assert str(raised.value) == (
        "user id '*' cannot be authorized on Ably: a token's clientId '*' is a wildcard, with which its holder enters "
        "presence as any user it names"
    )
    assert (raised.value.code, raised.value.http_status) == (40012, 400)
    assert (await relay.authorize_channel("1.2", channel, User("*x")))["clientId"] == "*x"  # only '*' is the wildcard


@pytest.mark.parametrize("url", ["pusher://k:s@eu/apps/1", "memory://ids"])
async def test_the_wildcard_is_an_ordinary_user_id_on_pusher(make_relay: MakeRelay, url: str) -> None:
    relay = make_relay(url)
    auth = await relay.authorize_channel("1.2", "presence-room", User("*"))
    assert json.loads(auth["channel_data"])["user_id"] == "*"


@pytest.mark.parametrize("url", [ABLY_HOSTED, "pusher://k:s@eu/apps/1", "memory://ids"])
async def test_an_empty_user_id_is_refused_alike_by_every_provider(make_relay: MakeRelay, url: str) -> None:
    """User('') was refused with a frame error (InvalidFrame) on Pusher and memory, and signed on Ably with clientId
    '' (which Ably refuses at the exchange, 40012): refused when the User is made, for every provider."""
    relay = make_relay(url)
    for user in (User, lambda user_id: user_id):
        with pytest.raises(ProtocolError) as raised:
            await relay.authorize_channel("1.2", "presence-room", user(""))
        assert type(raised.value) is ProtocolError
        assert str(raised.value) == "a user needs an id: User('') has an empty one"


# -- 9c. integer user ids ------------------------------------------------------------------------------------------


def test_an_integer_user_id_is_its_digits() -> None:
    assert User(5).id == "5"  # type: ignore[arg-type]
    assert User(5) == User("5") == User.coerce(5) == User.coerce({"id": 5})  # type: ignore[arg-type]
    for wrong in (True, 5.0, None, b"5"):
        with pytest.raises(ProtocolError, match=r"a user id is a str \(or an int, taken as its digits\), not "):
            User(wrong)  # type: ignore[arg-type]
    for wrong in (True, 5.0, b"5"):  # the mapping form takes its id as User does ("True" and "5.0" were ids)
        with pytest.raises(ProtocolError, match=r"a user id is a str \(or an int, taken as its digits\), not "):
            User.coerce({"id": wrong})


@pytest.mark.parametrize("url", ["pusher://k:s@eu/apps/1", "memory://ids"])
async def test_an_integer_user_id_signs_as_a_string_on_pusher(make_relay: MakeRelay, url: str) -> None:
    """User(5), a Django user.pk, went out as "user_id":5 in channel_data and was refused by the sign-in with a frame
    error; the mapping form {"id": 5} was "5"."""
    relay = make_relay(url)
    for user in (User(5), 5):  # type: ignore[arg-type]
        auth = await relay.authorize_channel("1.2", "presence-room", user)
        assert json.loads(auth["channel_data"]) == {"user_id": "5", "user_info": {}}
        assert json.loads((await relay.authenticate_user("1.2", user))["user_data"]) == {"id": "5"}


async def test_an_integer_user_id_is_the_ably_client_id(make_relay: MakeRelay) -> None:
    relay = make_relay(ABLY_HOSTED)
    assert (await relay.authorize_channel("1.2", "presence-room", User(5)))["clientId"] == "5"  # type: ignore[arg-type]


async def test_an_integer_user_id_joins_presence_and_signs_in_on_the_emulator(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    socket = await subscriber(emulator)
    user = User(5, {"name": "Ann"})  # type: ignore[arg-type]
    joined = await socket.subscribe(
        "presence-room", await relay.authorize_channel(socket.socket_id, "presence-room", user)
    )
    assert json.loads(joined["data"])["presence"]["ids"] == ["5"]
    await socket.signin(await relay.authenticate_user(socket.socket_id, user))
    assert await relay.presence_members("presence-room") == [PresenceMember("5")]


# -- 3. whitespace around environment values; app ids a path cannot carry -------------------------------------------


async def test_environment_values_lose_the_whitespace_around_them(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    """A .env value's trailing space or a secret file's last newline was kept: "app-secret\\n" signed every request
    wrongly, refused at the first as a 401."""
    env = {
        "PUSHER_APP_ID": f" {APP_ID}\n",
        "PUSHER_KEY": f"{KEY} ",
        "PUSHER_SECRET": f"{SECRET}\n",
        "PUSHER_HOST": " 127.0.0.1",
        "PUSHER_PORT": f"{emulator.port}\n",
        "PUSHER_SCHEME": "http ",
    }
    config = from_env(env)
    assert (config.app_id, config.key, config.secret) == (APP_ID, KEY, SECRET)
    assert (await make_relay(config).publish("orders", "e", {"a": 1})).channels == ("orders",)

    ably = from_env({"ABLY_API_KEY": f"{emulator.app.ably_api_key}\r\n"})
    assert f"{ably.key}:{ably.secret}" == emulator.app.ably_api_key
    on_emulator = replace(ably, host="127.0.0.1", port=emulator.port, tls=False)
    assert (await make_relay(on_emulator).publish("orders", "e", {"a": 1})).channels == ("orders",)

    # Whitespace alone is no value: unset, as docker-compose's empty strings are
    assert from_env({"RELAY_URL": "\n", **env, "PUSHER_CLUSTER": " "}).base_url == f"http://127.0.0.1:{emulator.port}"


@pytest.mark.parametrize("app_id", ["1/2", "1 2", "a?b", "a#b", "50%", "1\t2"])
async def test_an_app_id_a_request_path_cannot_carry_is_refused(
    make_relay: MakeRelay, emulator: RunningEmulator, app_id: str
) -> None:
    """PUSHER_APP_ID=1/2 was taken: publishes went to /apps/1/2/events. Refused as the emulator refuses such an app
    id in its config file, when the configuration is made."""
    env = {"PUSHER_APP_ID": app_id, "PUSHER_KEY": KEY, "PUSHER_SECRET": SECRET, "PUSHER_HOST": "127.0.0.1"}
    with pytest.raises(ConfigError) as raised:
        from_env({**env, "PUSHER_PORT": str(emulator.port), "PUSHER_SCHEME": "http"})
    assert str(raised.value) == (
        f"PUSHER_APP_ID: app id {app_id!r} cannot be used: it goes in the request path /apps/APP_ID/…, so it is a "
        "non-empty id without '/', '?', '#', '%' or whitespace (hosted Pusher's are numbers: dashboard → App Keys)"
    )
    with pytest.raises(ConfigError, match="cannot be used: it goes in the request path"):
        ProviderConfig("emulator", KEY, SECRET, app_id, "127.0.0.1", emulator.port, False)


@pytest.mark.parametrize(
    "url",
    [
        "pusher://k:s@eu/apps/1 2",
        "pusher://k:s@eu/apps/1%202",
        "pusher://k:s@eu/apps/%2F",
        "emulator://k:s@127.0.0.1:6001/apps/a%3Fb",
        "emulator://k:s@127.0.0.1:6001/apps/a%23b",
        "emulator://k:s@127.0.0.1:6001/apps/a%25b",
    ],
)
def test_a_url_s_app_id_a_request_path_cannot_carry_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="cannot be used: it goes in the request path /apps/APP_ID/"):
        parse_url(url)
    with pytest.raises(ConfigError, match=r"^PUSHER_URL \(https://KEY:SECRET@HOST/apps/APP_ID\): app id "):
        from_env({"PUSHER_URL": f"https://{url.partition('://')[2]}"})


def test_app_ids_servers_use_are_taken() -> None:
    for app_id in ("1", "123456", "app-id", "my_app.v2", "ü"):
        assert parse_url(f"emulator://k:s@127.0.0.1:6001/apps/{app_id}").app_id == app_id


# -- 4. PUSHER_ENCRYPTION_MASTER_KEY_BASE64 beside a URL -----------------------------------------------------------


async def test_the_encryption_key_variable_applies_beside_pusher_url(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """Heroku's Pusher add-on sets PUSHER_URL, which has no place for the key; the key variable beside it was
    ignored, and an encrypted channel's auth then asked for ?encryption_master_key in the URL."""
    env = {
        "PUSHER_URL": f"http://{KEY}:{SECRET}@127.0.0.1:{emulator.port}/apps/{APP_ID}",
        "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY_B64,
    }
    assert from_env(env).encryption_master_key == MASTER_KEY
    relay = make_relay(from_env(env))
    socket = await subscriber(emulator)
    channel = "private-encrypted-orders"
    auth = await relay.authorize_channel(socket.socket_id, channel)
    await socket.subscribe(channel, auth)
    await relay.publish(channel, "order-ready", {"order": 42})
    sealed = json.loads((await socket.expect("order-ready", channel))["data"])
    box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
    opened = box.decrypt(base64.b64decode(sealed["ciphertext"]), base64.b64decode(sealed["nonce"]))
    assert json.loads(opened) == {"order": 42}


def test_the_encryption_key_variable_applies_beside_relay_url() -> None:
    env = {"PUSHER_ENCRYPTION_MASTER_KEY_BASE64": f"{MASTER_KEY_B64}\n"}
    assert from_env({**env, "RELAY_URL": "memory://keyed"}).encryption_master_key == MASTER_KEY
    same = f"pusher://k:s@eu/apps/1?encryption_master_key={MASTER_KEY_B64.replace('+', '%2B')}"
    assert from_env({**env, "RELAY_URL": same}).encryption_master_key == MASTER_KEY
    assert from_env({**env, "RELAY_URL": ABLY_HOSTED}).encryption_master_key is None  # Ably has no encrypted channels


def test_an_encryption_key_variable_that_differs_from_the_url_s_is_refused() -> None:
    other = base64.b64encode(bytes(32)).decode()
    env = {"PUSHER_ENCRYPTION_MASTER_KEY_BASE64": MASTER_KEY_B64}
    for name, url in (
        ("RELAY_URL", f"emulator://k:s@127.0.0.1:6001/apps/1?encryption_master_key={other}"),
        ("PUSHER_URL", f"https://k:s@api-eu.pusher.com/apps/1?encryption_master_key={other}"),
    ):
        with pytest.raises(ConfigError) as raised:
            from_env({**env, name: url})
        assert "encryption_master_key differs from PUSHER_ENCRYPTION_MASTER_KEY_BASE64: set the key in one place" in (
            str(raised.value)
        )
        assert MASTER_KEY_B64 not in str(raised.value) and other not in str(raised.value)
    with pytest.raises(
        ConfigError, match=r"^PUSHER_ENCRYPTION_MASTER_KEY_BASE64: encryption_master_key must decode to 32 bytes"
    ):
        from_env({"PUSHER_ENCRYPTION_MASTER_KEY_BASE64": "c2hvcnQ=", "PUSHER_URL": "https://k:s@eu.example/apps/1"})


# -- 5. Ably batches within its request size -----------------------------------------------------------------------


def events_of(count: int, data: str) -> list[tuple[Event, Payload]]:
    return [(Event("orders", "e", data), Payload.of(data)) for _ in range(count)]


@pytest.mark.parametrize(("count", "data"), [(30, "x" * 40_000), (12, "é" * 30_000), (3, "x" * 1_100_000)])
def test_an_ably_batch_is_split_by_its_request_size(count: int, data: str) -> None:
    """30 events of 40 KB, each within Ably's 64 KiB, went in one request of 1.2 MB, refused whole (413) by the
    emulator; over 2 MiB Ably refuses it. Non-ASCII data is counted as sent: escaped, 6 bytes a character. An event
    over the size goes alone (Ably says why it refuses it)."""
    adapter = AblyAdapter(parse_url(ABLY_HOSTED))
    events = events_of(count, data)
    parts = adapter.batch_parts(events)
    assert [event for part in parts for event in part] == events
    assert len(parts) > 1
    for part in parts:
        request = adapter.publish_batch(part).request
        assert request is not None
        assert len(request.body) <= MAX_BATCH_REQUEST_BYTES or len(part) == 1
        assert len(json.loads(request.body)) == len(part)


def test_an_ably_batch_of_small_events_is_split_by_count() -> None:
    adapter = AblyAdapter(parse_url(ABLY_HOSTED))
    assert [len(part) for part in adapter.batch_parts(events_of(250, "x"))] == [100, 100, 50]
    assert adapter.batch_parts([]) == []


def test_a_pusher_batch_is_split_by_count() -> None:
    for adapter in (PusherAdapter(parse_url("pusher://k:s@eu/apps/1")), MemoryAdapter(parse_url("memory://parts"))):
        assert [len(part) for part in adapter.batch_parts(events_of(25, "x" * 9_000))] == [10, 10, 5]


# -- 9a. Ably's presence channels listed with their user counts ----------------------------------------------------


async def test_ably_lists_presence_channels_with_their_user_counts_as_pusher_does(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    pusher = make_relay(emulator_url(emulator))
    for user_id in ("alice", "bob"):
        socket = await subscriber(emulator)
        await socket.subscribe(
            "presence-room", await pusher.authorize_channel(socket.socket_id, "presence-room", User(user_id))
        )
    await (await subscriber(emulator)).subscribe("orders")
    expected = {"presence-room": ChannelInfo("presence-room", True, None, 2)}
    assert await pusher.channels("presence-") == expected
    ably = make_relay(ably_url(emulator))
    assert await ably.channels("presence-") == expected
    assert await ably.channels("") == {name: ChannelInfo(name, True) for name in ("orders", "presence-room")}


# -- 9b. Ably webhooks replayed ------------------------------------------------------------------------------------


def ably_webhook(*timestamps: object) -> tuple[dict[str, str], bytes]:
    items: list[dict[str, Any]] = []
    for timestamp in timestamps:
        item: dict[str, Any] = {"name": "channel.opened", "data": {"channelId": "orders"}}
        if timestamp is not None:
            item["timestamp"] = timestamp
        items.append(item)
    body = json.dumps({"items": items}).encode()
    signature = base64.b64encode(hmac.new(b"ably-secret", body, hashlib.sha256).digest()).decode()
    return {"X-Ably-Key": "appid.keyid", "X-Ably-Signature": signature}, body


async def test_an_ably_webhook_out_of_the_window_is_refused_as_pusher_s_are(make_relay: MakeRelay) -> None:
    """A signed Ably webhook of 1970 verified: one seen once could be sent again at any time. As Pusher's (and
    pusher-http-python's validate_webhook), a body whose newest item is over 300 s from now is refused."""
    relay = make_relay(ABLY_HOSTED)
    now_ms = int(time.time() * 1000)
    for stale in (1000, now_ms - 301_000, now_ms + 301_000):
        with pytest.raises(StaleTimestamp) as raised:
            await relay.verify_webhook(*ably_webhook(stale))
        assert "s from now; over 300 s is a replay (or a clock to fix)" in str(raised.value)
        assert isinstance(raised.value, AuthenticationError) and raised.value.http_status == 401
    # the newest item counts: a batch gathers items of the last second or so
    events = await relay.verify_webhook(*ably_webhook(now_ms - 400_000, now_ms - 290_000, now_ms + 290_000))
    assert [event.time_ms for event in events] == [now_ms - 400_000, now_ms - 290_000, now_ms + 290_000]
    assert await relay.verify_webhook(*ably_webhook()) == []
    with pytest.raises(ProtocolError, match=r"^Ably webhook items have no timestamp"):
        await relay.verify_webhook(*ably_webhook(None))
    for unstamped, shown in ((str(now_ms), "a string"), (True, "a boolean"), (now_ms + 0.5, repr(now_ms + 0.5))):
        with pytest.raises(ProtocolError) as refused:
            await relay.verify_webhook(*ably_webhook(now_ms, unstamped))
        assert str(refused.value) == (
            f"Ably webhook items[1].timestamp must be a whole number of milliseconds since 1970, not {shown}"
        )

    sent = {"name": "e", "data": "x", "timestamp": str(now_ms)}
    item = {"name": "channel.message", "timestamp": now_ms, "data": {"channelId": "orders", "messages": [sent]}}
    body = json.dumps({"items": [item]}).encode()
    signature = base64.b64encode(hmac.new(b"ably-secret", body, hashlib.sha256).digest()).decode()
    with pytest.raises(ProtocolError) as refused:
        await relay.verify_webhook({"X-Ably-Key": "appid.keyid", "X-Ably-Signature": signature}, body)
    assert str(refused.value) == (
        "Ably webhook items[0] message.timestamp must be a whole number of milliseconds since 1970, not a string"
    )


def test_a_replay_a_fraction_of_a_second_over_the_window_is_not_said_to_be_within_it() -> None:
    """The distance from now was cut to whole seconds: 300.4 s over a 300 s window read "300 s from now; over
    300 s". It is rounded up, to the millisecond."""
    refuse_replayed_webhook("webhook time_ms", 1_000, 301.0)
    refuse_replayed_webhook("webhook time_ms", 601_000, 301.0)
    for time_ms, now, shown in ((0, 300.0004, "300.001"), (0, 300.4, "300.4"), (2_000_000, 1_000.0, "1000.0")):
        with pytest.raises(StaleTimestamp) as refused:
            refuse_replayed_webhook("webhook time_ms", time_ms, now)
        assert (
            str(refused.value) == f"webhook time_ms is {shown} s from now; over 300 s is a replay (or a clock to fix)"
        )


# -- 11. Pusher request paths as the official SDKs send them -------------------------------------------------------

HOSTED_KEY, HOSTED_SECRET = "hosted-key", "hosted-Secret-1"
HOSTED = f"pusher://{HOSTED_KEY}:{HOSTED_SECRET}@eu/apps/123"


def signed_as_sent(method: str, raw_path: bytes, query: dict[str, str]) -> str:
    """The signature of a request over the path exactly as it was sent (Pusher's signing, the official package's)."""
    unsigned = {name: value for name, value in query.items() if name != "auth_signature"}
    signature: str = sign(HOSTED_SECRET, "\n".join([method, raw_path.decode("ascii"), make_query_string(unsigned)]))
    return signature


@pytest.mark.parametrize("channel", ["private-a=b@c,d;e", "presence-x=1;y@z,w"])
async def test_pusher_paths_carry_what_the_official_sdks_send_unencoded(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, channel: str
) -> None:
    """'=', '@', ',' and ';' were percent-encoded in the path while the decoded path was signed: pusher-http-python
    and pusher-http-node send them as they are, and a server verifying the path it received would refuse Relay's."""
    route = respx_mock.route(host="api-eu.pusher.com").respond(200, json={"occupied": False, "users": []})
    relay = make_relay(HOSTED)
    await relay.channel(channel)
    official = PusherClient(app_id="123", key=HOSTED_KEY, secret=HOSTED_SECRET, cluster="eu")
    queried = official.channel_info.make_request(channel, ["subscription_count"]).path
    paths = [queried]
    if channel.startswith("presence-"):
        await relay.presence_members(channel)
        paths.append(official.users_info.make_request(channel).path)
    for call, path in zip(route.calls, paths, strict=True):
        request = call.request
        assert request.url.raw_path.partition(b"?")[0] == path.encode()
        query = dict(request.url.params.multi_items())
        assert query["auth_signature"] == signed_as_sent("GET", path.encode(), query)


async def test_a_user_id_is_sent_and_signed_as_pusher_http_node_sends_it(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """pusher-http-node puts the user id in the path as it is ('auth0|123'; its fetch encodes only what a URL cannot
    hold, a space among them, after signing the unencoded path)."""
    route = respx_mock.route(host="api-eu.pusher.com").respond(200, json={})
    relay = make_relay(HOSTED)
    await relay.terminate_user_connections("auth0|123=a@b,c;d:e")
    await relay.terminate_user_connections("ann lee")
    sent, spaced = (call.request for call in route.calls)
    assert sent.url.raw_path.partition(b"?")[0] == b"/apps/123/users/auth0|123=a@b,c;d:e/terminate_connections"
    query = dict(sent.url.params.multi_items())
    assert query["auth_signature"] == signed_as_sent("POST", sent.url.raw_path.partition(b"?")[0], query)
    assert spaced.url.raw_path.partition(b"?")[0] == b"/apps/123/users/ann%20lee/terminate_connections"
    query = dict(spaced.url.params.multi_items())
    assert query["auth_signature"] == signed_as_sent("POST", b"/apps/123/users/ann lee/terminate_connections", query)


async def test_the_emulator_takes_those_paths(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    relay = make_relay(emulator_url(emulator))
    socket = await subscriber(emulator)
    channel, user = "presence-x=1;y@z,w", User("auth0|7")
    await socket.subscribe(channel, await relay.authorize_channel(socket.socket_id, channel, user))
    await socket.signin(await relay.authenticate_user(socket.socket_id, user))
    assert await relay.channel(channel) == ChannelInfo(channel, True, None, 1)
    assert await relay.presence_members(channel) == [PresenceMember("auth0|7")]
    await relay.terminate_user_connections("auth0|7")
    assert await socket.closed() == 4009
