"""Conformance: presence channels and user authentication over the raw WebSocket protocol, against the emulator.

Checklist items (reference §8): 26-33 and 43 (presence), 49-59 (signin, authorized connections, server-to-user,
terminate_connections, watchlist). Every frame read is checked by :func:`check_frame` (items 9, 11, 18); the
client helpers are in wsclient.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from relay.protocol.channels import Limits
from relay.protocol.signing import channel_auth, sign_rest_request, user_auth
from tests.conformance.wsclient import (
    APP,
    VECTOR_APP,
    VECTOR_KEY,
    VECTOR_SECRET,
    Connect,
    Frame,
    api_get,
    assert_serves_others,
    expect_fatal,
    official_client,
    publish,
)
from tests.conftest import RunningEmulator, StartEmulator


def cd(user_id: object, **user_info: object) -> str:
    """Compact presence channel_data."""
    data: dict[str, object] = {"user_id": user_id}
    if user_info:
        data["user_info"] = user_info
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def presence_of(frame: Frame) -> dict[str, Any]:
    assert frame["event"] == "pusher_internal:subscription_succeeded", frame
    assert isinstance(frame["data"], str)
    presence: dict[str, Any] = json.loads(frame["data"])["presence"]
    return presence


async def wait_closed_on_server(target: RunningEmulator, socket_id: str, app_id: str = APP.app_id) -> None:
    """Wait until the server has processed a client-side close (it releases the connection's state)."""
    for _ in range(100):
        if socket_id not in target.node.states[app_id].peers:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"the server still holds {socket_id}")


# == Presence (items 26-33, 43) =======================================================================================


async def test_presence_signature_with_vector_credentials(start_emulator: StartEmulator, connect: Connect) -> None:
    """Items 26, 27: presence auth signs socket_id:channel:channel_data; the vector's channel_data (an integer
    user_id) authorizes, and the id comes back as a string."""
    vector_data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    assert channel_auth(VECTOR_KEY, VECTOR_SECRET, "1234.1234", "presence-foobar", vector_data) == (
        f"{VECTOR_KEY}:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    )
    target = await start_emulator(app=VECTOR_APP)
    client = await connect(target)
    presence = presence_of(await client.subscribe("presence-foobar", vector_data))
    assert presence == {"ids": ["10"], "hash": {"10": {"name": "Mr. Channels"}}, "count": 1}


async def test_presence_verifies_the_exact_channel_data_string(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 26: the signature covers the channel_data string exactly as received: a re-spaced copy of signed data
    is refused, and pusher-http-python's authenticate (json.dumps with spaces) is accepted."""
    client = await connect(emulator)
    compact = cd("1", name="One")
    spaced = json.dumps(json.loads(compact))
    assert spaced != compact
    auth = channel_auth(APP.key, APP.secret, client.socket_id, "presence-exact", compact)
    await client.send("pusher:subscribe", {"channel": "presence-exact", "auth": auth, "channel_data": spaced})
    frame = await client.expect("pusher:subscription_error", "presence-exact")
    assert frame["data"]["type"] == "AuthError" and frame["data"]["status"] == 401
    await client.send("pusher:subscribe", {"channel": "presence-exact", "auth": auth})  # channel_data missing
    frame = await client.expect("pusher:subscription_error", "presence-exact")
    assert frame["data"]["type"] == "AuthError" and frame["data"]["status"] == 401
    official = official_client(emulator)
    body = official.authenticate("presence-exact", client.socket_id, {"user_id": "7", "user_info": {"name": "Seven"}})
    assert body["channel_data"] == '{"user_id": "7", "user_info": {"name": "Seven"}}'
    await client.send("pusher:subscribe", {"channel": "presence-exact", **body})
    presence = presence_of(await client.recv())
    assert presence == {"ids": ["7"], "hash": {"7": {"name": "Seven"}}, "count": 1}
    await assert_serves_others(emulator, connect)


async def test_presence_subscription_succeeded_counts_unique_users(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 27: the data is the string of {"presence":{ids,hash,count}} with unique string ids, counted in users."""
    first = await connect(emulator)
    second = await connect(emulator)
    again = await connect(emulator)
    numeric = await connect(emulator)
    presence = presence_of(await first.subscribe("presence-team", cd("1", name="One")))
    assert presence == {"ids": ["1"], "hash": {"1": {"name": "One"}}, "count": 1}
    presence_of(await second.subscribe("presence-team", cd("2")))
    presence = presence_of(await again.subscribe("presence-team", cd("1", name="One")))
    assert sorted(presence["ids"]) == ["1", "2"]
    assert presence["count"] == 2
    assert presence["hash"] == {"1": {"name": "One"}, "2": {}}
    presence = presence_of(await numeric.subscribe("presence-team", cd(3)))
    assert sorted(presence["ids"]) == ["1", "2", "3"]
    assert all(isinstance(user_id, str) for user_id in presence["ids"])
    assert set(presence["hash"]) == set(presence["ids"]) and presence["count"] == 3
    users = await api_get(emulator, "/channels/presence-team/users")
    assert sorted(user["id"] for user in users["users"]) == ["1", "2", "3"]


async def test_member_added_goes_to_the_other_members_only(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 28: a user's first connection sends member_added {user_id, user_info} to the others, not to itself."""
    alice = await connect(emulator)
    bob = await connect(emulator)
    outsider = await connect(emulator)
    await alice.subscribed("presence-room", cd("a", name="Alice"))
    await outsider.subscribed("presence-elsewhere", cd("o"))
    await bob.subscribed("presence-room", cd("b", name="Bob"))
    frame = await alice.expect("pusher_internal:member_added", "presence-room")
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"user_id": "b", "user_info": {"name": "Bob"}}
    await bob.sync()
    await outsider.sync()


async def test_second_connection_of_a_user_is_not_a_new_member(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 29, 30: a user's second connection sends no member_added and leaves count unchanged; closing one of
    two connections sends no member_removed; closing the last one does."""
    observer = await connect(emulator)
    tab1 = await connect(emulator)
    tab2 = await connect(emulator)
    await observer.subscribed("presence-tabs", cd("watcher"))
    await tab1.subscribed("presence-tabs", cd("u1", name="U"))
    added = await observer.expect("pusher_internal:member_added", "presence-tabs")
    assert json.loads(added["data"])["user_id"] == "u1"
    presence = presence_of(await tab2.subscribe("presence-tabs", cd("u1", name="U")))
    assert presence["count"] == 2 and sorted(presence["ids"]) == ["u1", "watcher"]
    await tab2.sync()
    await tab1.sync()
    await observer.sync()  # no second member_added
    await tab1.ws.close()
    await wait_closed_on_server(emulator, tab1.socket_id)
    await observer.sync()  # no member_removed while tab2 is still there
    assert sorted(u["id"] for u in (await api_get(emulator, "/channels/presence-tabs/users"))["users"]) == [
        "u1",
        "watcher",
    ]
    await tab2.ws.close()
    removed = await observer.expect("pusher_internal:member_removed", "presence-tabs")
    assert json.loads(removed["data"]) == {"user_id": "u1"}
    await observer.sync()


async def test_unsubscribe_sends_member_removed(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 31: unsubscribing a member sends member_removed {user_id} to the remaining members (not to itself)."""
    stays = await connect(emulator)
    leaves = await connect(emulator)
    await stays.subscribed("presence-leave", cd("stays"))
    await leaves.subscribed("presence-leave", cd("leaves"))
    await stays.expect("pusher_internal:member_added", "presence-leave")
    await leaves.send("pusher:unsubscribe", {"channel": "presence-leave"})
    removed = await stays.expect("pusher_internal:member_removed", "presence-leave")
    assert removed["data"] == '{"user_id":"leaves"}'
    await leaves.sync()
    assert await api_get(emulator, "/channels/presence-leave/users") == {"users": [{"id": "stays"}]}


async def test_presence_member_limit(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 32: past max_presence_members a new user is refused (LimitReached) and the socket stays open; another
    connection of a present user still joins, and a freed place can be taken."""
    target = await start_emulator(app=replace(APP, limits=Limits(max_presence_members=2)))
    one, two, three, one_again = [await connect(target) for _ in range(4)]
    await one.subscribed("presence-full", cd("1"))
    await two.subscribed("presence-full", cd("2"))
    frame = await three.subscribe("presence-full", cd("3"))
    assert frame["event"] == "pusher:subscription_error" and frame["channel"] == "presence-full"
    assert frame["data"]["type"] == "LimitReached"
    assert "limit" in frame["data"]["error"].lower()
    await three.sync()
    await one.expect("pusher_internal:member_added")
    await one.sync()  # no member_added for the refused user
    presence = presence_of(await one_again.subscribe("presence-full", cd("1")))
    assert presence["count"] == 2
    await two.send("pusher:unsubscribe", {"channel": "presence-full"})
    await one.expect("pusher_internal:member_removed")
    presence = presence_of(await three.subscribe("presence-full", cd("3")))
    assert sorted(presence["ids"]) == ["1", "3"]


@pytest.mark.parametrize(
    ("channel_data", "error"),
    [
        ("not json", "channel_data is not valid JSON"),
        ('{"user_info":{}}', "channel_data must contain user_id"),
    ],
    ids=["not-json", "no-user-id"],
)
async def test_signed_but_unreadable_channel_data_is_a_400_auth_error(
    emulator: RunningEmulator, connect: Connect, channel_data: str, error: str
) -> None:
    """channel_data whose signature is valid but which no member can be read from: a subscription_error naming what is
    wrong, with status 400 (the request, not the signature, is at fault); the socket stays open."""
    client = await connect(emulator)
    frame = await client.subscribe("presence-unreadable", channel_data)
    assert frame == {
        "event": "pusher:subscription_error",
        "channel": "presence-unreadable",
        "data": {"type": "AuthError", "error": error, "status": 400},
    }
    await client.sync()
    await assert_serves_others(emulator, connect)


@pytest.mark.parametrize(
    ("channel_data", "accepted"),
    [
        (cd("u", bio="x" * 1014), True),  # user_info {"bio":"…"} is exactly 1024 bytes
        (cd("u", bio="x" * 1015), False),
        (cd("u", bio="é" * 510), False),  # 1 030 bytes though 520 characters
        (cd("i" * 128), True),
        (cd("i" * 129), False),
    ],
    ids=["info-1024-bytes", "info-1025-bytes", "info-multibyte", "id-128-chars", "id-129-chars"],
)
async def test_presence_member_size_limits(
    emulator: RunningEmulator, connect: Connect, channel_data: str, accepted: bool
) -> None:
    """Item 33: user_info over 1 KB or user_id over 128 characters is refused, the socket staying open."""
    client = await connect(emulator)
    frame = await client.subscribe("presence-sizes", channel_data)
    if accepted:
        assert frame["event"] == "pusher_internal:subscription_succeeded"
    else:
        assert frame["event"] == "pusher:subscription_error", frame
        assert frame["data"]["type"] == "LimitReached"
        await client.sync()
        assert await api_get(emulator, "/channels") == {"channels": {}}
        await assert_serves_others(emulator, connect)


async def test_presence_client_event_carries_user_id(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 42, 43: a client event on a presence channel reaches the others with top-level user_id, the sender's
    channel_data user_id, and never the sender."""
    alice = await connect(emulator)
    bob = await connect(emulator)
    carol = await connect(emulator)
    await alice.subscribed("presence-chat", cd("alice"))
    await bob.subscribed("presence-chat", cd(42))
    await carol.subscribed("presence-chat", cd("carol"))
    await alice.expect("pusher_internal:member_added")
    await alice.expect("pusher_internal:member_added")
    await bob.expect("pusher_internal:member_added")
    await bob.send("client-wave", {"hi": True}, channel="presence-chat")
    for client in (alice, carol):
        frame = await client.expect("client-wave", "presence-chat")
        assert frame["user_id"] == "42"
        assert json.loads(frame["data"]) == {"hi": True}
    await bob.sync()


# == Users (items 49-59) ==============================================================================================


async def test_signin_with_vector_credentials(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 49: key:HMAC(secret, socket_id::user::user_data) signs in; signin_success data is an object whose
    user_data is the string sent."""
    assert user_auth(VECTOR_KEY, VECTOR_SECRET, "1234.1234", '{"id":"12345"}') == (
        f"{VECTOR_KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    )
    target = await start_emulator(app=VECTOR_APP)
    client = await connect(target)
    frame = await client.signin('{"id":"12345"}')
    assert frame == {"event": "pusher:signin_success", "data": {"user_data": '{"id":"12345"}'}}
    await client.sync()


async def test_signin_signed_by_pusher_http_python(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 49 with an official library: authenticate_user's {auth, user_data} signs in as is."""
    client = await connect(emulator)
    body = official_client(emulator).authenticate_user(client.socket_id, {"id": "py", "user_info": {"n": 1}})
    await client.send("pusher:signin", body)
    frame = await client.expect("pusher:signin_success")
    assert frame["data"] == {"user_data": body["user_data"]}
    await client.subscribed("#server-to-user-py")


SIGNIN_FAILURES: dict[str, Callable[[str], dict[str, object]]] = {
    "bad-signature": lambda socket_id: {"auth": "app-key:" + "0" * 64, "user_data": '{"id":"1"}'},
    "wrong-key-prefix": lambda socket_id: {
        "auth": user_auth("other-key", APP.secret, socket_id, '{"id":"1"}'),
        "user_data": '{"id":"1"}',
    },
    "other-socket": lambda socket_id: {
        "auth": user_auth(APP.key, APP.secret, "1.1", '{"id":"1"}'),
        "user_data": '{"id":"1"}',
    },
    "missing-auth": lambda socket_id: {"user_data": '{"id":"1"}'},
    "missing-user-data": lambda socket_id: {"auth": user_auth(APP.key, APP.secret, socket_id, "")},
    "user-data-object": lambda socket_id: {"auth": user_auth(APP.key, APP.secret, socket_id, "{}"), "user_data": {}},
    "no-id": lambda socket_id: {
        "auth": user_auth(APP.key, APP.secret, socket_id, '{"name":"x"}'),
        "user_data": '{"name":"x"}',
    },
    "numeric-id": lambda socket_id: {
        "auth": user_auth(APP.key, APP.secret, socket_id, '{"id":1}'),
        "user_data": '{"id":1}',
    },
    "empty-id": lambda socket_id: {
        "auth": user_auth(APP.key, APP.secret, socket_id, '{"id":""}'),
        "user_data": '{"id":""}',
    },
    "not-json": lambda socket_id: {
        "auth": user_auth(APP.key, APP.secret, socket_id, "id=1"),
        "user_data": "id=1",
    },
}


LONG_ID = json.dumps({"id": "u" * 129})


@pytest.mark.parametrize("case", list(SIGNIN_FAILURES))
async def test_signin_failure_is_4009(emulator: RunningEmulator, connect: Connect, case: str) -> None:
    """Item 50: a bad signature, or user_data without a non-empty string id, gets pusher:error 4009 and close 4009;
    other connections are unaffected."""
    bystander = await connect(emulator)
    client = await connect(emulator)
    await client.send("pusher:signin", SIGNIN_FAILURES[case](client.socket_id))
    message = await expect_fatal(client.ws, 4009)
    assert "signin" in message.lower()
    await bystander.sync()
    await assert_serves_others(emulator, connect)


async def test_a_signin_id_is_held_to_the_presence_user_id_limit(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 33 and 59: a signed-in user is a presence member without channel_data, so its id has a presence member's
    limit (128 characters): a longer one fails the signin (4009), as it fails in channel_data (4009 too)."""
    client = await connect(emulator)
    await client.send(
        "pusher:signin", {"auth": user_auth(APP.key, APP.secret, client.socket_id, LONG_ID), "user_data": LONG_ID}
    )
    message = await expect_fatal(client.ws, 4009)
    assert message == "Signin failed: user_data id is 129 characters long; the limit is 128"
    other = await connect(emulator)
    refused = await other.subscribe("presence-long-ids", json.dumps({"user_id": "u" * 129}))
    assert refused["event"] == "pusher:subscription_error", refused
    await assert_serves_others(emulator, connect)


async def test_a_signin_user_info_is_held_to_the_presence_user_info_limit(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """docs/emulator.md: a signed-in user's user_info has a presence member's limit (max_user_info_bytes, 1,024 by
    default): 1,510 bytes fail the sign-in with the fatal 4009 naming both sizes; the largest that fits signs in."""
    client = await connect(emulator)
    too_big = json.dumps({"id": "ann", "user_info": {"bio": "x" * 1500}}, separators=(",", ":"))
    await client.send(
        "pusher:signin", {"auth": user_auth(APP.key, APP.secret, client.socket_id, too_big), "user_data": too_big}
    )
    message = await expect_fatal(client.ws, 4009)
    assert message == "Signin failed: user_info is 1510 bytes; the limit is 1024"
    fits = await connect(emulator)
    user_data = json.dumps({"id": "ann", "user_info": {"bio": "x" * 1014}}, separators=(",", ":"))
    assert (await fits.signin(user_data))["event"] == "pusher:signin_success"
    await assert_serves_others(emulator, connect)


async def test_the_longest_signin_id_joins_presence_and_has_its_server_to_user_channel(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """Items 53, 54 and 59 at the limit: a 128-character id joins a presence channel from its signin, and its own
    ``#server-to-user-{id}`` channel (16 characters more, under the 200 of a channel name) takes a subscription and an
    HTTP publish."""
    user_id = "u" * 128
    client = await connect(emulator)
    assert (await client.signin(json.dumps({"id": user_id})))["event"] == "pusher:signin_success"
    channel = "presence-longest-id"
    await client.send(
        "pusher:subscribe", {"channel": channel, "auth": channel_auth(APP.key, APP.secret, client.socket_id, channel)}
    )
    joined = await client.expect("pusher_internal:subscription_succeeded", channel)
    assert json.loads(joined["data"])["presence"]["ids"] == [user_id]
    own = f"#server-to-user-{user_id}"
    assert (await client.subscribe(own))["event"] == "pusher_internal:subscription_succeeded"
    await publish(emulator, own, "to-user", '"hi"')
    assert (await client.expect("to-user", own))["data"] == '"hi"'


async def test_a_signin_id_no_channel_name_can_hold_signs_in_without_a_server_to_user_channel(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """An Auth0 id (``auth0|abc``) signs in (pusher-http-node signs it) and its connections can be terminated, but
    no ``#server-to-user-`` channel can carry it: the subscription and an event to it are refused, as documented."""
    client = await connect(emulator)
    assert (await client.signin('{"id":"auth0|abc"}'))["event"] == "pusher:signin_success"
    refused = await client.subscribe("#server-to-user-auth0|abc")
    assert refused["event"] == "pusher:subscription_error" and refused["data"]["status"] == 400, refused
    body = json.dumps({"name": "e", "channel": "#server-to-user-auth0|abc", "data": "x"}).encode()
    path = f"/apps/{APP.app_id}/events"
    params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=body)
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.post(emulator.http_url + path, params=params, content=body)
        assert answer.status_code == 400 and "invalid server-to-user channel" in answer.json()["error"], answer.text
        terminate = f"/apps/{APP.app_id}/users/auth0|abc/terminate_connections"
        params = sign_rest_request(APP.key, APP.secret, "POST", terminate, timestamp=int(time.time()), body=b"{}")
        assert (await http.post(emulator.http_url + terminate, params=params, content=b"{}")).status_code == 200
    await expect_fatal(client.ws, 4009)


async def test_signin_again_as_another_user_is_4009(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 51: a connection signed in as one user cannot sign in as another."""
    client = await connect(emulator)
    assert (await client.signin('{"id":"first"}'))["event"] == "pusher:signin_success"
    await client.send(
        "pusher:signin",
        {"auth": user_auth(APP.key, APP.secret, client.socket_id, '{"id":"second"}'), "user_data": '{"id":"second"}'},
    )
    message = await expect_fatal(client.ws, 4009)
    assert "another user" in message
    await assert_serves_others(emulator, connect)


async def test_signin_again_as_the_same_user_is_answered_again(emulator: RunningEmulator, connect: Connect) -> None:
    """Signing in again as the user the connection is signed in as succeeds again (it got no answer at all, so a
    client awaiting one waited for ever); the connection stays that user's, once, on its server-to-user channel."""
    client = await connect(emulator)
    assert (await client.signin('{"id":"same"}'))["event"] == "pusher:signin_success"
    again = await client.signin('{"id":"same","user_info":{"name":"again"}}')
    assert again == {
        "event": "pusher:signin_success",
        "data": {"user_data": '{"id":"same","user_info":{"name":"again"}}'},
    }
    await client.subscribed("#server-to-user-same")
    await publish(emulator, "#server-to-user-same", "to-user", '"once"')
    assert (await client.expect("to-user", "#server-to-user-same"))["data"] == '"once"'
    await client.sync()
    await assert_serves_others(emulator, connect)


async def test_user_authentication_timeout(start_emulator: StartEmulator, connect: Connect) -> None:
    """Item 52: in authorized-connections mode a socket that neither signs in nor subscribes to a private or
    presence channel in time is closed with 4009; the signed-in and the privately subscribed ones stay."""
    target = await start_emulator(app=replace(APP, user_authentication_timeout=0.5))
    idle = await connect(target)
    signed_in = await connect(target)
    private = await connect(target)
    presence = await connect(target)
    started = time.monotonic()
    await idle.subscribed("only-public")
    await signed_in.signin('{"id":"in-time"}')
    await private.subscribed("private-in-time")
    await presence.subscribed("presence-in-time", cd("p"))
    message = await expect_fatal(idle.ws, 4009, wait=3.0)
    assert time.monotonic() - started >= 0.45
    assert "unauthorized" in message.lower()
    for client in (signed_in, private, presence):
        await client.sync()


async def test_server_to_user_channel_only_for_its_own_user(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 23, 53: #server-to-user-{id} with auth "" is allowed only for the connection signed in as {id}."""
    user = await connect(emulator)
    anonymous = await connect(emulator)
    await user.signin('{"id":"7"}')
    frame = await user.subscribed("#server-to-user-7")
    assert frame["data"] == "{}"
    for client, channel in ((user, "#server-to-user-8"), (anonymous, "#server-to-user-7")):
        await client.send("pusher:subscribe", {"channel": channel, "auth": ""})
        frame = await client.expect("pusher:subscription_error", channel)
        assert frame["data"]["type"] == "AuthError"
        assert frame["data"]["status"] in (401, 403)
        await client.sync()


async def test_send_to_user_reaches_every_connection_of_the_user(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 54: an HTTP trigger to #server-to-user-{id} reaches every connection signed in as {id}, and no other;
    pusher-http-python's send_to_user does the same."""
    tab1, tab2, other_user, anonymous = [await connect(emulator) for _ in range(4)]
    await tab1.signin('{"id":"7"}')
    await tab2.signin('{"id":"7"}')
    await other_user.signin('{"id":"8"}')
    await tab1.subscribed("#server-to-user-7")  # what pusher-js does after signin; tab2 does not
    await publish(emulator, "#server-to-user-7", "direct", '{"for":"7"}')
    for tab in (tab1, tab2):
        frame = await tab.expect("direct", "#server-to-user-7")
        assert frame["data"] == '{"for":"7"}'
    await asyncio.to_thread(official_client(emulator).send_to_user, "7", "direct-py", {"n": 1})
    for tab in (tab1, tab2):
        frame = await tab.expect("direct-py", "#server-to-user-7")
        assert json.loads(frame["data"]) == {"n": 1}
        await tab.sync()
    await other_user.sync()
    await anonymous.sync()


async def test_terminate_user_connections(emulator: RunningEmulator, connect: Connect) -> None:
    """Items 55, 56: POST /apps/{id}/users/{uid}/terminate_connections answers {} and closes every connection of
    the user with pusher:error 4009 then close 4009; pusher-http-python's alias path does the same."""
    tab1, tab2, other_user, anonymous = [await connect(emulator) for _ in range(4)]
    await tab1.signin('{"id":"7"}')
    await tab2.signin('{"id":"7"}')
    await other_user.signin('{"id":"8"}')
    path = f"/apps/{APP.app_id}/users/7/terminate_connections"
    body = b"{}"
    params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=body)
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(
            emulator.http_url + path, params=params, content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 200 and response.json() == {}
    for tab in (tab1, tab2):
        await expect_fatal(tab.ws, 4009)
    await other_user.sync()
    await anonymous.sync()
    result = await asyncio.to_thread(official_client(emulator).terminate_user_connections, "8")
    assert result == {}
    await expect_fatal(other_user.ws, 4009)
    await anonymous.sync()
    reconnected = await connect(emulator)  # the user may come back
    assert (await reconnected.signin('{"id":"7"}'))["event"] == "pusher:signin_success"


def watchlist_events(frame: Frame) -> dict[str, list[str]]:
    assert frame["event"] == "pusher_internal:watchlist_events", frame
    assert "channel" not in frame
    return {event["name"]: event["user_ids"] for event in frame["data"]["events"]}


async def test_watchlist_events(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 57: after signin the watcher gets the initial online/offline state, then online on a watched user's
    first signin and offline on their last disconnect (not per connection)."""
    bob = await connect(emulator)
    await bob.signin('{"id":"bob"}')
    watcher = await connect(emulator)
    frame = await watcher.signin(json.dumps({"id": "w", "watchlist": ["bob", "carol"]}))
    assert frame["event"] == "pusher:signin_success"
    assert watchlist_events(await watcher.recv()) == {"online": ["bob"], "offline": ["carol"]}
    carol1 = await connect(emulator)
    await carol1.signin('{"id":"carol"}')
    assert watchlist_events(await watcher.recv()) == {"online": ["carol"]}
    carol2 = await connect(emulator)
    await carol2.signin('{"id":"carol"}')
    await carol2.sync()
    await watcher.sync()  # a second connection is not a new online event
    await carol1.ws.close()
    await wait_closed_on_server(emulator, carol1.socket_id)
    await watcher.sync()  # nor is closing one of two
    await carol2.ws.close()
    assert watchlist_events(await watcher.recv()) == {"offline": ["carol"]}
    await bob.ws.close()
    assert watchlist_events(await watcher.recv()) == {"offline": ["bob"]}
    await watcher.sync()


async def test_a_watchlist_id_listed_twice_or_the_users_own_is_reported_once(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """A watchlist ["me", "x", "x"] signed in as "me" was told x offline twice, then "me" online a second time: each
    id is reported once, and the user's own sign-in only in the list they are sent."""
    me = await connect(emulator)
    frame = await me.signin(json.dumps({"id": "me", "watchlist": ["me", "x", "x"]}))
    assert frame["event"] == "pusher:signin_success"
    assert watchlist_events(await me.recv()) == {"online": ["me"], "offline": ["x"]}
    await me.sync()  # no second "online: me"
    x = await connect(emulator)
    await x.signin('{"id":"x"}')
    assert watchlist_events(await me.recv()) == {"online": ["x"]}
    await me.sync()
    again = await connect(emulator)  # the user's second connection watches too; the first is not told of it
    await again.signin(json.dumps({"id": "me", "watchlist": ["me"]}))
    assert watchlist_events(await again.recv()) == {"online": ["me"]}
    await again.sync()
    await me.sync()


async def test_watchlist_over_100_ids(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 58: a watchlist over 100 ids is cut to the first 100 with a non-fatal 4302; the user stays signed in."""
    watched = [f"u{n}" for n in range(101)]
    watcher = await connect(emulator)
    frame = await watcher.signin(json.dumps({"id": "big-watcher", "watchlist": watched}))
    assert frame["event"] == "pusher:signin_success"
    seen = [await watcher.recv(), await watcher.recv()]
    errors = [f for f in seen if f["event"] == "pusher:error"]
    assert len(errors) == 1 and errors[0]["data"]["code"] == 4302
    (initial,) = [f for f in seen if f["event"] == "pusher_internal:watchlist_events"]
    assert watchlist_events(initial) == {"offline": watched[:100]}
    await watcher.subscribed("#server-to-user-big-watcher")  # still signed in
    last = await connect(emulator)
    await last.signin('{"id":"u100"}')
    await last.sync()
    await watcher.sync()  # the 101st id is not watched
    first = await connect(emulator)
    await first.signin('{"id":"u0"}')
    assert watchlist_events(await watcher.recv()) == {"online": ["u0"]}


async def test_presence_without_channel_data_uses_signin_user_data(emulator: RunningEmulator, connect: Connect) -> None:
    """Item 59: a signed-in socket may subscribe to presence with a private-style signature and no channel_data;
    the member is the signed-in user with its user_info."""
    member = await connect(emulator)
    await member.subscribed("presence-signed", cd("other", name="Other"))
    client = await connect(emulator)
    await client.signin('{"id":"42","user_info":{"name":"Signed"}}')
    auth = channel_auth(APP.key, APP.secret, client.socket_id, "presence-signed")
    await client.send("pusher:subscribe", {"channel": "presence-signed", "auth": auth})
    presence = presence_of(await client.expect("pusher_internal:subscription_succeeded", "presence-signed"))
    assert presence["hash"] == {"other": {"name": "Other"}, "42": {"name": "Signed"}}
    added = await member.expect("pusher_internal:member_added", "presence-signed")
    assert json.loads(added["data"]) == {"user_id": "42", "user_info": {"name": "Signed"}}
    await client.send("client-hi", "x", channel="presence-signed")
    assert (await member.expect("client-hi", "presence-signed"))["user_id"] == "42"
    # Without a signin the same request is refused.
    anonymous = await connect(emulator)
    auth = channel_auth(APP.key, APP.secret, anonymous.socket_id, "presence-signed")
    await anonymous.send("pusher:subscribe", {"channel": "presence-signed", "auth": auth})
    frame = await anonymous.expect("pusher:subscription_error", "presence-signed")
    assert frame["data"]["type"] == "AuthError"
