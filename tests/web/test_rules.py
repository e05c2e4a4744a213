"""Channel rules: patterns, placeholders, decisions, and the FastAPI auth router over a real client."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI, Request

from relay import Relay, User
from relay.errors import InvalidChannelName, PermissionDenied
from relay.protocol.signing import channel_auth, user_auth
from relay.rules import ChannelRules, compile_pattern
from relay.web import auth_router, channel_auth_body, channel_auth_body_async, channels_token_body

ALICE = User("alice", {"name": "Alice", "role": "kitchen"})
BOB = User("bob", {"name": "Bob"})


def make_rules() -> ChannelRules:
    rules = ChannelRules()

    @rules.channel("private-orders.{order_id}")
    def order_owner(user: User | None, order_id: str) -> bool:
        return user is not None and order_id == f"{user.id}-1"

    @rules.channel("presence-kitchen")
    def kitchen(user: User | None) -> dict[str, str] | None:
        return {"name": user.info["name"]} if user is not None and user.info.get("role") == "kitchen" else None

    @rules.channel("private-user-{sub}")
    async def own_channel(user: User | None, sub: str) -> bool:
        return user is not None and user.id == sub

    return rules


def test_placeholders_match_one_dot_free_segment() -> None:
    regex = compile_pattern("private-orders.{order_id}")
    match = regex.fullmatch("private-orders.a-1")
    assert match is not None
    assert match.groupdict() == {"order_id": "a-1"}
    assert regex.fullmatch("private-orders.a.1") is None
    assert compile_pattern("presence-{a}.{b}").fullmatch("presence-x.y").groupdict() == {"a": "x", "b": "y"}  # type: ignore[union-attr]


def test_decisions() -> None:
    rules = make_rules()
    assert rules.authorize(ALICE, "private-orders.alice-1").member == ALICE
    with pytest.raises(PermissionDenied, match=r"access to 'private-orders\.bob-1' denied"):
        rules.authorize(ALICE, "private-orders.bob-1")
    member = rules.authorize(ALICE, "presence-kitchen").member
    assert member == User("alice", {"name": "Alice"})
    with pytest.raises(PermissionDenied):
        rules.authorize(BOB, "presence-kitchen")
    with pytest.raises(PermissionDenied, match="no rule allows 'private-secret'"):
        rules.authorize(ALICE, "private-secret")
    with pytest.raises(PermissionDenied, match=r"'private-orders\.alice-1' needs an authenticated user"):
        rules.authorize(None, "private-orders.alice-1")  # no user: says so, not "denied" as if the rule refused
    assert rules.authorize(None, "public-news").member is None
    with pytest.raises(TypeError, match="async"):
        rules.authorize(ALICE, "private-user-alice")


def test_the_sync_body_for_django_and_flask_views() -> None:
    """``channel_auth_body`` is what a sync view calls: the signed body when the rules allow, PermissionDenied (a 403
    for the view to answer) when they do not, and a coroutine rule is refused rather than left unawaited."""
    rules = make_rules()
    with Relay.from_url("emulator://key:secret@127.0.0.1:1/apps/1") as relay:
        body = channel_auth_body(relay, rules, ALICE, "1.2", "presence-kitchen")
        assert body["auth"] == channel_auth("key", "secret", "1.2", "presence-kitchen", body["channel_data"])
        assert json.loads(body["channel_data"]) == {"user_id": "alice", "user_info": {"name": "Alice"}}
        with pytest.raises(PermissionDenied, match="access to 'presence-kitchen' denied"):
            channel_auth_body(relay, rules, BOB, "1.2", "presence-kitchen")
        with pytest.raises(TypeError, match="authorize_async"):
            channel_auth_body(relay, rules, BOB, "1.2", "private-user-bob")


async def test_async_rules() -> None:
    rules = make_rules()
    assert (await rules.authorize_async(ALICE, "private-user-alice")).member == ALICE
    with pytest.raises(PermissionDenied):
        await rules.authorize_async(BOB, "private-user-alice")


@pytest.fixture
def client() -> httpx.AsyncClient:
    relay = Relay.from_url("emulator://key:secret@127.0.0.1:1/apps/1")
    users = {"alice": ALICE, "bob": BOB}

    def current_user(request: Request) -> User | None:
        return users.get(request.headers.get("x-user", ""))

    app = FastAPI()
    app.include_router(auth_router(relay, make_rules(), current_user))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_pusher_js_form_auth(client: httpx.AsyncClient) -> None:
    form = {"socket_id": "1.2", "channel_name": "presence-kitchen"}
    response = await client.post("/pusher/auth", data=form, headers={"x-user": "alice"})
    assert response.status_code == 200
    body = response.json()
    assert body["channel_data"] == '{"user_id":"alice","user_info":{"name":"Alice"}}'
    assert body["auth"] == channel_auth("key", "secret", "1.2", "presence-kitchen", body["channel_data"])
    denied = await client.post("/pusher/auth", data=form, headers={"x-user": "bob"})
    assert denied.status_code == 403
    assert denied.json() == {"error": "access to 'presence-kitchen' denied"}


async def test_json_auth_and_validation_errors(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/pusher/auth", json={"socket_id": "1.2", "channel_name": "private-user-bob"}, headers={"x-user": "bob"}
    )
    assert response.json() == {"auth": channel_auth("key", "secret", "1.2", "private-user-bob")}
    missing = await client.post("/pusher/auth", data={"socket_id": "1.2"}, headers={"x-user": "bob"})
    assert (missing.status_code, missing.json()) == (400, {"error": "channel_name is required (channel is read too)"})
    bad_socket = await client.post("/pusher/auth", data={"socket_id": "x", "channel_name": "private-user-bob"})
    assert bad_socket.status_code == 403
    malformed = await client.post(
        "/pusher/auth", content=b"{nope", headers={"content-type": "application/json", "x-user": "bob"}
    )
    assert (malformed.status_code, malformed.json()) == (400, {"error": "the JSON body is malformed"})


async def test_the_ably_token_route_reads_channel_or_channel_name(client: httpx.AsyncClient) -> None:
    """The gateway's /v1/auth/channel reads either name; so does /ably/token, which an app may call with Pusher's."""
    as_alice = {"x-user": "alice"}
    by_ably_name = await client.post(
        "/ably/token", data={"socket_id": "1.2", "channel": "private-user-alice"}, headers=as_alice
    )
    by_pusher_name = await client.post(
        "/ably/token", data={"socket_id": "1.2", "channel_name": "private-user-alice"}, headers=as_alice
    )
    assert (
        by_ably_name.json()
        == by_pusher_name.json()
        == {"auth": channel_auth("key", "secret", "1.2", "private-user-alice")}
    )
    missing = await client.post("/ably/token", data={"socket_id": "1.2"}, headers=as_alice)
    assert (missing.status_code, missing.json()) == (400, {"error": "channel_name is required (channel is read too)"})


async def test_channel_and_channel_name_must_agree(client: httpx.AsyncClient) -> None:
    """Given both, the one not read could be the one a rule would refuse: every route refuses the pair, and serves
    the next request."""
    both = {"socket_id": "1.2", "channel_name": "private-user-alice", "channel": "private-user-bob"}
    for route in ("/pusher/auth", "/ably/token"):
        refused = await client.post(route, data=both, headers={"x-user": "alice"})
        assert (refused.status_code, refused.json()) == (
            400,
            {"error": "channel_name and channel name different channels: give one"},
        ), route
    same = {**both, "channel": "private-user-alice"}
    served = await client.post("/ably/token", data=same, headers={"x-user": "alice"})
    assert served.json() == {"auth": channel_auth("key", "secret", "1.2", "private-user-alice")}


async def test_an_auth_field_given_twice_with_two_values_is_refused(client: httpx.AsyncClient) -> None:
    """A form's second channel_name, or the body's over the query's, was read and the other dropped: a proxy or rule
    that checked the one dropped was passed by. Both are refused now, naming the field; the same value twice serves."""
    twice = "socket_id=1.2&channel_name=private-user-alice&channel_name=private-user-bob"
    form = {"content-type": "application/x-www-form-urlencoded", "x-user": "alice"}
    refused = await client.post("/pusher/auth", content=twice, headers=form)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "channel_name is given twice, as 'private-user-alice' and 'private-user-bob': give it once"},
    )
    query_and_body = await client.post(
        "/pusher/auth?socket_id=9.9",
        json={"socket_id": "1.2", "channel_name": "private-user-alice"},
        headers={"x-user": "alice"},
    )
    assert (query_and_body.status_code, query_and_body.json()) == (
        400,
        {"error": "socket_id is given twice, as '9.9' and '1.2': give it once"},
    )
    same = await client.post(
        "/pusher/auth?socket_id=1.2", data={"socket_id": "1.2", "channel_name": "private-user-alice"}, headers=form
    )
    assert same.json() == {"auth": channel_auth("key", "secret", "1.2", "private-user-alice")}


async def test_an_auth_field_given_twice_in_a_json_body_is_refused(client: httpx.AsyncClient) -> None:
    """A JSON object naming channel_name twice was read by json.loads as its last value alone: the first, which a
    proxy parsing the body its own way may have checked, was dropped unseen, as a form's was. Refused too now, and a
    value that is not a string is refused wherever it stands (the last one alone was checked)."""
    json_type = {"content-type": "application/json", "x-user": "alice"}
    twice = '{"socket_id": "1.2", "channel_name": "private-user-bob", "channel_name": "private-user-alice"}'
    refused = await client.post("/pusher/auth", content=twice, headers=json_type)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "channel_name is given twice, as 'private-user-bob' and 'private-user-alice': give it once"},
    )
    not_a_string = '{"socket_id": "1.2", "channel_name": ["x"], "channel_name": "private-user-alice"}'
    refused = await client.post("/pusher/auth", content=not_a_string, headers=json_type)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": "the JSON body's 'channel_name' must be a string, not a list"},
    )
    an_object = await client.post("/pusher/auth", json={"socket_id": {"n": 1}}, headers=json_type)
    assert an_object.json() == {"error": "the JSON body's 'socket_id' must be a string, not an object"}
    same = '{"socket_id": "1.2", "channel_name": "private-user-alice", "channel_name": "private-user-alice"}'
    served = await client.post("/pusher/auth", content=same, headers=json_type)
    assert served.json() == {"auth": channel_auth("key", "secret", "1.2", "private-user-alice")}


async def test_user_auth(client: httpx.AsyncClient) -> None:
    response = await client.post("/pusher/user-auth", data={"socket_id": "1.2"}, headers={"x-user": "bob"})
    body = response.json()
    assert json.loads(body["user_data"]) == {"id": "bob", "user_info": {"name": "Bob"}}
    assert body["auth"] == user_auth("key", "secret", "1.2", body["user_data"])
    anonymous = await client.post("/pusher/user-auth", data={"socket_id": "1.2"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "sign in first: no user for this request"})


def test_a_rule_giving_user_info_to_an_anonymous_request_is_refused_not_a_crash() -> None:
    """A rule that answers user info for a request without a user (on a public channel, which a browser may still
    send to the auth endpoint) is denied with PermissionDenied, not an AssertionError (a 500)."""
    rules = ChannelRules()
    rules.add("news-{topic}", lambda user, topic: {"topic": topic})
    with pytest.raises(PermissionDenied, match="the rule gave user info, but there is no user"):
        rules.authorize(None, "news-sport")
    assert rules.authorize(User("ann"), "news-sport").member == User("ann", {"topic": "sport"})


@pytest.mark.parametrize("name", ["*", "foo:*", "[x]foo", "", "x" * 201])
async def test_a_name_outside_pusher_s_channel_names_is_refused_before_any_rule(name: str) -> None:
    """On Ably the name becomes the token's capability key, where ``*`` is every channel: even a rule allowing all
    (and the default for public names) must not see it."""
    rules = ChannelRules()
    rules.add("*", lambda user: True)
    with pytest.raises(InvalidChannelName) as sync_refusal:
        rules.authorize(ALICE, name)
    with pytest.raises(InvalidChannelName) as async_refusal:
        await rules.authorize_async(None, name)
    assert sync_refusal.value.message == async_refusal.value.message
    assert sync_refusal.value.http_status == 400
    assert rules.authorize(None, "news").member is None
    assert ChannelRules().authorize(None, "news").member is None


async def test_the_ably_token_route_refuses_a_wildcard_channel() -> None:
    """The library's /ably/token over an Ably client: 403 (which ably-js does not ask again) naming the characters,
    and the route serves on."""
    relay = Relay.from_url("ably://1.app-key:app-secret@127.0.0.1:1?tls=false")
    app = FastAPI()
    app.include_router(auth_router(relay, make_rules(), lambda request: None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for name in ("*", "private-*", "foo:*"):
            refused = await client.post("/ably/token", data={"channel": name})
            assert refused.status_code == 403, name
            assert refused.json() == {  # in Ably's shape, for ably-js
                "error": {
                    "message": f"channel name {name!r} has characters outside A-Z a-z 0-9 _ - = @ , . ; "
                    "('#' is reserved for #server-to-user-{id})",
                    "code": 40300,
                    "statusCode": 403,
                }
            }
        allowed = await client.post("/ably/token", data={"channel": "news"})
    assert allowed.status_code == 200, allowed.text
    assert json.loads(allowed.json()["capability"]) == {"news": ["subscribe"]}


async def test_a_user_s_own_channel_is_not_authorized_per_channel() -> None:
    """``#server-to-user-{id}`` has no private- prefix, so it would pass as public: on Ably, anyone would get a token
    for another user's channel. Refused (400) even under a rule allowing every name; other names still pass."""
    rules = ChannelRules()
    rules.add("*", lambda user: True)
    expected = (
        "'#server-to-user-bob' is a user's own channel: the user's sign-in subscribes it (user authentication), "
        "no channel authorization does"
    )
    with pytest.raises(InvalidChannelName) as refused:
        rules.authorize(ALICE, "#server-to-user-bob")
    assert (refused.value.message, refused.value.http_status) == (expected, 400)
    with pytest.raises(InvalidChannelName, match="a user's own channel"):
        await ChannelRules().authorize_async(None, "#server-to-user-bob")
    assert rules.authorize(None, "news").member is None


async def test_a_channel_the_configuration_cannot_serve_is_a_logged_500_naming_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rule admits an end-to-end encrypted channel, but the client has no encryption_master_key: the auth router
    answers a 500 that names the setting, and logs it (the library's router answered it unlogged: the operator saw
    nothing, only the browser learnt what was missing)."""
    rules = ChannelRules()

    @rules.channel("private-encrypted-{name}")
    def anyone(user: User | None, name: str) -> bool:
        return True

    app = FastAPI()
    relay = Relay.from_url("emulator://key:secret@127.0.0.1:1/apps/1")
    app.include_router(auth_router(relay, rules, lambda request: ALICE))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        answer = await http.post("/pusher/auth", data={"socket_id": "1.2", "channel_name": "private-encrypted-x"})
    message = (
        "this server's configuration cannot serve this request: 'private-encrypted-x' is end-to-end encrypted: "
        "add ?encryption_master_key=BASE64 (32 bytes) to the URL"
    )
    assert (answer.status_code, answer.json()) == (500, {"error": message})
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "relay.web"]
    assert logged == [("ERROR", f"POST /pusher/auth answered 500: {message}")]


async def test_every_auth_body_function_ends_an_anonymous_refusal_with_the_reason_given() -> None:
    """``no_user_reason`` (why a request has no user, which a Django or Flask view knows as the gateway does) was taken
    by the async Ably token body alone: the sync one and both channel-auth bodies could not say it."""
    rules = make_rules()
    reason = "the session cookie had expired"
    refused = f"'private-orders.bob-1' needs an authenticated user: {reason}"
    with (
        Relay.from_url("emulator://key:secret@127.0.0.1:1/apps/1") as pusher,
        Relay.from_url("ably://appid.keyid:secret@127.0.0.1:1?tls=false") as ably,
    ):
        calls = [
            lambda: channel_auth_body(pusher, rules, None, "1.2", "private-orders.bob-1", no_user_reason=reason),
            lambda: channels_token_body(ably, rules, None, ["private-orders.bob-1"], no_user_reason=reason),
        ]
        for call in calls:
            with pytest.raises(PermissionDenied) as caught:
                call()
            assert caught.value.message == refused
        with pytest.raises(PermissionDenied) as caught:
            await channel_auth_body_async(pusher, rules, None, "1.2", "private-orders.bob-1", no_user_reason=reason)
        assert caught.value.message == refused
