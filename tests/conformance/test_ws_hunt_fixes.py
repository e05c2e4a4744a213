"""Fixes from a bug hunt on the Pusher WebSocket side (protocol 7), each against a real emulator over real sockets.

1. A connection that subscribed to a private channel and left it was closed with 4009 by
   ``user_authentication_timeout``, and pusher-js never reconnects after 4009. Hosted Pusher: a connection that has
   subscribed to an authorized channel is authorized, and stays so.
2. Binary messages were answered one by one, outside the inbound frame budget that text frames use.
3. Frames over ``max_event_bytes + 4096`` were refused before their payloads were checked: a sign-in with a full
   watchlist, or a client event of characters JSON escapes, within every limit, never went through.
4. The client-event limit was a fixed one-second window (19 relayed within 0.11 s across its edge), and refused
   events used its budget.
6. A duplicate subscribe answered ``subscription_succeeded`` again, whatever its auth said; hosted Pusher answers a
   code-null ``pusher:error`` "Existing subscription to channel X" and keeps the subscription as it was.
7. A subscribe without a string channel got a ``subscription_error`` for the channel "None" or "123".
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relay.protocol import frames
from relay.protocol.channels import DEFAULT_LIMITS, Limits
from relay.protocol.signing import channel_auth
from tests.conformance.wsclient import (
    APP,
    Client,
    Connect,
    Frame,
    api_get,
    expect_fatal,
    publish,
    unique,
)
from tests.conftest import RunningEmulator, StartEmulator
from tests.node_scenarios import NODE_DIR, app_env, run_scenario
from tests.node_scenarios import node_modules as installed_modules


@pytest.fixture(scope="module")
def node_modules() -> Path:
    return installed_modules("pusher-js", "pusher")


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


async def pair(target: RunningEmulator, connect: Connect, channel: str) -> tuple[Client, Client]:
    """A sender and a listener, both subscribed to ``channel``."""
    sender, listener = await connect(target), await connect(target)
    await sender.subscribed(channel)
    await listener.subscribed(channel)
    return sender, listener


async def frames_until_quiet(client: Client, quiet: float = 0.5) -> list[Frame]:
    """Every frame the server sends until it has been silent for ``quiet`` seconds."""
    seen: list[Frame] = []
    try:
        while True:
            seen.append(await client.recv(quiet))
    except TimeoutError:
        return seen


# -- 1. once authorized, always authorized ----------------------------------------------------------------------------


async def test_a_connection_that_left_its_private_channel_stays_authorized(
    start_emulator: StartEmulator, connect: Connect
) -> None:
    """Connections that subscribed to a private or a presence channel and unsubscribed from it outlive
    ``user_authentication_timeout`` and still receive events; one that never authorized is closed with 4009."""
    target = await start_emulator(app=replace(APP, user_authentication_timeout=0.5))
    left_private, left_presence, never = await connect(target), await connect(target), await connect(target)
    for client in (left_private, left_presence, never):
        await client.subscribed("public-news")
    await left_private.subscribed("private-chat")
    await left_presence.subscribed("presence-room", compact({"user_id": "p"}))
    await left_private.send("pusher:unsubscribe", {"channel": "private-chat"})
    await left_presence.send("pusher:unsubscribe", {"channel": "presence-room"})
    await left_private.sync()
    await left_presence.sync()
    assert set((await api_get(target, "/channels"))["channels"]) == {"public-news"}

    message = await expect_fatal(never.ws, 4009, wait=3.0)  # a sweep past the timeout has checked everyone
    assert "unauthorized" in message.lower()
    await publish(target, "public-news", "still-here", "1")
    for client in (left_private, left_presence):
        assert (await client.expect("still-here", "public-news"))["data"] == "1"
        await client.sync()


_PUSHER_JS_SCENARIO = """
import {{ Scenario, assert, collect, connect, once, serverClient, sleep, startAuthServer, step, subscribe, until }}
  from '{node}/lib.mjs';

const WATCHLIST = {watchlist};

new Scenario('pusher-js-hunt-fixes', {{ timeoutMs: 25000 }}).run(async (s) => {{
  const auth = await startAuthServer(s, {{ watchlists: {{ alice: WATCHLIST }} }});
  const api = serverClient();

  // 1. The page leaves its private channel and keeps a public one; another page never authorizes.
  const page = await connect(s, auth, 'alice');
  const firstSocketId = page.connection.socket_id;
  const pageErrors = collect(page.connection, 'error');
  const pageStates = [];
  page.connection.bind('state_change', ({{ current }}) => pageStates.push(current));
  const {{ channel: news }} = await subscribe(page, 'public-news');
  await subscribe(page, 'private-chat');
  page.unsubscribe('private-chat');
  const anonymous = await connect(s, null, 'anonymous');
  const anonymousErrors = collect(anonymous.connection, 'error');
  await subscribe(anonymous, 'public-news');
  await until(() => anonymousErrors.some((e) => e.data && e.data.code === 4009), {{
    timeoutMs: 6000,
    what: 'the page that never authorized to get 4009',
  }});
  s.check('unauthorized-page-closed');
  await sleep(1200);  // one more sweep
  assert.equal(page.connection.state, 'connected');
  assert.equal(page.connection.socket_id, firstSocketId);
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(pageStates, []);
  const published = once(news, 'still-here');
  await api.trigger('public-news', 'still-here', {{ n: 1 }});
  assert.deepEqual(await published, {{ n: 1 }});
  s.check('page-that-left-its-private-channel-stays');

  // 3. A sign-in whose user_data holds a full watchlist of the longest ids completes.
  page.signin();
  await Promise.race([
    page.user.signinDonePromise,
    sleep(5000).then(() => {{ throw new Error('signin did not complete'); }}),
  ]);
  assert.equal(page.user.user_data.watchlist.length, WATCHLIST.length);
  s.check('signin-with-a-full-watchlist');

  // 6. pusher-js's own resubscription after a reconnect is a new connection's: no "Existing subscription".
  await subscribe(page, 'private-chat');
  await until(() => page.user.serverToUserChannel && page.user.serverToUserChannel.subscribed, {{
    what: 'the server-to-user channel',
  }});
  const resubscribed = ['public-news', 'private-chat'].map((name) =>
    collect(page.channel(name), 'pusher:subscription_succeeded'));
  assert.equal(await step('close-all-4200'), 'ok');
  await until(() => page.connection.state === 'connected' && page.connection.socket_id !== firstSocketId, {{
    what: 'pusher-js to reconnect',
  }});
  await until(() => resubscribed.every((seen) => seen.length === 1), {{ what: 'resubscription' }});
  await until(() => page.user.serverToUserChannel && page.user.serverToUserChannel.subscribed, {{
    what: 'the server-to-user channel after the reconnect',
  }});
  const toAlice = once(page.user, 'notice');
  await api.sendToUser('alice', 'notice', {{ n: 2 }});
  assert.deepEqual(await toAlice, {{ n: 2 }});
  const pusherErrors = pageErrors.filter((e) => e.type === 'PusherError').map((e) => e.data);
  // The 4200 comes twice: its pusher:error and its close code.
  assert.ok(pusherErrors.length && pusherErrors.every((data) => data.code === 4200), JSON.stringify(pusherErrors));
  s.check('resubscribed-after-reconnect');
}});
"""


async def test_pusher_js_page_that_left_its_private_channel_keeps_its_connection(
    node_modules: Path, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    """pusher-js 8 with ``user_authentication_timeout``: a page that subscribed to a private channel and left it keeps
    its connection and its events (pusher-js gives up for good after 4009, which a page that never authorized gets);
    its sign-in with a watchlist of 100 ids of 128 non-ASCII characters completes; after a reconnect it resubscribes
    and signs in again without any "Existing subscription" error."""
    target = await start_emulator(app=replace(APP, user_authentication_timeout=1.0))
    watchlist = [f"{n:03d}" + "ü" * 125 for n in range(100)]
    script = tmp_path / "hunt_fixes.mjs"
    script.write_text(_PUSHER_JS_SCENARIO.format(node=NODE_DIR, watchlist=json.dumps(watchlist)))

    async def close_all(step: dict[str, Any]) -> str:
        assert step["step"] == "close-all-4200"
        for connection in list(target.node.connections):
            connection.shutdown()
        return "ok"

    run = await run_scenario(script, app_env(target.host, target.port, target.app), on_step=close_all, limit_s=30)
    assert run.summary["checks"] == [
        "unauthorized-page-closed",
        "page-that-left-its-private-channel-stays",
        "signin-with-a-full-watchlist",
        "resubscribed-after-reconnect",
    ]


# -- 2. binary frames use the inbound frame budget --------------------------------------------------------------------


async def test_binary_frames_use_the_inbound_frame_budget(start_emulator: StartEmulator, connect: Connect) -> None:
    """A flood of binary messages gets one error each only up to the burst, then one "Too many messages" (4301),
    like a flood of text frames; the socket stays open and is served once the budget refills."""
    limits = Limits(inbound_frames_per_second=10, inbound_frame_burst=20)
    target = await start_emulator(app=replace(APP, limits=limits))
    client = await connect(target)
    began = time.monotonic()
    for _ in range(200):
        await client.ws.send(b"x")
    replies = await frames_until_quiet(client)
    elapsed = time.monotonic() - began  # at most this long for the budget to refill (a slow machine's flood is slow)
    messages = [frame["data"]["message"] for frame in replies if frame["event"] == "pusher:error"]
    assert len(messages) == len(replies)
    binary = [message for message in messages if "Binary frames are not supported" in message]
    assert 20 <= len(binary) <= 20 + math.ceil(10 * elapsed), replies  # the burst, and what refilled meanwhile
    flood = [frame for frame in replies if frame["data"]["code"] == 4301]  # reported at most once a second
    assert 1 <= len(flood) <= 1 + int(elapsed) and "Too many messages" in flood[0]["data"]["message"], replies
    await client.sync()


async def test_large_frames_take_inbound_tokens_by_their_size(start_emulator: StartEmulator, connect: Connect) -> None:
    """Parsing costs by the byte: a 64 KiB frame takes 17 tokens (one per 4 KiB begun), so of three sent at once on a
    budget of 40 the third is dropped with 4301, where three small frames would all pass. Small frames keep their
    one token each, and the socket is served once the budget refills."""
    limits = Limits(inbound_frames_per_second=10, inbound_frame_burst=40)
    target = await start_emulator(app=replace(APP, limits=limits))
    client = await connect(target)
    big = compact({"event": "pusher:ping", "data": {"pad": "x" * (64 * 1024 - 40)}})
    assert 16 * 4096 <= len(big) < 17 * 4096
    for _ in range(3):
        await client.ws.send(big)
    replies = await frames_until_quiet(client)
    assert [frame["event"] for frame in replies] == ["pusher:pong", "pusher:pong", "pusher:error"], replies
    assert replies[2]["data"]["code"] == 4301 and "Too many messages" in replies[2]["data"]["message"]
    await client.sync()


# -- 3. the frame size cap admits every message the limits allow -------------------------------------------------------


def _user_data(ids: list[str], ensure_ascii: bool) -> str:
    """The largest user_data the limits allow: the longest id, a full watchlist, 1 KB of user_info (500 quotes
    compact-encode to 1,000 bytes), written by an encoder that escapes non-ASCII (Python's default) or not."""
    user = {"id": "u" * 128, "watchlist": ids, "user_info": {"name": '"' * 500}}
    assert len(compact(user["user_info"]).encode()) <= DEFAULT_LIMITS.max_user_info_bytes
    return json.dumps(user, separators=(",", ":"), ensure_ascii=ensure_ascii)


@pytest.mark.parametrize(
    ("ids", "ensure_ascii"),
    [
        pytest.param([f"{n:03d}" + "x" * 125 for n in range(100)], True, id="ascii-ids"),
        pytest.param([f"{n:03d}" + "é" * 125 for n in range(100)], True, id="non-ascii-ids-escaped-twice"),
        pytest.param([f"{n:03d}" + "😀" * 125 for n in range(100)], False, id="four-byte-ids"),
    ],
)
async def test_signin_with_a_full_watchlist_and_the_largest_user_info_succeeds(
    emulator: RunningEmulator, connect: Connect, ids: list[str], ensure_ascii: bool
) -> None:
    """A sign-in within every limit is answered with signin_success and its watchlist events, however its user_data
    was escaped (14.5 KB for ASCII ids, about 90 KB for "é" escaped by the user_data's encoder and again in the
    frame): it was refused as a frame over 14,336 bytes, which pusher-js never ties to its sign-in."""
    client = await connect(emulator)
    user_data = _user_data(ids, ensure_ascii)
    frame = await client.signin(user_data)
    assert frame == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    watchlist = await client.expect("pusher_internal:watchlist_events")
    assert watchlist["data"] == {"events": [{"name": "offline", "user_ids": ids}]}
    await client.sync()


async def test_client_events_of_escaped_characters_within_the_data_limit_are_relayed(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """Client-event data is limited on its own size, not on its escaped size in the frame: 7,200 quotes (14 KB
    escaped) and 10,240 control characters (60 KB as "\\u0001") pass; one byte more is refused by the data limit."""
    sender, listener = await pair(emulator, connect, "private-escapes")
    for data in ('"' * 7200, "\x01" * DEFAULT_LIMITS.max_event_bytes):
        await sender.send("client-escaped", data, channel="private-escapes")
        assert (await listener.expect("client-escaped", "private-escapes"))["data"] == data
    await sender.send("client-escaped", "\x01" * (DEFAULT_LIMITS.max_event_bytes + 1), channel="private-escapes")
    await sender.expect_error(None, f"client event data is over {DEFAULT_LIMITS.max_event_bytes} bytes")
    await sender.sync()
    await listener.sync()


async def test_a_frame_over_the_parse_limit_gets_a_clear_error(start_emulator: StartEmulator, connect: Connect) -> None:
    """With a server frame limit above it, a frame of exactly the parse limit is read and one byte more gets a
    code-null "Message too large" error naming both sizes; the socket stays open."""
    target = await start_emulator(max_frame_bytes=1 << 20)
    limit = frames.client_frame_limit(DEFAULT_LIMITS)
    client = await connect(target)
    empty = compact({"event": "pusher:ping", "data": {"pad": ""}})
    at_limit = compact({"event": "pusher:ping", "data": {"pad": "x" * (limit - len(empty))}})
    assert len(at_limit) == limit
    await client.ws.send(at_limit)
    await client.expect("pusher:pong")
    over = compact({"event": "pusher:ping", "data": {"pad": "x" * (limit - len(empty) + 1)}})
    await client.ws.send(over)
    await client.expect_error(None, f"Message too large: the frame is {limit + 1} bytes; the limit is {limit}")
    await client.sync()


# -- 4. the client-event limit holds in any one-second span -----------------------------------------------------------


async def _relayed(listener: Client) -> list[int]:
    return [json.loads(frame["data"])["n"] for frame in await frames_until_quiet(listener)]


async def test_client_event_limit_refuses_past_ten_a_second_and_relays_again_after_it(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """End to end, with margins a loaded machine keeps: of eleven events sent at once ten are relayed and the
    eleventh gets 4301; ten more a second and a half later are relayed. That the limit holds in any one-second span,
    not in fixed windows, is tested to the edge on a fake clock (tests/emulator/test_session.py)."""
    sender, listener = await pair(emulator, connect, "private-span")
    for n in range(11):
        await sender.send("client-tick", {"n": n}, channel="private-span")
    assert await _relayed(listener) == list(range(10))
    refusals = await frames_until_quiet(sender)
    assert [(frame["event"], frame["data"]["code"]) for frame in refusals] == [("pusher:error", 4301)]
    await asyncio.sleep(1.5)  # from when the server had relayed the ten (the listener had them)
    for n in range(11, 21):
        await sender.send("client-tick", {"n": n}, channel="private-span")
    assert await _relayed(listener) == list(range(11, 21))
    assert await frames_until_quiet(sender) == []


async def test_refused_client_events_do_not_use_the_rate_budget(emulator: RunningEmulator, connect: Connect) -> None:
    """Events refused for their size or name, or for the rate itself, are relayed to no one and use none of the
    budget: after ten oversized and five misnamed events ten valid ones are all relayed, and events refused over the
    rate do not delay the next second's."""
    sender, listener = await pair(emulator, connect, "private-budget")
    oversized = "d" * (DEFAULT_LIMITS.max_event_bytes + 1)
    for _ in range(10):
        await sender.send("client-big", oversized, channel="private-budget")
    for _ in range(5):
        await sender.send("client-" + "n" * 200, "x", channel="private-budget")
    for n in range(10):
        await sender.send("client-tick", {"n": n}, channel="private-budget")
    assert await _relayed(listener) == list(range(10))
    refusals = [frame["data"]["message"] for frame in await frames_until_quiet(sender)]
    assert len(refusals) == 15 and not any("rate limit" in message for message in refusals), refusals

    await asyncio.sleep(1.05)  # counted from when the ten were relayed: the listener had them
    for n in range(10, 25):  # five over the rate
        await sender.send("client-tick", {"n": n}, channel="private-budget")
    assert await _relayed(listener) == list(range(10, 20))
    refusals = await frames_until_quiet(sender)
    assert [(frame["event"], frame["data"]["code"]) for frame in refusals] == [("pusher:error", 4301)] * 5
    await asyncio.sleep(1.05)
    for n in range(25, 35):
        await sender.send("client-tick", {"n": n}, channel="private-budget")
    assert await _relayed(listener) == list(range(25, 35))


# -- 6. a duplicate subscribe keeps the subscription as it was ---------------------------------------------------------


async def test_duplicate_subscribe_gets_existing_subscription_and_grants_nothing(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """A second subscribe to a channel the socket has gets hosted Pusher's code-null "Existing subscription to
    channel X": no cache replay again, a bad signature is not answered with success, a presence duplicate for another
    user does not change the member; events still arrive once, and after an unsubscribe the channel can be joined
    again."""
    await publish(emulator, "cache-dup", "last", '{"v":1}')
    client = await connect(emulator)
    await client.subscribed("cache-dup")
    assert (await client.expect("last", "cache-dup"))["data"] == '{"v":1}'
    await client.send("pusher:subscribe", {"channel": "cache-dup"})
    await client.expect_error(None, "Existing subscription to channel cache-dup")

    await client.subscribed("private-dup")
    await client.send("pusher:subscribe", {"channel": "private-dup", "auth": f"{APP.key}:{'0' * 64}"})
    await client.expect_error(None, "Existing subscription to channel private-dup")

    await client.subscribed("presence-dup", compact({"user_id": "first"}))
    other = compact({"user_id": "second"})
    auth = channel_auth(APP.key, APP.secret, client.socket_id, "presence-dup", other)
    await client.send("pusher:subscribe", {"channel": "presence-dup", "auth": auth, "channel_data": other})
    await client.expect_error(None, "Existing subscription to channel presence-dup")
    await client.sync()
    assert await api_get(emulator, "/channels/presence-dup/users") == {"users": [{"id": "first"}]}

    for channel in ("cache-dup", "private-dup", "presence-dup"):
        await publish(emulator, channel, "once", "1")
        await client.expect("once", channel)
    await client.sync()

    await client.send("pusher:unsubscribe", {"channel": "private-dup"})
    await client.subscribed("private-dup")


# -- 7. a subscribe without a string channel --------------------------------------------------------------------------


NOT_A_STRING_CHANNEL = [
    pytest.param({}, "has no channel", id="missing"),
    pytest.param({"channel": None}, "has no channel", id="null"),
    pytest.param({"channel": 123}, "has a channel that is not a string", id="number"),
    pytest.param({"channel": ["news"]}, "has a channel that is not a string", id="array"),
    pytest.param({"channel": {"name": "news"}}, "has a channel that is not a string", id="object"),
]


@pytest.mark.parametrize(("data", "problem"), NOT_A_STRING_CHANNEL)
async def test_subscribe_without_a_string_channel_gets_a_pusher_error(
    emulator: RunningEmulator, connect: Connect, data: dict[str, object], problem: str
) -> None:
    """No subscription_error for a channel named "None" or "123" (pusher-js would file it under that name): a
    code-null pusher:error saying what is wrong, and the socket goes on."""
    client = await connect(emulator)
    await client.send("pusher:subscribe", {**data, "auth": ""})
    await client.expect_error(None, f"pusher:subscribe {problem}")
    await client.sync()
    await client.subscribed(unique("after-"))


@pytest.mark.parametrize(("data", "problem"), NOT_A_STRING_CHANNEL)
async def test_unsubscribe_without_a_string_channel_gets_a_pusher_error_and_keeps_every_subscription(
    emulator: RunningEmulator, connect: Connect, data: dict[str, object], problem: str
) -> None:
    """An unsubscribe naming no channel was ignored without a word, as one naming a channel not subscribed still is
    (protocol §36): it is a client bug, so a code-null pusher:error says what is wrong, and nothing is unsubscribed."""
    client = await connect(emulator)
    channel = unique("kept-")
    await client.subscribed(channel)
    await client.send("pusher:unsubscribe", data)
    await client.expect_error(None, f"pusher:unsubscribe {problem}")
    await client.send("pusher:unsubscribe", {"channel": unique("never-subscribed-")})
    await publish(emulator, channel, "still-here", "1")
    await client.expect("still-here", channel)
