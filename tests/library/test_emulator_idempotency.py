"""Server-side idempotent publishing in the emulator: the ``idempotency_key`` parameter the Pusher adapter sends to
``emulator://`` URLs, so that a resend from another process (another serverless invocation, another ``relay serve``
replica) is not delivered twice, as Ably dedupes its message ids. Real emulators, real clients, real subscribers;
each client has its own memory of its keys, as two processes have, and one publish comes from a separate process."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import httpx
import nacl.secret
import pytest
from libsupport import MakeRelay, Subscribe, Twin

from relay import Event
from relay.emulator.idempotency import PublishedKeys
from relay.errors import IdempotencyKeyReused
from tests.cli_support import run_relay
from tests.conftest import RunningEmulator, emulator_url, signed_publish
from tests.library.test_idempotent_publish import pusher_events, subscribed

KEY = "0b6f2d4e-5a1c-4e8f-9d3b-7c2a1e0f4b6d"
REUSED = (
    f"the idempotency key {KEY!r} was used for another publish in the last 120 seconds: a resend must repeat the "
    "same channels, event, data and socket_id; give a new publish a new key"
)
SENT_RULE = "an idempotency key is 1 to 221 printable ASCII characters without spaces (a UUID or a ULID fits)"


def keys_sent(twin: Twin) -> list[str | None]:
    return [sent.url.params.get("idempotency_key") for sent in twin.requests if sent.method == "POST"]


# -- two clients, one emulator ------------------------------------------------------------------------------------


async def test_a_resend_from_another_process_is_delivered_once(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    one = make_relay(emulator_url(emulator))
    assert not (await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)).replayed
    # `relay publish` in a process of its own: its client has never seen the key
    other = await run_relay(
        "publish", "orders", "created", '{"id": 1}', "--idempotency-key", KEY, env={"RELAY_URL": emulator_url(emulator)}
    )
    assert (other.returncode, other.stderr) == (0, "")
    assert other.stdout == "already published (replayed for its idempotency key) created to orders\n"
    again = make_relay(emulator_url(emulator))
    # Its client had not seen the key either: the emulator's answer says it was replayed
    assert (await again.publish("orders", "created", {"id": 1}, idempotency_key=KEY)).replayed
    assert keys_sent(one) == keys_sent(again) == [KEY]
    assert await pusher_events(watcher, one, "orders") == ["created"]
    assert emulator.node.states["1"].meter.publishes == 2  # the first and the sentinel: the resends were not metered


async def test_a_batch_split_into_parts_resent_by_another_client_is_delivered_once(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    events = [Event("orders", f"e{index}", {"n": index}) for index in range(25)]
    one, other = make_relay(emulator_url(emulator)), make_relay(emulator_url(emulator))
    for relay in (one, other):
        result = await relay.publish_batch(events, idempotency_key=KEY)
        assert result.channels == ("orders",) * 25 and result.replayed is (relay is other)
        # Three calls of 10, 10 and 5 events, each part under the key and the index of its first event
        assert keys_sent(relay) == [f"{KEY}:0", f"{KEY}:10", f"{KEY}:20"]
    assert await pusher_events(watcher, one, "orders") == [f"e{index}" for index in range(25)]


async def test_the_key_reused_for_other_data_by_another_client_is_refused_and_not_delivered(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    one, other = make_relay(emulator_url(emulator)), make_relay(emulator_url(emulator))
    await one.publish("orders", "created", {"id": 1}, idempotency_key=KEY)
    with pytest.raises(IdempotencyKeyReused) as refused:
        await other.publish("orders", "created", {"id": 2}, idempotency_key=KEY)
    # The emulator's 422, not the client's own refusal (this client never used the key)
    assert refused.value.http_status == 422 and refused.value.answered_by == "the Relay emulator"
    assert refused.value.message == f"the Relay emulator answered 422: {REUSED}"
    assert await pusher_events(watcher, one, "orders") == ["created"]


async def test_publishes_without_a_key_are_each_delivered(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    one, other = make_relay(emulator_url(emulator)), make_relay(emulator_url(emulator))
    for relay in (one, other):
        for _ in range(2):
            await relay.publish("orders", "plain", "x")
        assert keys_sent(relay) == [None, None]
    assert await pusher_events(watcher, one, "orders") == ["plain"] * 4


async def test_an_encrypted_channel_resend_from_another_client_is_delivered_once_and_decrypts(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """Its data was encrypted with a random nonce, so another process's resend was another body, and the key was not
    sent: a second client delivered it again. Under a key the nonce is derived from the key and the data, so the
    resend is the same body; publishes under other keys, or of other data, still get nonces of their own."""
    master = "vM5PNSQnLuQNnTaXGXJwyC9zJ3bZNd4Rtd4vqs1sU8s="
    url = emulator_url(emulator, query=f"encryption_master_key={master}")
    channel = "private-encrypted-orders"
    one, other = make_relay(url), make_relay(url)
    watcher = await subscriber(emulator)
    auth = await one.authorize_channel(watcher.socket_id, channel)
    await watcher.subscribe(channel, {"auth": auth["auth"]})
    batch = [Event(channel, "packed", "x"), Event(channel, "packed", "x")]
    for relay in (one, other):
        await relay.publish(channel, "created", {"id": 1}, idempotency_key=KEY)
        await relay.publish_batch(batch, idempotency_key=KEY + "b")
        assert keys_sent(relay) == [KEY, f"{KEY}b:0"]
    bodies = [[sent.body for sent in relay.requests if sent.method == "POST"] for relay in (one, other)]
    assert bodies[0] == bodies[1]
    await one.publish(channel, "created", {"id": 1}, idempotency_key=KEY + "c")  # another publish, another key
    box = nacl.secret.SecretBox(base64.b64decode(auth["shared_secret"]))
    nonces = []
    for name in ("created", "packed", "packed", "created"):
        encrypted = json.loads((await watcher.expect(name, channel))["data"])
        plain = box.decrypt(base64.b64decode(encrypted["ciphertext"]), base64.b64decode(encrypted["nonce"]))
        assert json.loads(plain) == {"id": 1} if name == "created" else plain == b"x"  # a string is sent as it is
        nonces.append(encrypted["nonce"])
    assert len(set(nonces)) == 4  # the batch's two equal events too
    assert await pusher_events(watcher, one, channel) == []  # the resends were not delivered


async def test_an_encrypted_publish_without_a_key_gets_a_random_nonce_each_time(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    master = "vM5PNSQnLuQNnTaXGXJwyC9zJ3bZNd4Rtd4vqs1sU8s="
    relay = make_relay(emulator_url(emulator, query=f"encryption_master_key={master}"))
    for _ in range(2):
        await relay.publish("private-encrypted-orders", "created", {"id": 1})
    nonces = {json.loads(sent.json()["data"])["nonce"] for sent in relay.requests if sent.method == "POST"}
    assert len(nonces) == 2


# -- the HTTP API -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "got"),
    [
        ("", "got an empty one"),
        ("a b", "got one holding ' '"),
        ("k" * 222, "got 222 characters"),
        ("é", "got one holding 'é'"),
    ],
)
async def test_a_malformed_key_is_a_400_naming_the_rule_and_the_emulator_serves_on(
    emulator: RunningEmulator, subscriber: Subscribe, key: str, got: str
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    events = b'{"name":"refused","channels":["orders"],"data":"x"}'
    batch = b'{"batch":[{"name":"refused","channel":"orders","data":"x"}]}'
    async with httpx.AsyncClient() as http:
        for path, body in (("/events", events), ("/batch_events", batch)):
            answer = await http.send(signed_publish(emulator, path, body, key))
            assert (answer.status_code, answer.json()) == (400, {"error": f"{SENT_RULE}: {got}"})
        # The longest key the library sends (200 characters, ':' and a 20-digit index) is taken
        longest = "k" * 200 + ":" + "9" * 20
        ok = await http.send(signed_publish(emulator, "/events", events.replace(b"refused", b"served"), longest))
        assert (ok.status_code, ok.json()) == (200, {})
    assert (await watcher.expect("served", "orders"))["event"] == "served"


async def test_a_raw_resend_is_answered_as_the_first_and_a_refused_publish_is_not_remembered(
    emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    watcher = await subscribed(subscriber, emulator, "orders")
    body = b'{"name":"created","channels":["orders","audit"],"data":"x","info":"user_count"}'
    async with httpx.AsyncClient() as http:
        # Refused (user_count of a non-presence channel is skipped, but an unknown attribute is not): not remembered
        bad = await http.send(signed_publish(emulator, "/events", body.replace(b"user_count", b"nope"), KEY))
        assert bad.status_code == 400
        first = await http.send(signed_publish(emulator, "/events", body, KEY))
        again = await http.send(signed_publish(emulator, "/events", body, KEY))  # another auth_timestamp, maybe
        # The same key to other channels is another publish (Ably dedupes per channel)
        elsewhere = await http.send(signed_publish(emulator, "/events", body.replace(b',"audit"', b""), KEY))
        other = await http.send(signed_publish(emulator, "/events", body.replace(b'"x"', b'"y"'), KEY))
    assert (first.status_code, again.status_code, elsewhere.status_code) == (200, 200, 200)
    assert again.content == first.content == b'{"channels":{"orders":{},"audit":{}}}'
    assert (first.headers.get("idempotency-replayed"), again.headers["idempotency-replayed"]) == (None, "true")
    assert "idempotency-replayed" not in elsewhere.headers
    assert (other.status_code, other.json()) == (422, {"error": REUSED})
    assert (await watcher.expect("created", "orders"))["data"] == "x"  # the first publish
    assert (await watcher.expect("created", "orders"))["data"] == "x"  # the one to orders alone
    with pytest.raises(TimeoutError):
        await watcher.recv(wait=0.3)


# -- the memory's rules (a clock of the test's) -------------------------------------------------------------------


def marked(answer: str) -> str:
    """How these tests' memories mark an answer given again."""
    return f"{answer} again"


def test_a_key_is_remembered_for_the_window_and_the_oldest_go_past_the_bound() -> None:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    keys: PublishedKeys[str] = PublishedKeys(clock, capacity=2)
    answers = iter(["a1", "b1", "c1", "a2", "c2"])
    assert keys.once("a", b"a", b"body", lambda: next(answers), marked) == "a1"
    now[0] = 119.9
    assert (
        keys.once("a", b"a", b"body", lambda: next(answers), marked) == "a1 again"
    )  # within 120 s: the first answer, marked
    with pytest.raises(IdempotencyKeyReused):
        keys.once("a", b"a", b"other", lambda: next(answers), marked)
    assert keys.once("b", b"b", b"body", lambda: next(answers), marked) == "b1"
    assert keys.once("c", b"c", b"body", lambda: next(answers), marked) == "c1"  # a third: the oldest, a, is forgotten
    assert keys.once("a", b"a", b"body", lambda: next(answers), marked) == "a2"
    now[0] = 119.9 + 120
    assert keys.once("c", b"c", b"body", lambda: next(answers), marked) == "c2"  # 120 s on: forgotten


def test_each_publish_remembered_is_shared_once_and_another_nodes_are_answered_as_their_own() -> None:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    shared: list[tuple[bytes, bytes, str]] = []
    keys: PublishedKeys[str] = PublishedKeys(clock, share=lambda *told: shared.append(told))
    assert keys.once("a", b"a", b"body", lambda: "a1", marked) == "a1"
    assert keys.once("a", b"a", b"body", lambda: "a2", marked) == "a1 again"  # a resend: not shared again
    assert shared == [(b"a", hashlib.sha256(b"body").digest(), "a1")]
    keys.remember(b"b", hashlib.sha256(b"body").digest(), "b-elsewhere")
    keys.remember(b"a", hashlib.sha256(b"other").digest(), "a-elsewhere")  # news of a publish made here too: ignored
    assert keys.once("b", b"b", b"body", lambda: "b1", marked) == "b-elsewhere again"
    assert keys.once("a", b"a", b"body", lambda: "a3", marked) == "a1 again"
    with pytest.raises(IdempotencyKeyReused):
        keys.once("b", b"b", b"other", lambda: "b2", marked)
    assert b"b" in keys and len(shared) == 1
    now[0] = 120.0
    assert b"b" not in keys  # another node's publish is forgotten when the window ends, as this node's are
    assert keys.once("b", b"b", b"body", lambda: "b3", marked) == "b3"


def test_a_publish_read_from_redis_is_kept_for_the_time_it_had_left_even_behind_a_later_one() -> None:
    now = [0.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    keys: PublishedKeys[str] = PublishedKeys(clock)
    digest = hashlib.sha256(b"body").digest()
    keys.remember(b"late", digest, "late-elsewhere")  # heard of now: 120 s
    keys.remember(b"early", digest, "early-elsewhere", seconds_left=10.0)  # read from Redis: 10 s left, out of order
    now[0] = 9.9
    assert keys.once("early", b"early", b"body", lambda: "early-here", marked) == "early-elsewhere again"
    now[0] = 10.0
    assert b"early" not in keys
    assert keys.once("early", b"early", b"other", lambda: "early-new", marked) == "early-new"  # expired: no 422
    assert keys.once("early", b"early", b"other", lambda: "again", marked) == "early-new again"  # and remembered anew
    assert keys.once("late", b"late", b"body", lambda: "late-here", marked) == "late-elsewhere again"
