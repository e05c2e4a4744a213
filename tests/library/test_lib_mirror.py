"""Several providers in one configuration: ``mirror:`` and ``failover:`` (issue 6, "Beyond the anchors").

Semantics under test:

- ``mirror:A|B`` runs each operation on every provider in order. When all succeed it returns the first provider's
  result; when some fail it raises :class:`MirrorError` with ``results`` (what succeeded) and ``errors`` (what failed),
  both keyed by the provider's redacted URL, after trying every provider.
- ``failover:A|B`` runs it on the first provider that works. It moves on only when a provider could not be reached,
  was rate limited or answered 5xx (after the sender's retries; a 500 to a publish is not retried, so the next
  provider may deliver an event the first one also processed); any other error (4xx) is raised at once. When every
  provider fails, the last error is raised.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import respx
from libsupport import MakeRelay, StartEmulator, StartStoppable, Subscribe, emulator_url
from respx_checks import check_sent

from relay import MirrorError, PublishResult
from relay.errors import (
    AuthenticationError,
    InvalidChannelName,
    NotFound,
    PayloadTooLarge,
    RelayError,
    TransportError,
    UnsupportedCapability,
)


def label(port: int) -> str:
    return f"emulator://app-key:***@127.0.0.1:{port}/apps/1"


async def test_mirror_reaches_subscribers_on_both(
    start_emulator: StartEmulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    first, second = await start_emulator(), await start_emulator()
    on_first, on_second = await subscriber(first), await subscriber(second)
    await on_first.subscribe("orders")
    await on_second.subscribe("orders")
    relay = make_relay(f"mirror:{emulator_url(first)}|{emulator_url(second)}")
    assert repr(relay.client).endswith(f"('mirror:{label(first.port)}|{label(second.port)}')")
    assert await relay.publish("orders", "order-ready", {"id": 1}) == PublishResult(("orders",))
    for sub in (on_first, on_second):
        assert (await sub.expect("order-ready", "orders"))["data"] == '{"id":1}'
    assert [sent.url.port for sent in relay.requests] == [first.port, second.port]
    # Queries answer from the first provider, the only one asked (docs/library.md); its app counts no subscriptions
    # (the default), so the count is asked for, refused, and the channel asked again without it.
    assert (await relay.channel("orders")).occupied
    assert [sent.url.port for sent in relay.requests[2:]] == [first.port, first.port]


async def test_mirror_with_one_provider_down(
    start_stoppable: StartStoppable, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    dead, live = await start_stoppable(), await start_stoppable()
    await dead.stop()
    on_live = await subscriber(live)
    await on_live.subscribe("orders")
    relay = make_relay(f"mirror:{emulator_url(dead)}|{emulator_url(live)}")
    with pytest.raises(MirrorError) as raised:
        await relay.publish("orders", "order-ready", {"id": 2})
    error = raised.value
    assert list(error.results) == [label(live.port)]
    assert list(error.errors) == [label(dead.port)]
    assert isinstance(error.errors[label(dead.port)], TransportError)
    assert "mirror: 1 of 2 providers failed" in str(error) and "could not reach 127.0.0.1" in str(error)
    assert "app-secret" not in str(error)
    # The live provider got the publish anyway: the dead one did not stop it.
    assert (await on_live.expect("order-ready", "orders"))["data"] == '{"id":2}'
    dead_attempts = [sent for sent in relay.requests if sent.url.port == dead.port]
    assert len(dead_attempts) == 3, "connection refused is retried (nothing was sent)"


async def test_mirror_with_every_provider_down(start_stoppable: StartStoppable, make_relay: MakeRelay) -> None:
    first, second = await start_stoppable(), await start_stoppable()
    await first.stop()
    await second.stop()
    relay = make_relay(f"mirror:{emulator_url(first)}|{emulator_url(second)}")
    with pytest.raises(MirrorError) as raised:
        await relay.publish("orders", "order-ready", {"id": 3})
    assert raised.value.results == {}
    assert set(raised.value.errors) == {label(first.port), label(second.port)}
    # A query goes to the first provider only, and its error is raised as it would be unmirrored: code that catches
    # TransportError (or NotFound, RateLimited with its retry_after) works the same with a mirror
    with pytest.raises(TransportError) as queried:
        await relay.channel("orders")
    assert "could not reach 127.0.0.1" in str(queried.value) and f":{first.port}" in str(queried.value)


async def test_a_mirror_s_query_raises_its_first_provider_s_own_error(
    start_emulator: StartEmulator, make_relay: MakeRelay
) -> None:
    first, second = await start_emulator(), await start_emulator()
    relay = make_relay(f"mirror:{emulator_url(first).replace('/apps/1', '/apps/9')}|{emulator_url(second)}")
    with pytest.raises(NotFound) as raised:
        await relay.channels()
    assert raised.value.http_status == 404 and "unknown app id '9'" in str(raised.value)


@pytest.mark.parametrize(
    ("operation", "error"),
    [
        (lambda relay: relay.send_to_user("a b", "e", 1), InvalidChannelName),
        (lambda relay: relay.terminate_user_connections("a/b"), InvalidChannelName),
        (lambda relay: relay.presence_members("orders"), InvalidChannelName),
    ],
    ids=["send_to_user", "terminate", "presence_members"],
)
async def test_a_mirror_raises_the_callers_mistake_before_sending(
    start_emulator: StartEmulator,
    make_relay: MakeRelay,
    operation: Callable[[Any], Awaitable[object]],
    error: type[RelayError],
) -> None:
    """What a provider refuses as input (a user id no channel can carry, members of a channel that has none) is the
    same 400 error under mirror: as with that provider alone, raised before any provider is sent anything; it was a
    MirrorError (502), which the gateway answered as the providers' failure."""
    running = await start_emulator()
    relay = make_relay(f"mirror:{emulator_url(running)}|memory://mirror-mistakes")
    with pytest.raises(error) as raised:
        await operation(relay)
    assert raised.value.http_status == 400
    assert relay.requests == []


async def test_a_mirror_s_query_checks_the_channel_name_against_every_provider_first(
    start_emulator: StartEmulator, make_relay: MakeRelay
) -> None:
    """docs/library.md: queries use the first provider, the name checked against every provider first. An emulator
    takes names of 200 characters and hosted Pusher 164: a query of 170 is refused as Pusher refuses it, unsent."""
    running = await start_emulator()
    relay = make_relay(f"mirror:{emulator_url(running)}|pusher://key:secret@eu/apps/1")
    for query in (lambda: relay.channel("c" * 170), lambda: relay.presence_members("presence-" + "m" * 161)):
        with pytest.raises(InvalidChannelName) as raised:
            await query()
        assert str(raised.value) == "channel name is 170 characters long; the limit is 164"
    assert relay.requests == []
    assert (await relay.channel("c" * 164)).occupied is False  # within both: the emulator answers it


async def test_a_mirror_with_ably_refuses_encrypted_channels_before_pusher_delivers(
    start_emulator: StartEmulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """mirror:PUSHER?encryption_master_key=…|ABLY: the Pusher side would encrypt, the Ably side publish in clear, so
    the publish is refused before either is sent it (UnsupportedCapability, naming the channel); a private- channel
    goes to both."""
    running = await start_emulator()
    key = base64.b64encode(bytes(range(32))).decode()
    ably = f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}?tls=false"
    relay = make_relay(f"mirror:{emulator_url(running, query=f'encryption_master_key={key}')}|{ably}")
    with pytest.raises(UnsupportedCapability) as raised:
        await relay.publish("private-encrypted-card", "e", {"pan": "4111"})
    assert "'private-encrypted-card' would be published in clear" in str(raised.value)
    assert relay.requests == []
    on_pusher = await subscriber(running)
    await on_pusher.subscribe("orders")
    assert await relay.publish("orders", "e", {"id": 1}) == PublishResult(("orders",))
    assert [
        frame["data"] for frame in (await on_pusher.expect("e", "orders"), await on_pusher.expect("e", "orders"))
    ] == [
        '{"id":1}',
        '{"id":1}',
    ]


async def test_failover_to_the_second_when_the_first_is_unreachable(
    start_stoppable: StartStoppable, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    dead, live = await start_stoppable(), await start_stoppable()
    await dead.stop()
    on_live = await subscriber(live)
    await on_live.subscribe("orders")
    relay = make_relay(f"failover:{emulator_url(dead)}|{emulator_url(live)}")
    assert await relay.publish("orders", "order-ready", "x") == PublishResult(("orders",))
    assert (await on_live.expect("order-ready", "orders"))["data"] == "x"
    assert [sent.url.port for sent in relay.requests] == [dead.port] * 3 + [live.port]
    assert (await relay.channel("orders")).occupied


async def test_failover_stops_at_the_first_that_works(
    start_stoppable: StartStoppable, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    first, second = await start_stoppable(), await start_stoppable()
    on_first = await subscriber(first)
    await on_first.subscribe("orders")
    relay = make_relay(f"failover:{emulator_url(first)}|{emulator_url(second)}")
    await relay.publish("orders", "e", "x")
    assert (await on_first.expect("e", "orders"))["data"] == "x"
    assert [sent.url.port for sent in relay.requests] == [first.port]


async def test_failover_does_not_fail_over_on_4xx(
    start_stoppable: StartStoppable, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    first, second = await start_stoppable(), await start_stoppable()
    on_second = await subscriber(second)
    await on_second.subscribe("orders")
    relay = make_relay(f"failover:{emulator_url(first)}|{emulator_url(second)}")
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish("orders", "big", "x" * 20_000)
    assert raised.value.http_status == 413
    assert [sent.url.port for sent in relay.requests] == [first.port], "the second provider was never tried"
    wrong_secret = make_relay(f"failover:{emulator_url(first, secret='wrong')}|{emulator_url(second)}")
    with pytest.raises(AuthenticationError):
        await wrong_secret.publish("orders", "e", "x")
    assert [sent.url.port for sent in wrong_secret.requests] == [first.port]
    await relay.publish("orders", "small", "y")
    with pytest.raises(TimeoutError):
        await on_second.expect("small", "orders", wait=0.2)


async def test_failover_when_every_provider_fails_raises_the_last_error(
    start_stoppable: StartStoppable, make_relay: MakeRelay
) -> None:
    first, second = await start_stoppable(), await start_stoppable()
    await first.stop()
    await second.stop()
    relay = make_relay(f"failover:{emulator_url(first)}|{emulator_url(second)}")
    with pytest.raises(TransportError):
        await relay.publish("orders", "e", "x")
    assert [sent.url.port for sent in relay.requests] == [first.port] * 3 + [second.port] * 3


# -- failover on provider answers (hosted, respx) ----------------------------------------------------------------

HOSTED_KEY, HOSTED_SECRET = "k", "hosted-secret"
EU = f"pusher://{HOSTED_KEY}:{HOSTED_SECRET}@eu/apps/1"
US = f"pusher://{HOSTED_KEY}:{HOSTED_SECRET}@us2/apps/1"


@pytest.mark.parametrize(
    ("first_answer", "eu_attempts", "fails_over"),
    [
        (httpx.Response(503, text="maintenance"), 3, True),  # retried by the sender, then the next provider
        (httpx.Response(500, text="boom"), 1, True),  # a 500 to a publish is not retried: it may have been processed
        (httpx.Response(429, headers={"Retry-After": "0"}), 3, True),
        (httpx.Response(401, json={"error": "bad signature"}), 1, False),
        (httpx.Response(404, json={"error": "no app"}), 1, False),
        (httpx.Response(400, json={"error": "bad"}), 1, False),
    ],
)
async def test_failover_on_provider_answers(
    make_relay: MakeRelay,
    respx_mock: respx.MockRouter,
    first_answer: httpx.Response,
    eu_attempts: int,
    fails_over: bool,
) -> None:
    eu = respx_mock.post("https://api-eu.pusher.com/apps/1/events").mock(return_value=first_answer)
    us = respx_mock.post("https://api-us2.pusher.com/apps/1/events").respond(200, json={})
    relay = make_relay(f"failover:{EU}|{US}")
    if fails_over:
        assert await relay.publish("orders", "e", "x") == PublishResult(("orders",))
    else:
        with pytest.raises(RelayError) as raised:
            await relay.publish("orders", "e", "x")
        assert raised.value.http_status == first_answer.status_code
    body = b'{"name":"e","channels":["orders"],"data":"x"}'
    check_sent(eu, HOSTED_KEY, HOSTED_SECRET, [body] * eu_attempts)
    check_sent(us, HOSTED_KEY, HOSTED_SECRET, [body] if fails_over else [])
