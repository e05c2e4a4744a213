"""Fixes from a bug hunt on the library, part 3: a lone UTF-16 surrogate in an Ably channel name or a ``channels()``
prefix, integer user ids in ``send_to_user`` and ``terminate_user_connections``, and an encrypted channel past the
first 100 of a publish (parts 1 and 2 are ``test_library_hunt_fixes.py`` and ``test_library_hunt_fixes_inputs.py``).

Against the real emulator, which serves Pusher's HTTP API and Ably's REST API. Every test that takes ``make_relay``
runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from libsupport import MakeRelay, Subscribe, Twin, emulator_url

from relay import Event, PublishResult
from relay.errors import InvalidChannelName, ProtocolError
from relay.testing import store_of
from tests.conftest import RunningEmulator

SURROGATE = (
    "contains a lone UTF-16 surrogate ('\\ud800' at character {at}), which UTF-8 cannot encode: a string cut in the "
    "middle of a character"
)
MASTER_KEY_B64 = base64.b64encode(bytes(range(32))).decode()
ONE_CALL_OF_CHANNELS = [f"orders-{index}" for index in range(100)]  # what Pusher takes in one call


def ably_url(running: RunningEmulator) -> str:
    return f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}?tls=false"


# -- 1. a lone surrogate in an Ably channel name or a channels() prefix -----------------------------------------------


@pytest.mark.parametrize(
    ("operation", "name", "where"),
    [
        (lambda relay: relay.publish("\ud800", "e", 1), "\ud800", ""),
        (lambda relay: relay.publish(["orders", "\ud800"], "e", 1), "\ud800", ""),
        (lambda relay: relay.publish_batch([Event("\ud800", "e", 1)]), "\ud800", "events[0]: "),
        (lambda relay: relay.channel("\ud800"), "\ud800", ""),
        (lambda relay: relay.presence_members("presence-\ud800"), "presence-\ud800", ""),
        (lambda relay: relay.authorize_channel("1.2", "private-\ud800"), "private-\ud800", ""),
        (lambda relay: relay.authorize_channels(["orders", "private-\ud800"]), "private-\ud800", "channels[1]: "),
    ],
    ids=["publish", "publish-to-several", "batch", "channel", "presence", "authorize", "token"],
)
async def test_ably_refuses_a_channel_name_utf8_cannot_encode(
    make_relay: MakeRelay,
    emulator: RunningEmulator,
    operation: Callable[[Twin], Awaitable[Any]],
    name: str,
    where: str,
) -> None:
    """A lone surrogate in a channel name was a bare UnicodeEncodeError from publish, channel and presence_members on
    ably:// (a 500 in the gateway); a publish to several channels, or a batch, sent it and got Ably's 400, and
    authorize_channel signed a token for it. Every other provider refused it as an InvalidChannelName: so does Ably
    now, before anything is sent or signed, with Ably's invalid-name code."""
    relay = make_relay(ably_url(emulator))
    with pytest.raises(InvalidChannelName) as raised:
        await operation(relay)
    assert type(raised.value) is InvalidChannelName
    at = name.index("\ud800")
    assert str(raised.value) == f"{where}invalid Ably channel name {name!r}: {SURROGATE.format(at=at)}"
    assert raised.value.code == 40010
    assert relay.requests == []
    assert (await relay.publish("orders", "e", 1)).channels == ("orders",)  # a whole name publishes as before


@pytest.mark.parametrize("provider", ["emulator", "ably", "memory"])
async def test_channels_refuses_a_prefix_utf8_cannot_encode_alike_on_every_provider(
    make_relay: MakeRelay, emulator: RunningEmulator, provider: str
) -> None:
    """channels("presence-\\ud800") was a bare UnicodeEncodeError on ably://, an empty listing on memory://, and a
    ProtocolError on the Pusher-protocol providers, found only as their request was built. The client refuses the
    prefix itself, as it refuses event names and data: the same ProtocolError on every provider, nothing sent."""
    url = {"emulator": emulator_url(emulator), "ably": ably_url(emulator), "memory": "memory://hunt-3-prefix"}
    relay = make_relay(url[provider])
    with pytest.raises(ProtocolError) as raised:
        await relay.channels("presence-\ud800")
    assert type(raised.value) is ProtocolError
    assert str(raised.value) == "a channel name prefix " + SURROGATE.format(at=9)
    assert relay.requests == []
    assert await relay.channels("presence-") == {}  # nobody subscribed: a whole prefix lists as before


# -- 2. integer user ids ----------------------------------------------------------------------------------------------


async def test_send_to_user_and_terminate_take_an_integer_user_id_as_its_digits(
    make_relay: MakeRelay, emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """authenticate_user signs the integer id 5 (a database key) as "5", as providers.md says, but send_to_user(5, …)
    and terminate_user_connections(5) refused it ("a user id must be a string, got 5"): the user signed in could not
    be reached by the id it signed in with. Both take it as its digits now."""
    relay = make_relay(emulator_url(emulator))
    user = await subscriber(emulator)
    body = await relay.authenticate_user(user.socket_id, 5)
    assert json.loads(body["user_data"]) == {"id": "5"}
    await user.signin(body)

    await relay.send_to_user(5, "notice", {"table": "ready"})
    assert json.loads((await user.expect("notice", "#server-to-user-5"))["data"]) == {"table": "ready"}
    await relay.terminate_user_connections(5)
    assert await user.closed() == 4009
    assert [sent.url.path for sent in relay.requests] == ["/apps/1/events", "/apps/1/users/5/terminate_connections"]


async def test_memory_takes_an_integer_user_id_as_its_digits(make_relay: MakeRelay) -> None:
    """memory:// refused the integer id as Pusher's adapter did; it records it as the id of its digits."""
    relay = make_relay("memory://hunt-3-user-ids")
    store = store_of(relay.client)
    store.clear()
    await relay.send_to_user(5, "notice", "ready")
    await relay.terminate_user_connections(5)
    assert [(entry.channel, entry.event, entry.data) for entry in store.published] == [
        ("#server-to-user-5", "notice", "ready")
    ]
    assert store.terminated_users == ["5"]


@pytest.mark.parametrize("user_id", [True, 5.0, None, b"5"])
async def test_a_user_id_that_is_neither_a_str_nor_an_int_is_still_refused(
    make_relay: MakeRelay, emulator: RunningEmulator, user_id: object
) -> None:
    """A bool is no id, though Python counts it an int; a float, None and bytes are none either. The message says what
    an id may be."""
    for url in (emulator_url(emulator), "memory://hunt-3-user-ids"):
        relay = make_relay(url)
        with pytest.raises(InvalidChannelName) as sent:
            await relay.send_to_user(user_id, "notice", "x")
        assert type(sent.value) is InvalidChannelName
        assert str(sent.value) == f"a user id must be a string (or an int, taken as its digits), got {user_id!r}"
        with pytest.raises(InvalidChannelName) as terminated:
            await relay.terminate_user_connections(user_id)
        assert type(terminated.value) is InvalidChannelName
        assert str(terminated.value) == (
            f"a user id must be a non-empty string (or an int, taken as its digits), got {user_id!r}"
        )
        assert relay.requests == []


# -- 3. an encrypted channel past the first 100 of a publish ----------------------------------------------------------


@pytest.mark.parametrize(
    "channels",
    [["private-encrypted-a", *ONE_CALL_OF_CHANNELS], [*ONE_CALL_OF_CHANNELS, "private-encrypted-a"]],
    ids=["first", "101st"],
)
async def test_an_encrypted_channel_among_others_is_refused_wherever_it_is(
    make_relay: MakeRelay, emulator: RunningEmulator, channels: list[str]
) -> None:
    """A publish of an encrypted channel together with others is refused (providers.md): it was when the channel was
    in the first 100, but 100 channels and then private-encrypted-a were split into two calls, the second of the
    encrypted channel alone, and both were published. The whole list is checked before it is split: refused wherever
    the channel is, nothing sent."""
    query = f"encryption_master_key={MASTER_KEY_B64}"
    memory = make_relay(f"memory://hunt-3-encrypted?{query}")
    store = store_of(memory.client)
    store.clear()
    for relay in (make_relay(emulator_url(emulator, query=query)), memory):
        with pytest.raises(ProtocolError) as raised:
            await relay.publish(channels, "e", {"secret": 1})
        assert type(raised.value) is ProtocolError
        assert str(raised.value) == "encrypted channels must be published to one at a time"
        assert relay.requests == []
        assert await relay.publish("private-encrypted-a", "e", {"secret": 1}) == PublishResult(("private-encrypted-a",))
    assert [entry.channel for entry in store.published] == ["private-encrypted-a"]
