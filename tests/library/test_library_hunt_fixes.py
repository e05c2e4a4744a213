"""Fixes from a bug hunt on the library, part 1: ``channel()`` on a Pusher app without subscription counting, a client
closed during a request, sign-in watchlists, one ``AsyncRelay`` across event loops, and the user ids
``terminate_user_connections`` takes (part 2 is ``test_library_hunt_fixes_inputs.py``).

Against the real emulator where it can answer; hosted Pusher with respx, asserting the exact requests. Every test that
takes ``make_relay`` runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import httpx
import pytest
import respx
from fastapi import FastAPI, Request
from libsupport import KEY, RECV_TIMEOUT, SECRET, Emulator, MakeRelay, StartEmulator, Subscribe, emulator_url
from respx_checks import check_signed

from relay import AsyncRelay, ChannelInfo, PublishResult, Relay, User
from relay.errors import ClientClosed, InvalidChannelName, InvalidData, LimitExceeded, ProtocolError
from relay.protocol.signing import user_auth
from relay.rules import ChannelRules
from relay.senders import RetryPolicy
from relay.testing import store_of
from relay.web import auth_router
from tests.conftest import TEST_APP

HOSTED_KEY, HOSTED_SECRET, HOSTED_APP = "hosted-key", "hosted-Secret-9f8e7d", "123"
HOSTED = f"pusher://{HOSTED_KEY}:{HOSTED_SECRET}@eu/apps/{HOSTED_APP}"
CHANNELS = f"https://api-eu.pusher.com/apps/{HOSTED_APP}/channels"
# Hosted Pusher's answer to info=subscription_count when the app has not enabled subscription counting
# (pusher/pusher-http-ruby#193)
COUNTING_OFF = "Cannot retrieve the subscription count because subscription counting is not enabled"


# -- 1. channel() on a Pusher app without subscription counting ---------------------------------------------------


@pytest.mark.parametrize("refusal", [{"text": COUNTING_OFF}, {"json": {"error": COUNTING_OFF}}], ids=["text", "json"])
async def test_channel_asks_again_without_subscription_count_once_per_client(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, refusal: dict[str, object]
) -> None:
    """Hosted Pusher refuses info=subscription_count with 400 unless the app enabled subscription counting (off by
    default): channel() failed on every default app. It asks again without it (subscription_count None), and the
    client remembers: later calls make one request."""

    def pusher(request: httpx.Request) -> httpx.Response:
        if "info" in request.url.params:
            return httpx.Response(400, **refusal)  # type: ignore[arg-type]
        return httpx.Response(200, json={"occupied": True})

    lobby = respx_mock.get(f"{CHANNELS}/lobby").mock(side_effect=pusher)
    presence = respx_mock.get(f"{CHANNELS}/presence-room").respond(200, json={"occupied": True, "user_count": 2})
    relay = make_relay(HOSTED)

    assert await relay.channel("lobby") == ChannelInfo("lobby", True, None, None)
    asked, again = (call.request for call in lobby.calls)
    assert (asked.url.path, again.url.path) == (f"/apps/{HOSTED_APP}/channels/lobby",) * 2
    check_signed(asked, HOSTED_KEY, HOSTED_SECRET, extra={"info": "subscription_count"})
    check_signed(again, HOSTED_KEY, HOSTED_SECRET)

    assert await relay.channel("lobby") == ChannelInfo("lobby", True, None, None)
    assert lobby.call_count == 3, "the client remembers that the app counts no subscriptions"
    check_signed(lobby.calls.last.request, HOSTED_KEY, HOSTED_SECRET)
    assert await relay.channel("presence-room") == ChannelInfo("presence-room", True, None, 2)
    check_signed(presence.calls.last.request, HOSTED_KEY, HOSTED_SECRET, extra={"info": "user_count"})

    other = make_relay(HOSTED)  # a client of its own finds out for itself (counting may have been enabled since)
    assert await other.channel("lobby") == ChannelInfo("lobby", True, None, None)
    assert lobby.call_count == 5
    check_signed(lobby.calls[3].request, HOSTED_KEY, HOSTED_SECRET, extra={"info": "subscription_count"})

    # Any other refusal is raised, not taken for that one
    refused = respx_mock.get(f"{CHANNELS}/orders").respond(400, text="Invalid info attribute")
    with pytest.raises(ProtocolError, match="Pusher answered 400: Invalid info attribute"):
        await make_relay(HOSTED).channel("orders")
    assert refused.call_count == 1
    check_signed(refused.calls.last.request, HOSTED_KEY, HOSTED_SECRET, extra={"info": "subscription_count"})


async def test_channel_on_emulator_apps_with_and_without_subscription_counting(
    start_emulator: StartEmulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """The emulator refuses info=subscription_count as hosted Pusher does where the app's subscription_count is off
    (its default), and answers it where it is on."""
    default = await start_emulator()
    relay = make_relay(emulator_url(default))
    await (await subscriber(default)).subscribe("lobby")
    for _ in range(2):
        assert await relay.channel("lobby") == ChannelInfo("lobby", True, None, None)
    assert [dict(sent.url.params).get("info") for sent in relay.requests] == ["subscription_count", None, None]
    assert {sent.url.path for sent in relay.requests} == {"/apps/1/channels/lobby"}

    counting = await start_emulator(app=replace(TEST_APP, subscription_count=True))
    relay = make_relay(emulator_url(counting))
    await (await subscriber(counting)).subscribe("lobby")
    assert await relay.channel("lobby") == ChannelInfo("lobby", True, 1, None)
    [asked] = relay.requests
    assert (asked.url.path, asked.url.params["info"]) == ("/apps/1/channels/lobby", "subscription_count")


# -- 2. a client closed during a request ------------------------------------------------------------------------------


async def test_close_during_a_request_is_client_closed(make_relay: MakeRelay) -> None:
    """close() (from another thread) or aclose() while a publish waits for its answer: the publish may have been
    delivered. It was a TransportError telling to switch to HTTPS. (aclose() ends the request at once; a thread's
    blocking read ends at the 1 s timeout, as closing a socket does not wake it.) A retry would first wait the 30 s
    backoff (at least half of it with jitter), so an answer within 5 s is the close's, not one after retries."""
    received = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        received.set()
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        retry = RetryPolicy(backoff=30.0, max_delay=30.0, timeout=1.0)
        relay = make_relay(f"emulator://{KEY}:{SECRET}@127.0.0.1:{port}/apps/1", retry)
        publish = asyncio.create_task(relay.publish("orders", "order-ready", {"id": 42}))
        await asyncio.wait_for(received.wait(), RECV_TIMEOUT)
        closed_at = time.monotonic()
        await relay.close()
        with pytest.raises(ClientClosed) as raised:
            await asyncio.wait_for(publish, 10)
        assert time.monotonic() - closed_at < 5, "not after the retries"
        assert str(raised.value) == (
            f"this Relay client was closed during a request to 127.0.0.1:{port}: the request may or may not have "
            "reached the provider (a publish may have been delivered); create another client, and check before "
            "sending it again"
        )
        with pytest.raises(ClientClosed, match=r"^this Relay client is closed: create another one$"):
            await relay.publish("orders", "order-ready", {"id": 43})
    finally:
        server.close()


# -- 3. sign-in watchlists ------------------------------------------------------------------------------------------


async def test_a_watchlist_reaches_the_emulator(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """authenticate_user signed {id, user_info} only: a Pusher watchlist (pusher-http-python's user_data carries it)
    was dropped without a word, and no watchlist_events came."""
    relay = make_relay(emulator_url(emulator))
    alice, bob = await subscriber(emulator), await subscriber(emulator)
    body = await relay.authenticate_user(alice.socket_id, User("alice", {"name": "Alice"}, watchlist=("bob", "carol")))
    assert json.loads(body["user_data"]) == {
        "id": "alice",
        "user_info": {"name": "Alice"},
        "watchlist": ["bob", "carol"],
    }
    await alice.signin(body)
    assert (await alice.expect("pusher_internal:watchlist_events"))["data"] == {
        "events": [{"name": "offline", "user_ids": ["bob", "carol"]}]
    }

    # As a mapping, the way pusher-http-python's authenticate_user takes user_data
    await bob.signin(await relay.authenticate_user(bob.socket_id, {"id": "bob", "watchlist": ["alice"]}))
    assert (await bob.expect("pusher_internal:watchlist_events"))["data"] == {
        "events": [{"name": "online", "user_ids": ["alice"]}]
    }
    assert (await alice.expect("pusher_internal:watchlist_events"))["data"] == {
        "events": [{"name": "online", "user_ids": ["bob"]}]
    }


async def test_the_sign_in_endpoint_passes_the_watchlist_on(emulator: Emulator, subscriber: Subscribe) -> None:
    """relay.web's /pusher/user-auth signs the user current_user returns, watchlist included."""

    def current_user(request: Request) -> User | None:
        return User("alice", watchlist=("bob",))

    app = FastAPI()
    app.include_router(auth_router(Relay(emulator_url(emulator)), ChannelRules(), current_user))
    alice = await subscriber(emulator)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        answer = await http.post("/pusher/user-auth", data={"socket_id": alice.socket_id})
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["user_data"]) == {"id": "alice", "watchlist": ["bob"]}
    await alice.signin(answer.json())
    assert (await alice.expect("pusher_internal:watchlist_events"))["data"] == {
        "events": [{"name": "offline", "user_ids": ["bob"]}]
    }


@pytest.mark.parametrize(
    ("user", "error", "message"),
    [
        (
            {"id": "alice", "watchlist": [f"user-{i}" for i in range(101)]},
            LimitExceeded,
            "the watchlist has 101 user ids; Pusher watches at most 100",
        ),
        (
            {"id": "alice", "watchlist": "bob"},
            ProtocolError,
            "a user's watchlist is a list of user id strings, not 'bob'",
        ),
        ({"id": "alice", "watchlist": ["bob", 7]}, ProtocolError, "a user's watchlist is a list of user id strings"),
    ],
    ids=["over-100", "a-str", "not-strings"],
)
async def test_a_watchlist_pusher_would_not_take_is_refused(
    make_relay: MakeRelay, user: dict[str, object], error: type[Exception], message: str
) -> None:
    """Pusher watches the first 100 and tells only the browser (4302): refused here, with the limit."""
    relay = make_relay("memory://hunt-watchlist")
    with pytest.raises(error) as raised:
        await relay.authenticate_user("1.2", user)
    assert str(raised.value).startswith(message)
    assert len((await relay.authenticate_user("1.2", {"id": "alice", "watchlist": ["b"] * 100}))["auth"]) > 0


async def test_a_watchlist_id_listed_twice_is_signed_once(make_relay: MakeRelay) -> None:
    """101 entries naming 100 users are taken (as the emulator takes them), and the signed user_data lists each once,
    so what Pusher reads has no more than its 100."""
    relay = make_relay("pusher://k:s@eu/apps/1")
    hundred = [f"user-{n}" for n in range(100)]
    answer = await relay.authenticate_user("1.2", {"id": "alice", "watchlist": [*hundred, "user-7"]})
    assert json.loads(answer["user_data"])["watchlist"] == hundred


LONE = "a string cut in the middle of a character"


@pytest.mark.parametrize(
    ("user", "error", "message"),
    [
        ({"id": "alice", "info": {"name": "Ann \ud83c"}}, InvalidData, "a user's info contains a lone UTF-16"),
        ("al\udc00ice", ProtocolError, "a user id contains a lone UTF-16 surrogate ('\\udc00' at character 2)"),
        ({"id": "alice", "watchlist": ["bob\ud800"]}, ProtocolError, "a user's watchlist contains a lone UTF-16"),
    ],
    ids=["info", "id", "watchlist"],
)
@pytest.mark.parametrize("url", ["pusher://k:s@eu/apps/1", "ably://app.key:secret@rest.ably.io", "memory://lone"])
async def test_a_user_with_half_a_utf16_pair_is_refused_by_name(
    make_relay: MakeRelay, url: str, user: object, error: type[Exception], message: str
) -> None:
    """A name cut with JavaScript's slice() may end in half an emoji, which UTF-8 cannot encode: Pusher's signature
    raised a bare UnicodeEncodeError, and a sign-in's user_data carried it on to the provider."""
    relay = make_relay(url)
    calls = [lambda: relay.authorize_channel("1.2", "presence-room", user)]
    if not url.startswith("ably"):  # Ably has no sign-in
        calls.append(lambda: relay.authenticate_user("1.2", user))
    for call in calls:
        with pytest.raises(error) as raised:
            await call()
        assert str(raised.value).startswith(message) and str(raised.value).endswith(LONE)


# -- 4. one AsyncRelay across event loops -----------------------------------------------------------------------------


async def test_one_async_client_serves_several_event_loops(emulator: Emulator, subscriber: Subscribe) -> None:
    """A module-level AsyncRelay used by successive asyncio.run() calls (scripts, CLI commands, per-test loops)
    raised a bare RuntimeError('Event loop is closed') every other call: httpx's pooled connections belong to the
    loop that opened them."""
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    client = AsyncRelay(emulator_url(emulator))
    assert await client.publish("orders", "tick", {"run": "here"}) == PublishResult(("orders",))

    def successive_runs() -> list[PublishResult]:
        return [asyncio.run(client.publish("orders", "tick", {"run": run})) for run in range(3)]

    assert await asyncio.to_thread(successive_runs) == [PublishResult(("orders",))] * 3
    for run in ["here", 0, 1, 2]:
        assert json.loads((await sub.expect("tick", "orders"))["data"]) == {"run": run}

    await asyncio.to_thread(asyncio.run, client.aclose())  # closed from yet another loop: closed for every loop
    with pytest.raises(ClientClosed):
        await client.publish("orders", "tick", {"run": "after"})


# -- 5. the user ids terminate_user_connections takes ---------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["", "a/b", "../../../channels/x", "x" * 300, 4.2])
async def test_terminate_refuses_the_user_ids_no_user_signs_in_with_or_no_path_carries(
    emulator: Emulator, make_relay: MakeRelay, user_id: object
) -> None:
    """'../../../channels/x' left the /apps/{id} prefix once httpx normalised the path, and memory:// recorded it as
    done. (A number was a TypeError in both; an int is now the id of its digits, test_library_hunt_fixes_3.py.)"""
    for url in (emulator_url(emulator), "memory://hunt-terminate"):
        relay = make_relay(url)
        with pytest.raises(InvalidChannelName, match="user id"):
            await relay.terminate_user_connections(user_id)
        assert relay.requests == []
    assert store_of(Relay("memory://hunt-terminate")).terminated_users == []


@pytest.mark.parametrize("user_id", ["auth0|123", "a?b", "a b"])
async def test_terminate_takes_a_user_id_no_server_to_user_channel_carries(
    emulator: Emulator, make_relay: MakeRelay, subscriber: Subscribe, user_id: str
) -> None:
    """An Auth0-style id ('auth0|123') signs in, but no #server-to-user- channel can carry it, so send_to_user refuses
    it; terminate needs no channel, and closes that user's connections (percent-encoded in the path)."""
    sub = await subscriber(emulator)
    user_data = json.dumps({"id": user_id})
    await sub.signin({"auth": user_auth(KEY, SECRET, sub.socket_id, user_data), "user_data": user_data})
    relay = make_relay(emulator_url(emulator))
    with pytest.raises(InvalidChannelName, match="user id"):
        await relay.send_to_user(user_id, "notice", {})
    await relay.terminate_user_connections(user_id)
    assert await sub.closed() == 4009
    memory = make_relay("memory://hunt-terminate-any")
    await memory.terminate_user_connections(user_id)
    assert store_of(Relay("memory://hunt-terminate-any")).terminated_users[-1] == user_id
