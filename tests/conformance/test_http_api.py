"""The Pusher HTTP API against a real emulator (checklist §8 items 54–56, 60–80, 92).

Two kinds of caller: the official pusher-http-python client (blocking, so run in a thread while the emulator serves
in this loop) and raw httpx requests signed with ``relay.protocol.signing.sign_rest_request``, for everything a
client library would refuse to send. Real WebSocket subscribers observe what each request delivered, and every
failing request is followed by one that succeeds, to show the server kept serving.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import nacl.secret
import pusher  # type: ignore[import-untyped]
import pytest
from pusher.errors import PusherBadRequest  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay.emulator.config import App
from relay.protocol.signing import channel_auth, sign_rest_request
from tests.conformance.wsclient import Socket, established, official_client

if TYPE_CHECKING:
    from conftest import RunningEmulator, StartEmulator

APP = App(app_id="1", key="app-key", secret="app-secret")
DOCS_KEY = "278d425bdf160c739803"
DOCS_SECRET = "7ad3773142a6692b25b8"
DOCS_TIMESTAMP = 1353088179
DOCS_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
MASTER_KEY = bytes(range(32))

Pairs = list[tuple[str, str]]


# -- WebSocket subscribers ------------------------------------------------------------------------------------


@dataclass
class Subscriber(Socket):
    """One real WebSocket connection speaking Pusher protocol 7."""

    app: App

    async def silent(self, seconds: float = 0.15) -> None:
        """Nothing arrives within ``seconds``."""
        try:
            frame = await asyncio.wait_for(self.ws.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame!r}")

    async def roundtrip(self) -> None:
        """A ping answered by a pong: the server processed everything sent before it and the socket is open."""
        await self.send("pusher:ping", {})
        assert (await self.recv())["event"] == "pusher:pong"

    async def subscribe(
        self, channel: str, *, user_id: str | None = None, user_info: object = None, auth: str | None = None
    ) -> dict[str, Any]:
        data: dict[str, object] = {"channel": channel}
        channel_data = None
        if user_id is not None:
            channel_data = json.dumps({"user_id": user_id, "user_info": user_info or {}})
            data["channel_data"] = channel_data
        if auth is None and channel.startswith(("private-", "presence-")):
            auth = channel_auth(self.app.key, self.app.secret, self.socket_id, channel, channel_data)
        if auth is not None:
            data["auth"] = auth
        await self.send("pusher:subscribe", data)
        frame = await self.recv()
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        assert frame["channel"] == channel
        return frame

    async def expect_event(self, event: str, channel: str, data: str) -> None:
        assert await self.recv() == {"event": event, "channel": channel, "data": data}


OpenSubscriber = Callable[..., Awaitable[Subscriber]]


@pytest.fixture
async def open_ws(start_emulator: StartEmulator) -> AsyncIterator[OpenSubscriber]:
    """``await open_ws(emulator)``: a connected subscriber, closed before its emulator stops."""
    opened: list[ClientConnection] = []

    async def open_(emulator: RunningEmulator, url: str | None = None) -> Subscriber:
        ws = await connect(url or emulator.ws_url())
        opened.append(ws)
        return Subscriber(ws, (await established(ws))["socket_id"], emulator.app)

    yield open_
    for ws in opened:
        await ws.close()


# -- HTTP callers -------------------------------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def signed(
    http: httpx.AsyncClient,
    emulator: RunningEmulator,
    method: str,
    path: str,
    *,
    body: object = None,
    params: Mapping[str, str] | None = None,
    key: str | None = None,
    secret: str | None = None,
    timestamp: int | None = None,
    signed_body: bytes | None = None,
    signed_path: str | None = None,
    edit: Callable[[Pairs], Pairs] | None = None,
) -> httpx.Response:
    """A request signed like pusher-http-node signs it; ``edit`` tampers with the signed query pairs."""
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    query = sign_rest_request(
        key or emulator.app.key,
        secret or emulator.app.secret,
        method,
        signed_path or path,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        body=raw if signed_body is None else signed_body,
        params=params,
    )
    pairs = list(query.items())
    if edit is not None:
        pairs = edit(pairs)
    headers = {"Content-Type": "application/json"} if raw else {}
    return await http.request(method, emulator.http_url + path, params=pairs, content=raw or None, headers=headers)


def assert_json(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def assert_error(response: httpx.Response, status: int, fragment: str) -> None:
    """Item 63/75: every error is a JSON object ``{"error": message}`` naming the problem."""
    body = assert_json(response, status)
    assert set(body) == {"error"}, body
    assert fragment in body["error"], body["error"]


async def assert_still_serves(http: httpx.AsyncClient, emulator: RunningEmulator, sub: Subscriber) -> None:
    """A good publish after a bad request still answers ``{}`` and reaches the subscriber of ``room``."""
    response = await signed(http, emulator, "POST", "/apps/1/events", body=event_body(data="still-serving"))
    assert assert_json(response) == {}
    await sub.expect_event("e", "room", "still-serving")


def event_body(channels: Iterable[str] = ("room",), name: str = "e", data: object = "x", **extra: object) -> dict:
    return {"name": name, "channels": list(channels), "data": data, **extra}


@pytest.fixture
async def room(emulator: RunningEmulator, open_ws: OpenSubscriber) -> Subscriber:
    """A subscriber of the public channel ``room``."""
    sub = await open_ws(emulator)
    await sub.subscribe("room")
    return sub


# -- pusher-http-python ---------------------------------------------------------------------------------------


async def test_trigger_single_and_multi_channel_data_verbatim(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    """Items 65, 92: ``trigger`` answers ``{}``; subscribers get ``{event,channel,data}`` with the string as sent."""
    client = official_client(emulator)
    news, sport = await open_ws(emulator), await open_ws(emulator)
    await news.subscribe("news")
    await sport.subscribe("sport")

    assert await asyncio.to_thread(client.trigger, ["news", "sport"], "my-event", '{"some":"data"}') == {}
    await news.expect_event("my-event", "news", '{"some":"data"}')
    await sport.expect_event("my-event", "sport", '{"some":"data"}')

    assert await asyncio.to_thread(client.trigger, "news", "other", {"n": 1, "s": "é"}) == {}
    await news.expect_event("other", "news", json.dumps({"n": 1, "s": "é"}, ensure_ascii=False))
    await sport.silent()


async def test_a_channel_named_twice_in_one_trigger_hears_the_event_once(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    client = official_client(emulator)
    sub = await open_ws(emulator)
    await sub.subscribe("news")
    await asyncio.to_thread(client.trigger, ["news", "news"], "headline", "1")
    await sub.expect_event("headline", "news", "1")
    await sub.silent()


async def test_trigger_socket_id_excludes_exactly_that_connection(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    """Item 66: ``socket_id`` keeps the event from that connection only; the excluded one still gets later events."""
    client = official_client(emulator)
    sender, other = await open_ws(emulator), await open_ws(emulator)
    await sender.subscribe("room")
    await other.subscribe("room")

    await asyncio.to_thread(client.trigger, "room", "to-others", "1", sender.socket_id)
    await other.expect_event("to-others", "room", "1")
    await sender.silent()

    await asyncio.to_thread(client.trigger, "room", "to-all", "2")
    await sender.expect_event("to-all", "room", "2")
    await other.expect_event("to-all", "room", "2")


async def test_trigger_batch_delivers_every_event_in_order(emulator: RunningEmulator, open_ws: OpenSubscriber) -> None:
    """Items 69, 92: ``trigger_batch`` answers ``{}``; the events arrive in batch order, object data encoded once."""
    client = official_client(emulator)
    sub = await open_ws(emulator)
    await sub.subscribe("a")
    await sub.subscribe("b")
    batch = [
        {"channel": "a", "name": "first", "data": "1"},
        {"channel": "b", "name": "second", "data": {"k": "v"}},
        {"channel": "a", "name": "third", "data": "3"},
    ]
    assert await asyncio.to_thread(client.trigger_batch, batch) == {}
    await sub.expect_event("first", "a", "1")
    await sub.expect_event("second", "b", json.dumps({"k": "v"}))
    await sub.expect_event("third", "a", "3")


async def _presence_room(emulator: RunningEmulator, open_ws: OpenSubscriber) -> list[Subscriber]:
    """``presence-room`` with user 1 on two connections and user 2 on one; ``public-a`` and ``private-b`` occupied."""
    one_a, one_b, two = await open_ws(emulator), await open_ws(emulator), await open_ws(emulator)
    await one_a.subscribe("presence-room", user_id="1", user_info={"name": "Ann"})
    await one_b.subscribe("presence-room", user_id="1", user_info={"name": "Ann"})  # same user: no member_added
    await two.subscribe("presence-room", user_id="2")
    for sub in (one_a, one_b):
        assert (await sub.recv())["event"] == "pusher_internal:member_added"
    await one_a.subscribe("public-a")
    await two.subscribe("private-b")
    return [one_a, one_b, two]


async def test_channels_info_lists_occupied_channels(emulator: RunningEmulator, open_ws: OpenSubscriber) -> None:
    """Items 71, 72, 92: occupied channels only, ``filter_by_prefix``, ``user_count`` only with a presence- prefix."""
    client = official_client(emulator)
    subs = await _presence_room(emulator, open_ws)
    await subs[2].subscribe("left")
    await subs[2].send("pusher:unsubscribe", {"channel": "left"})
    await subs[2].roundtrip()

    everything = await asyncio.to_thread(client.channels_info)
    assert everything == {"channels": {"presence-room": {}, "public-a": {}, "private-b": {}}}
    presence = await asyncio.to_thread(client.channels_info, "presence-", ["user_count"])
    assert presence == {"channels": {"presence-room": {"user_count": 2}}}
    assert set((await asyncio.to_thread(client.channels_info, "pr"))["channels"]) == {"presence-room", "private-b"}
    assert await asyncio.to_thread(client.channels_info, "nothing-") == {"channels": {}}

    with pytest.raises(PusherBadRequest, match="user_count may only be requested for presence channels"):
        await asyncio.to_thread(client.channels_info, None, ["user_count"])
    with pytest.raises(PusherBadRequest, match="please supply filter_by_prefix beginning with presence-"):
        await asyncio.to_thread(client.channels_info, "public-", ["user_count"])
    assert (await asyncio.to_thread(client.channels_info, "public-"))["channels"] == {"public-a": {}}


async def test_channel_info_reports_occupancy_and_counts(
    start_emulator: StartEmulator, open_ws: OpenSubscriber
) -> None:
    """Items 73, 92: ``occupied`` always; ``user_count`` counts users (presence only), subscription_count sockets
    (on an app that counts them)."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    client = official_client(emulator)
    await _presence_room(emulator, open_ws)

    info = await asyncio.to_thread(client.channel_info, "presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
    assert await asyncio.to_thread(client.channel_info, "public-a", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 1,
    }
    assert await asyncio.to_thread(client.channel_info, "private-b") == {"occupied": True}
    assert await asyncio.to_thread(client.channel_info, "empty") == {"occupied": False}
    with pytest.raises(PusherBadRequest, match="Cannot retrieve the user count unless the channel is a presence"):
        await asyncio.to_thread(client.channel_info, "public-a", ["user_count"])
    assert (await asyncio.to_thread(client.channel_info, "public-a"))["occupied"] is True


async def test_users_info_is_a_signed_get_with_body_md5(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, open_ws: OpenSubscriber
) -> None:
    """Items 62, 74, 92: pusher-http-python signs ``body_md5`` of the empty body on GET; users are unique ids. A
    users query on a non-presence channel is a 400, after which the server still serves."""
    client = official_client(emulator)
    request = client._pusher_client.users_info.make_request("presence-room")
    assert request.method == "GET"
    assert request.query_params["body_md5"] == "d41d8cd98f00b204e9800998ecf8427e"
    await _presence_room(emulator, open_ws)

    users = await asyncio.to_thread(client.users_info, "presence-room")
    assert sorted(users["users"], key=lambda user: user["id"]) == [{"id": "1"}, {"id": "2"}]
    assert await asyncio.to_thread(client.users_info, "presence-empty") == {"users": []}
    with pytest.raises(PusherBadRequest, match="users may only be requested for presence channels"):
        await asyncio.to_thread(client.users_info, "public-a")
    await assert_still_serves(http, emulator, room)


async def _sign_in(client: Any, sub: Subscriber, user_id: str) -> None:
    """Sign ``sub`` in with the body pusher-http-python's ``authenticate_user`` returns (item 49)."""
    body = await asyncio.to_thread(client.authenticate_user, sub.socket_id, {"id": user_id, "user_info": {"n": 1}})
    await sub.send("pusher:signin", body)
    frame = await sub.recv()
    assert frame == {"event": "pusher:signin_success", "data": {"user_data": body["user_data"]}}


async def test_send_to_user_reaches_every_connection_of_that_user(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    """Items 54, 92: ``send_to_user`` publishes on ``#server-to-user-{id}``; only that user's connections get it."""
    client = official_client(emulator)
    first, second, someone_else, anonymous = [await open_ws(emulator) for _ in range(4)]
    await _sign_in(client, first, "42")
    await _sign_in(client, second, "42")
    await _sign_in(client, someone_else, "7")

    assert await asyncio.to_thread(client.send_to_user, "42", "notify", {"x": 1}) == {}
    await first.expect_event("notify", "#server-to-user-42", '{"x": 1}')
    await second.expect_event("notify", "#server-to-user-42", '{"x": 1}')
    await someone_else.silent()
    await anonymous.silent(0.01)


async def test_terminate_user_connections_through_the_python_alias_path(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    """Items 55, 56, 92: pusher-http-python posts to ``/users/{id}/terminate_connections`` (no ``/apps/{id}``); the
    app is found by ``auth_key``, every connection of the user gets 4009 and closes 4009, others stay."""
    client = official_client(emulator)
    request = client._pusher_client.terminate_user_connections.make_request("42")
    assert (request.method, request.path) == ("POST", "/users/42/terminate_connections")
    first, second, other = [await open_ws(emulator) for _ in range(3)]
    await _sign_in(client, first, "42")
    await _sign_in(client, second, "42")
    await _sign_in(client, other, "7")

    assert await asyncio.to_thread(client.terminate_user_connections, "42") == {}
    for sub in (first, second):
        frame = await sub.recv()
        assert frame["event"] == "pusher:error"
        assert frame["data"]["code"] == 4009
        with pytest.raises(ConnectionClosed) as closed:
            await sub.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4009
    await other.roundtrip()
    assert await asyncio.to_thread(client.terminate_user_connections, "nobody") == {}


async def test_authenticate_bodies_are_accepted_on_a_real_socket(
    emulator: RunningEmulator, open_ws: OpenSubscriber
) -> None:
    """Items 24, 26, 34, 78, 92: ``authenticate`` bodies subscribe private, presence and encrypted channels; an
    encrypted publish reaches the subscriber byte for byte and opens with the returned ``shared_secret``."""
    client = official_client(emulator, encryption_master_key_base64=base64.b64encode(MASTER_KEY).decode())
    sub = await open_ws(emulator)

    private = await asyncio.to_thread(client.authenticate, "private-x", sub.socket_id)
    await sub.subscribe("private-x", auth=private["auth"])

    member = {"user_id": "5", "user_info": {"name": "Ann"}}
    presence = await asyncio.to_thread(client.authenticate, "presence-x", sub.socket_id, member)
    await sub.send(
        "pusher:subscribe",
        {"channel": "presence-x", "auth": presence["auth"], "channel_data": presence["channel_data"]},
    )
    joined = await sub.recv()
    assert joined["event"] == "pusher_internal:subscription_succeeded"
    assert json.loads(joined["data"]) == {"presence": {"ids": ["5"], "hash": {"5": {"name": "Ann"}}, "count": 1}}

    encrypted = await asyncio.to_thread(client.authenticate, "private-encrypted-x", sub.socket_id)
    await sub.subscribe("private-encrypted-x", auth=encrypted["auth"])
    await asyncio.to_thread(client.trigger, "private-encrypted-x", "secret", {"msg": "hi"})
    frame = await sub.recv()
    assert (frame["event"], frame["channel"]) == ("secret", "private-encrypted-x")
    envelope = json.loads(frame["data"])
    box = nacl.secret.SecretBox(base64.b64decode(encrypted["shared_secret"]))
    plain = box.decrypt(base64.b64decode(envelope["ciphertext"]), base64.b64decode(envelope["nonce"]))
    assert json.loads(plain) == {"msg": "hi"}

    forged = pusher.Pusher(app_id="1", key="app-key", secret="not-the-secret").authenticate("private-y", sub.socket_id)
    await sub.send("pusher:subscribe", {"channel": "private-y", "auth": forged["auth"]})
    refused = await sub.recv()
    assert refused["event"] == "pusher:subscription_error"
    assert refused["data"]["status"] == 401
    await sub.roundtrip()


# -- signing: the docs' vectors and the 600 s window ----------------------------------------------------------


async def test_docs_worked_example(start_emulator: StartEmulator, open_ws: OpenSubscriber) -> None:
    """Items 60, 61, 62: the docs' vectors come out of ``sign_rest_request``; the docs' request itself is now stale
    (401), and the same request signed now is accepted and delivers ``data`` verbatim."""
    app = App(app_id="3", key=DOCS_KEY, secret=DOCS_SECRET)
    emulator = await start_emulator(app=app)
    docs = sign_rest_request(DOCS_KEY, DOCS_SECRET, "POST", "/apps/3/events", timestamp=DOCS_TIMESTAMP, body=DOCS_BODY)
    assert docs["body_md5"] == "ec365a775a4cd0599faeb73354201b6f"
    assert docs["auth_signature"] == "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    get_params = {"filter_by_prefix": "presence-", "info": "user_count"}
    get_vector = sign_rest_request(
        DOCS_KEY,
        DOCS_SECRET,
        "GET",
        "/apps/3/channels",
        timestamp=DOCS_TIMESTAMP,
        params=get_params,
        include_empty_body_md5=True,
    )
    assert get_vector["auth_signature"] == "f3f17c61ae491cc9085db68b22076e9b772e3bcb301659d655153ee3f9782aba"

    sub = await open_ws(emulator)
    await sub.subscribe("project-3")
    async with httpx.AsyncClient(timeout=5.0) as http:
        stale = await http.post(emulator.http_url + "/apps/3/events", params=docs, content=DOCS_BODY)
        assert_error(stale, 401, "auth_timestamp")
        await sub.silent()

        response = await signed(http, emulator, "POST", "/apps/3/events", body=DOCS_BODY)
        assert assert_json(response) == {}
        await sub.expect_event("foo", "project-3", '{"some":"data"}')

        fresh_get = sign_rest_request(
            DOCS_KEY,
            DOCS_SECRET,
            "GET",
            "/apps/3/channels",
            timestamp=int(time.time()),
            params=get_params,
            include_empty_body_md5=True,
        )
        assert assert_json(await http.get(emulator.http_url + "/apps/3/channels", params=fresh_get)) == {"channels": {}}


async def test_signature_covers_lowercased_keys_and_unescaped_values(
    emulator: RunningEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """Item 61: keys lowercased and sorted, values signed unescaped though they travel percent-encoded."""
    sub = await open_ws(emulator)
    await sub.subscribe("presence-r@om,;=", user_id="1")
    params = {"Filter_By_Prefix": "presence-r@om,;=", "INFO": "user_count"}
    response = await signed(http, emulator, "GET", "/apps/1/channels", params=params)
    assert "%40" in str(response.request.url)
    assert assert_json(response) == {"channels": {"presence-r@om,;=": {"user_count": 1}}}


def _flip_signature(pairs: Pairs) -> Pairs:
    return [(k, (v[:-1] + ("0" if v[-1] != "0" else "1")) if k == "auth_signature" else v) for k, v in pairs]


def _drop(*names: str) -> Callable[[Pairs], Pairs]:
    return lambda pairs: [(k, v) for k, v in pairs if k not in names]


def _set(name: str, value: str) -> Callable[[Pairs], Pairs]:
    return lambda pairs: [(k, value if k == name else v) for k, v in pairs]


def _duplicate(name: str) -> Callable[[Pairs], Pairs]:
    return lambda pairs: [*pairs, next((k, v) for k, v in pairs if k == name)]


AUTH_FAILURES: list[Any] = [
    pytest.param({"edit": _flip_signature}, "invalid auth_signature", id="bad-signature"),
    pytest.param({"secret": "wrong-secret"}, "invalid auth_signature", id="wrong-secret"),
    pytest.param({"key": "other-key"}, "auth_key is not this application's key", id="wrong-auth-key"),
    pytest.param({"timestamp_offset": -601}, "the window is 600 s", id="timestamp-601s-old"),
    pytest.param({"timestamp_offset": 601}, "the window is 600 s", id="timestamp-601s-ahead"),
    pytest.param({"signed_body": b'{"other":1}'}, "body_md5 does not match", id="body-md5-mismatch"),
    pytest.param({"edit": _drop("body_md5")}, "body_md5 is required", id="body-md5-missing"),
    pytest.param({"edit": _drop("auth_signature")}, "missing authentication parameters: auth_signature", id="no-sig"),
    pytest.param(
        {"edit": _drop("auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5")},
        "missing authentication parameters: auth_key, auth_timestamp, auth_version, auth_signature",
        id="no-auth-params",
    ),
    pytest.param({"edit": _duplicate("auth_key")}, "'auth_key' is given more than once", id="duplicated-auth-key"),
    pytest.param({"edit": _duplicate("auth_signature")}, "'auth_signature' is given more than once", id="dup-sig"),
    pytest.param({"edit": _set("auth_version", "2.0")}, "auth_version must be 1.0", id="auth-version"),
    pytest.param({"edit": _set("auth_timestamp", "soon")}, "auth_timestamp must be whole seconds", id="bad-timestamp"),
]


@pytest.mark.parametrize(("tamper", "fragment"), AUTH_FAILURES)
async def test_unauthenticated_requests_get_401(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, tamper: dict[str, Any], fragment: str
) -> None:
    """Item 63: each authentication failure is a 401 whose JSON body names the problem; nothing is delivered and
    the next good request on the same client is served."""
    options = dict(tamper)
    offset = options.pop("timestamp_offset", None)
    if offset is not None:
        now = time.time()
        options["timestamp"] = math.floor(now) + offset if offset < 0 else math.ceil(now) + offset
    response = await signed(http, emulator, "POST", "/apps/1/events", body=event_body(), **options)
    assert_error(response, 401, fragment)
    await room.silent()
    await assert_still_serves(http, emulator, room)


@pytest.mark.parametrize("offset", [-599, 599])
async def test_timestamp_within_600_seconds_is_accepted(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, offset: int
) -> None:
    """Item 63: the window is ±600 s of the server's wall clock, so 599 s either way is accepted."""
    now = time.time()
    timestamp = math.ceil(now) + offset if offset < 0 else math.floor(now) + offset
    response = await signed(http, emulator, "POST", "/apps/1/events", body=event_body(data="ok"), timestamp=timestamp)
    assert assert_json(response) == {}
    await room.expect_event("e", "room", "ok")


# -- routing ------------------------------------------------------------------------------------------------------


async def test_unknown_app_route_and_method(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber
) -> None:
    """Items 64, 75: unknown app or route → 404, wrong method → 405, the WebSocket path over plain HTTP → 426;
    all JSON."""
    assert_error(await signed(http, emulator, "POST", "/apps/999/events", body=event_body()), 404, "unknown app id")
    assert_error(await signed(http, emulator, "GET", "/apps/1/nothing"), 404, "no route for GET /apps/1/nothing")
    doubled = await signed(http, emulator, "POST", "//apps/1/events", body=event_body())  # a path, not a host
    assert_error(doubled, 404, "no route for POST //apps/1/events")
    assert_error(await http.get(emulator.http_url + "/favicon.ico"), 404, "no route")
    assert_error(await http.get(emulator.http_url + "/apps/1/channels/a/b/c"), 404, "no route")
    assert_error(await signed(http, emulator, "GET", "/apps/1/events"), 405, "/apps/1/events accepts POST only")
    assert_error(await signed(http, emulator, "POST", "/apps/1/channels", body={}), 405, "accepts GET, HEAD only")
    alias = await signed(http, emulator, "POST", "/users/42/terminate_connections", body={}, key="nobody")
    assert_error(alias, 401, "unknown auth_key")  # the key names the app there: pusher's SDKs raise their auth error
    assert_error(await http.get(emulator.http_url + "/app/app-key"), 426, "WebSocket endpoint")
    await room.silent(0.01)
    await assert_still_serves(http, emulator, room)


async def test_disabled_app_gets_403(start_emulator: StartEmulator, http: httpx.AsyncClient) -> None:
    """Item 80: a disabled app's correctly signed requests are refused with 403; its neighbour still works."""
    disabled = await start_emulator(app=replace(APP, enabled=False), apps=(App("2", "key-2", "secret-2"),))
    assert_error(await signed(http, disabled, "POST", "/apps/1/events", body=event_body()), 403, "disabled")
    assert_error(await signed(http, disabled, "GET", "/apps/1/channels"), 403, "disabled")
    assert_error(await signed(http, disabled, "GET", "/apps/1/channels", secret="bad"), 401, "auth_signature")
    other = await signed(http, disabled, "GET", "/apps/2/channels", key="key-2", secret="secret-2")
    assert assert_json(other) == {"channels": {}}


async def test_path_prefix(start_emulator: StartEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber) -> None:
    """Item 3: under ``path_prefix`` the API answers at the prefixed path, signed over the full path as a client
    behind a proxy signs it (or over the path without the prefix); the bare path is 404."""
    emulator = await start_emulator(path_prefix="/pusher")
    sub = await open_ws(emulator, f"ws://127.0.0.1:{emulator.port}/pusher/app/app-key?protocol=7")
    await sub.subscribe("room")

    full = await signed(http, emulator, "POST", "/pusher/apps/1/events", body=event_body(data="full"))
    assert assert_json(full) == {}
    await sub.expect_event("e", "room", "full")
    stripped = await signed(
        http, emulator, "POST", "/pusher/apps/1/events", body=event_body(data="bare"), signed_path="/apps/1/events"
    )
    assert assert_json(stripped) == {}
    await sub.expect_event("e", "room", "bare")
    assert_error(await signed(http, emulator, "POST", "/apps/1/events", body=event_body()), 404, "no route")
    channels = await signed(http, emulator, "GET", "/pusher/apps/1/channels")
    assert assert_json(channels) == {"channels": {"room": {}}}
    await sub.silent(0.01)


# -- request validation ---------------------------------------------------------------------------------------

EVENT_ERRORS: list[Any] = [
    pytest.param({"channels": ["room"], "data": "x"}, 400, "event name must be a non-empty string", id="no-name"),
    pytest.param(event_body(name=""), 400, "event name must be a non-empty string", id="empty-name"),
    pytest.param(event_body(name="n" * 201), 400, "event name is 201 characters long", id="long-name"),
    pytest.param({"name": "e", "channels": ["room"]}, 400, "data is required", id="no-data"),
    pytest.param({"name": "e", "data": "x"}, 400, "an event needs channels (a list) or channel", id="no-channels"),
    pytest.param(event_body(channels=[]), 400, "channels must be a non-empty list", id="empty-channels"),
    pytest.param({"name": "e", "channels": "room", "data": "x"}, 400, "channels must be a non-empty list", id="str"),
    pytest.param(
        event_body(channels=["room", *(f"c{i}" for i in range(100))]),
        400,
        "101 channels given; the limit is 100",
        id="101-channels",
    ),
    pytest.param(event_body(channels=["room", "bad channel!"]), 400, "has characters outside", id="bad-channel"),
    pytest.param(event_body(channels=["c" * 201]), 400, "201 characters long; the limit is 200", id="long-channel"),
    pytest.param(event_body(channels=["room", 5]), 400, "channel name must be a non-empty string", id="int-channel"),
    pytest.param(event_body(socket_id="abc"), 400, "invalid socket_id 'abc'", id="bad-socket-id"),
    pytest.param(event_body(socket_id="1.2.3"), 400, "invalid socket_id", id="bad-socket-id-2"),
    pytest.param(event_body(info="nonsense"), 400, "unknown info attribute(s): nonsense", id="bad-info"),
    pytest.param(event_body(data="x" * 10_241), 413, "data is 10241 bytes; the limit is 10240", id="data-10kb+1"),
    pytest.param(event_body(data="é" * 5_121), 413, "data is 10242 bytes", id="data-counted-in-utf8-bytes"),
]


@pytest.mark.parametrize(("body", "status", "fragment"), EVENT_ERRORS)
async def test_invalid_events_are_refused(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, body: object, status: int, fragment: str
) -> None:
    """Items 67, 75: missing or bad fields → 400, data over 10 KB → 413, with the reason; nothing is delivered."""
    assert_error(await signed(http, emulator, "POST", "/apps/1/events", body=body), status, fragment)
    await room.silent()
    await assert_still_serves(http, emulator, room)


async def test_limits_are_inclusive(emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber) -> None:
    """Item 67: exactly 10 KB of data, 100 channels and a 200-character name are accepted."""
    body = event_body(channels=["room", *(f"c{i}" for i in range(99))], name="n" * 200, data="x" * 10_240)
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {}
    await room.expect_event("n" * 200, "room", "x" * 10_240)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"name":"e",', "the request body is not valid JSON"),
        (b"\xff\xfe", "the request body is not valid JSON"),
        (b"[1, 2]", "the request body must be a JSON object"),
        (b'"text"', "the request body must be a JSON object"),
        (b"null", "the request body must be a JSON object"),
        (b'{"name":"e","channels":["room"],"data":"\\ud800"}', "lone UTF-16 surrogate"),
    ],
    ids=["truncated", "binary", "list", "string", "null", "lone-surrogate"],
)
async def test_malformed_json_body_is_400(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, raw: bytes, fragment: str
) -> None:
    """Item 67: a body that is not a JSON object → 400 (signed correctly, so it is the body that is refused)."""
    assert_error(await signed(http, emulator, "POST", "/apps/1/events", body=raw), 400, fragment)
    await room.silent(0.05)
    await assert_still_serves(http, emulator, room)


@pytest.mark.parametrize(
    ("data", "delivered"),
    [({"a": [1, 2], "b": "é"}, '{"a":[1,2],"b":"é"}'), ([1, "2"], '[1,"2"]'), (5, "5"), (True, "true"), ("", "")],
    ids=["object", "list", "number", "bool", "empty-string"],
)
async def test_non_string_data_is_json_encoded_once(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, data: object, delivered: str
) -> None:
    """Item 77: non-string ``data`` is encoded once, so subscribers still get a string; ``channel`` also works."""
    body = {"name": "e", "channel": "room", "data": data}
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {}
    await room.expect_event("e", "room", delivered)


@pytest.mark.parametrize("name", ["App\\Events\\OrderShipped", "order.shipped", "ns:event", "with space/slash"])
async def test_event_names_with_any_characters(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, name: str
) -> None:
    """Item 76: Laravel-style names with ``\\``, ``.`` or ``:`` are accepted and delivered unchanged."""
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=event_body(name=name))) == {}
    await room.expect_event(name, "room", "x")


async def test_request_over_max_request_bytes_is_413(
    start_emulator: StartEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """A body over the server's ``max_request_bytes`` → 413 JSON, read by the client even while it is still sending a
    3 MB body; the connection is closed, a new one is served and the subscriber connected throughout gets the next
    publish."""
    emulator = await start_emulator(max_request_bytes=2048)
    room = await open_ws(emulator)
    await room.subscribe("room")
    body = event_body(data="x" * 4000)
    assert_error(await signed(http, emulator, "POST", "/apps/1/events", body=body), 413, "request body is over 2048")
    big = {"name": "e", "channels": ["room"], "data": "x", "padding": "p" * 3_000_000}
    assert_error(await signed(http, emulator, "POST", "/apps/1/events", body=big), 413, "request body is over 2048")
    await assert_still_serves(http, emulator, room)


async def _raw_response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 2.0)
    return status_line, headers, body


async def test_huge_content_length_is_refused_without_reading_the_body(
    start_emulator: StartEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """A Content-Length over ``max_request_bytes`` gets 413 at once: the server does not wait for (or buffer) a
    body the client may never send."""
    emulator = await start_emulator(max_request_bytes=2048)
    query = httpx.QueryParams(sign_rest_request("app-key", "app-secret", "POST", "/apps/1/events", timestamp=0))
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator.port)
    try:
        writer.write(
            f"POST /apps/1/events?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            'Content-Length: 1000000000\r\n\r\n{"name":'.encode()
        )
        await writer.drain()
        status_line, headers, body = await _raw_response(reader)
    finally:
        writer.close()
    assert status_line == "HTTP/1.1 413 Payload Too Large"
    assert headers["content-type"] == "application/json"
    assert "request body is over 2048 bytes" in json.loads(body)["error"]
    assert assert_json(await signed(http, emulator, "GET", "/apps/1/channels")) == {"channels": {}}
    room = await open_ws(emulator)
    await room.subscribe("room")
    await assert_still_serves(http, emulator, room)


# -- batches ------------------------------------------------------------------------------------------------------


def _batch(count: int, channel: str = "room") -> list[dict[str, object]]:
    return [{"name": f"e{i}", "channel": channel, "data": str(i)} for i in range(count)]


async def test_batch_limits(emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber) -> None:
    """Item 69: 10 events → ``{}`` and delivered in order; 11, an empty batch or a non-list → 400."""
    refusals = [
        ({"batch": _batch(11)}, "batch has 11 events; the limit is 10"),
        ({"batch": []}, "batch must be a non-empty list of events"),
        ({"batch": {}}, "batch must be a non-empty list of events"),
        ({}, "batch must be a non-empty list of events"),
    ]
    for body, fragment in refusals:
        assert_error(await signed(http, emulator, "POST", "/apps/1/batch_events", body=body), 400, fragment)
    bad_item = await signed(http, emulator, "POST", "/apps/1/batch_events", body={"batch": ["e"]})
    assert_error(bad_item, 400, "batch[0] must be an object")
    await room.silent()

    assert assert_json(await signed(http, emulator, "POST", "/apps/1/batch_events", body={"batch": _batch(10)})) == {}
    for i in range(10):
        await room.expect_event(f"e{i}", "room", str(i))


@pytest.mark.parametrize(
    ("bad", "status", "fragment"),
    [
        ({"name": "e", "channel": "bad channel!", "data": "x"}, 400, "batch[2]: channel name"),
        ({"name": "e", "channel": "room", "data": "x" * 10_241}, 413, "batch[2]: data is 10241 bytes"),
        ({"name": "e", "channel": "room"}, 400, "batch[2]: data is required"),
        ({"name": "e", "channel": "room", "data": "x", "socket_id": "nope"}, 400, "batch[2]: invalid socket_id"),
        ({"name": "e", "channel": "room", "data": "x", "info": "bogus"}, 400, "batch[2]: unknown info attribute"),
    ],
    ids=["bad-channel", "too-large", "no-data", "bad-socket-id", "bad-info"],
)
async def test_one_bad_batch_item_rejects_the_whole_batch(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, bad: dict, status: int, fragment: str
) -> None:
    """Item 70: one invalid item refuses the batch, naming the item; none of the valid items is delivered."""
    body = {"batch": [*_batch(2), bad, *_batch(1)]}
    assert_error(await signed(http, emulator, "POST", "/apps/1/batch_events", body=body), status, fragment)
    await room.silent()
    await assert_still_serves(http, emulator, room)


# -- info attributes ------------------------------------------------------------------------------------------


async def test_trigger_info_attributes(
    start_emulator: StartEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """Item 68: ``info`` on a trigger answers ``{"channels":{…}}``, each channel with only the attributes its type
    has (the docs' example: ``user_count`` for the presence channel, only ``subscription_count`` for the other)."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    subs = await _presence_room(emulator, open_ws)
    for sub in (subs[0], subs[2]):  # the counts of public-a and private-b, sent as they were subscribed
        assert (await sub.recv())["event"] == "pusher_internal:subscription_count"

    body = event_body(["presence-room", "public-a", "nobody"], info="subscription_count")
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {
        "channels": {
            "presence-room": {"subscription_count": 3},
            "public-a": {"subscription_count": 1},
            "nobody": {"subscription_count": 0},
        }
    }
    body = event_body(["presence-room", "public-a"], data="y", info="user_count,subscription_count")
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {
        "channels": {
            "presence-room": {"user_count": 2, "subscription_count": 3},
            "public-a": {"subscription_count": 1},
        }
    }
    body = event_body(["public-a"], data="z", info="user_count")
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {
        "channels": {"public-a": {}}
    }

    for data in ("x", "y"):
        await subs[0].expect_event("e", "presence-room", data)
        await subs[0].expect_event("e", "public-a", data)
        for sub in subs[1:]:
            await sub.expect_event("e", "presence-room", data)
    await subs[0].expect_event("e", "public-a", "z")
    for sub in subs:
        await sub.silent(0.05)


async def test_batch_info_is_index_aligned(
    start_emulator: StartEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """Items 68, 69: a batch where any item asks for ``info`` answers ``{"batch":[…]}`` aligned with the items,
    each with only the attributes its channel type has."""
    emulator = await start_emulator(app=replace(APP, subscription_count=True))
    await _presence_room(emulator, open_ws)
    batch = [
        {"name": "e", "channel": "presence-room", "data": "1", "info": "user_count,subscription_count"},
        {"name": "e", "channel": "public-a", "data": "2"},
        {"name": "e", "channel": "public-a", "data": "3", "info": "user_count,subscription_count"},
    ]
    response = await signed(http, emulator, "POST", "/apps/1/batch_events", body={"batch": batch})
    assert assert_json(response) == {
        "batch": [{"user_count": 2, "subscription_count": 3}, {}, {"subscription_count": 1}]
    }
    without_info = [{k: v for k, v in item.items() if k != "info"} for item in batch]
    response = await signed(http, emulator, "POST", "/apps/1/batch_events", body={"batch": without_info})
    assert assert_json(response) == {}


GET_ERRORS: list[Any] = [
    pytest.param("/apps/1/channels", {"info": "user_count"}, "user_count may only be requested for presence", id="u"),
    pytest.param(
        "/apps/1/channels",
        {"info": "user_count", "filter_by_prefix": "private-"},
        "please supply filter_by_prefix beginning with presence-",
        id="user-count-private-prefix",
    ),
    pytest.param("/apps/1/channels/room", {"info": "user_count"}, "Cannot retrieve the user count", id="channel-uc"),
    pytest.param("/apps/1/channels/room", {"info": "cache"}, "cache may only be requested for cache channels", id="c"),
    pytest.param("/apps/1/channels/room", {"info": "bogus"}, "unknown info attribute(s): bogus", id="bogus-info"),
    pytest.param(  # an attribute named "" was said to be unknown, naming nothing
        "/apps/1/channels/room",
        {"info": "subscription_count,"},
        "info 'subscription_count,' has an empty attribute: list them separated by single commas",
        id="trailing-comma-info",
    ),
    pytest.param("/apps/1/channels/room/users", {}, "users may only be requested for presence channels", id="users"),
    pytest.param("/apps/1/channels/bad%20name", {}, "has characters outside", id="bad-name"),
]


@pytest.mark.parametrize(("path", "params", "fragment"), GET_ERRORS)
async def test_channel_queries_refuse_attributes_the_channel_lacks(
    emulator: RunningEmulator, http: httpx.AsyncClient, room: Subscriber, path: str, params: dict, fragment: str
) -> None:
    """Items 72, 73, 74: attributes a channel type lacks, and users of a non-presence channel, are 400s."""
    assert_error(await signed(http, emulator, "GET", path, params=params), 400, fragment)
    await assert_still_serves(http, emulator, room)


async def test_cache_channel_info(emulator: RunningEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber) -> None:
    """Item 73: ``info=cache`` on a cache channel returns the last event and its remaining TTL."""
    sub = await open_ws(emulator)
    await sub.subscribe("cache-x")
    assert (await sub.recv())["event"] == "pusher:cache_miss"
    empty = await signed(http, emulator, "GET", "/apps/1/channels/cache-x", params={"info": "cache"})
    assert assert_json(empty) == {"occupied": True}
    body = event_body(["cache-x"], name="last", data="v")
    assert assert_json(await signed(http, emulator, "POST", "/apps/1/events", body=body)) == {}
    cached = assert_json(await signed(http, emulator, "GET", "/apps/1/channels/cache-x", params={"info": "cache"}))
    assert cached["occupied"] is True
    assert cached["cache"]["data"] == "v"
    assert 0 < cached["cache"]["ttl"] <= APP.cache_ttl


# -- HTTP behaviour -----------------------------------------------------------------------------------------------


async def test_cors_preflight(emulator: RunningEmulator, http: httpx.AsyncClient) -> None:
    """Item 79: a preflight asking for ``X-Socket-Id`` and ``X-CSRF-Token`` gets 204 allowing them; the actual
    response carries ``Access-Control-Allow-Origin`` too."""
    preflight = await http.options(
        emulator.http_url + "/apps/1/events",
        headers={
            "Origin": "https://example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-Socket-Id, X-CSRF-Token",
        },
    )
    assert preflight.status_code == 204
    assert preflight.content == b""
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"x-socket-id", "x-csrf-token", "content-type"} <= allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-origin"] == "*"
    response = await signed(http, emulator, "GET", "/apps/1/channels")
    assert response.headers["access-control-allow-origin"] == "*"
    error = await signed(http, emulator, "GET", "/apps/1/channels", secret="bad")
    assert error.headers["access-control-allow-origin"] == "*"


async def test_keep_alive_serves_many_requests_on_one_connection(emulator: RunningEmulator, room: Subscriber) -> None:
    """Item 79: successes and failures alike keep the connection open; every request uses the same socket."""
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/apps/1/channels", {}),
        ("POST", "/apps/1/events", {"body": event_body(data="1")}),
        ("GET", "/apps/1/channels", {"secret": "bad"}),
        ("GET", "/apps/1/nothing", {}),
        ("POST", "/apps/1/events", {"body": event_body(data="x" * 20_000)}),
        ("POST", "/apps/1/events", {"body": b"{"}),
        ("POST", "/apps/1/events", {"body": event_body(data="2")}),
    ]
    statuses, local_addresses = [], set()
    async with httpx.AsyncClient(timeout=5.0, limits=httpx.Limits(max_connections=1)) as http:
        for method, path, options in requests:
            response = await signed(http, emulator, method, path, **options)
            statuses.append(response.status_code)
            assert response.headers["connection"] == "keep-alive"
            local_addresses.add(response.extensions["network_stream"].get_extra_info("client_addr"))
    assert statuses == [200, 200, 401, 404, 413, 400, 200]
    assert len(local_addresses) == 1
    await room.expect_event("e", "room", "1")
    await room.expect_event("e", "room", "2")


async def test_event_parameters_in_the_query_string_are_a_400_that_says_so(
    emulator: RunningEmulator, http: httpx.AsyncClient, open_ws: OpenSubscriber
) -> None:
    """Pusher's API allows a POST's parameters in the query string; no Pusher library sends them so, and the
    emulator reads the JSON body: the answer was 'the request body is not valid JSON', which hid the cause."""
    sub = await open_ws(emulator)
    await sub.subscribe("orders")
    params = {"name": "placed", "channel": "orders", "data": "hello"}
    response = await signed(http, emulator, "POST", "/apps/1/events", params=params)
    assert assert_json(response, 400) == {
        "error": "event parameters in the query string are not supported by the emulator: send name, channel(s) and "
        "data as a JSON body, as the Pusher libraries do"
    }
    published = await signed(http, emulator, "POST", "/apps/1/events", body={**params, "data": "in the body"})
    assert assert_json(published) == {}
    await sub.expect_event("placed", "orders", "in the body")  # only the second reached anyone
    await sub.silent()
