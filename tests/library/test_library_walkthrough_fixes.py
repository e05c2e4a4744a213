"""Fixes from a walkthrough of the library as a backend developer would use it: channel names made of dots, and the
size error of Ably's REST API.

Against the real emulator (its Pusher side through ``emulator://``, its Ably side through ``ably://``); every test that
takes ``make_relay`` runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import json

import pytest
from libsupport import MakeRelay, Subscribe, emulator_url

from relay.errors import PayloadTooLarge
from relay.protocol.signing import user_auth
from tests.conftest import RunningEmulator


def ably_url(running: RunningEmulator) -> str:
    return f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}?tls=false"


@pytest.mark.parametrize("name", [".", ".."], ids=["dot", "dot-dot"])
@pytest.mark.parametrize("side", ["pusher", "ably"])
async def test_dot_only_channel_names_reach_their_own_channel(
    emulator: RunningEmulator, make_relay: MakeRelay, subscriber: Subscribe, name: str, side: str
) -> None:
    """ "." and ".." are channel names like any other (the emulator subscribes a client to them), but in a URL's path
    they are dot segments, which httpx resolved away: Pusher's channel(".") went to /apps/1/channels and was refused
    as a bad signature, Ably's publish("..") to the batch endpoint. Percent-encoded, each reaches its channel."""
    relay = make_relay(emulator_url(emulator) if side == "pusher" else ably_url(emulator))
    sub = await subscriber(emulator)
    await sub.subscribe(name)
    await relay.publish(name, "dotted", {"n": 1})
    assert json.loads((await sub.expect("dotted", name))["data"]) == {"n": 1}
    info = await relay.channel(name)
    assert (info.name, info.occupied) == (name, True)
    assert all(f"/{name}/" not in f"{sent.url.raw_path.decode()}/" for sent in relay.requests)


async def test_a_user_named_dot_dot_is_terminated(
    emulator: RunningEmulator, make_relay: MakeRelay, subscriber: Subscribe
) -> None:
    """terminate_user_connections("..") went to /apps/1/terminate_connections (404); it closes that user's
    connections."""
    relay = make_relay(emulator_url(emulator))
    sub = await subscriber(emulator)
    user_data = '{"id":".."}'
    await sub.signin(
        {"auth": user_auth(emulator.app.key, emulator.app.secret, sub.socket_id, user_data), "user_data": user_data}
    )
    await relay.terminate_user_connections("..")
    assert await sub.closed() == 4009
    assert relay.requests[0].url.raw_path.decode().startswith("/apps/1/users/%2E%2E/terminate")


async def test_an_oversized_ably_publish_is_payload_too_large(emulator: RunningEmulator, make_relay: MakeRelay) -> None:
    """Ably answers a publish over its message size limit with 40009 and HTTP 413 (Ably's error docs); the emulator's
    Ably side answered 400, so the library raised ProtocolError there and PayloadTooLarge on the Pusher side."""
    relay = make_relay(ably_url(emulator))
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish("orders", "big", "x" * 70_000)
    assert raised.value.http_status == 413
    assert "messages are 70003 bytes; the maximum is 65536" in str(raised.value)
