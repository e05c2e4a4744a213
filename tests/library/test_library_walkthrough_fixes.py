"""Fixes from a walkthrough of the library as a backend developer would use it: channel names made of dots, the size
error of Ably's REST API, and bad input that escaped RelayError.

Against the real emulator (its Pusher side through ``emulator://``, its Ably side through ``ably://``); every test that
takes ``make_relay`` runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from libsupport import MakeRelay, Subscribe, emulator_url

from relay import AsyncRelay, Relay, User
from relay.adapters.memory import memory_store
from relay.errors import ClientClosed, InvalidChannelName, InvalidData, PayloadTooLarge, ProtocolError, RelayError
from relay.protocol.signing import channel_auth, user_auth
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
    # Ably's words for it (error 40009), which users search for
    assert "Maximum message length exceeded (size was 70003 bytes, limit is 65536 bytes)" in str(raised.value)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda relay: relay.publish("orders", "e", {"at": datetime.datetime(2026, 1, 1)}),
            InvalidData,
            "event data must be a str or JSON-serialisable: Object of type datetime is not JSON serializable",
        ),
        (
            lambda relay: relay.publish(None, "e", 1),
            InvalidChannelName,
            "channels is a channel name or a list of them, not NoneType",
        ),
        (
            lambda relay: relay.publish_batch(
                [{"channel": "a", "name": "e", "data": 1}, {"channel": "a", "name": "e"}]
            ),
            ProtocolError,
            "events[1]: missing 'data' (an event's keys are channel, name, data and, optionally, socket_id)",
        ),
        (
            lambda relay: relay.publish_batch([{"channel": "a", "event": "e", "data": 1}]),
            ProtocolError,
            "events[0]: unknown key(s) 'event'; missing 'name'",
        ),
        (
            lambda relay: relay.publish_batch(None),
            ProtocolError,
            "events is a list of Events or mappings, not NoneType",
        ),
        (
            lambda relay: relay.send_to_user("u", "e", {1, 2}),
            InvalidData,
            "Object of type set is not JSON serializable",
        ),
    ],
    ids=["datetime-data", "no-channels", "batch-missing-key", "batch-wrong-key", "no-batch", "set-to-user"],
)
async def test_bad_input_is_a_relay_error_before_anything_is_sent(
    make_relay: MakeRelay, call: Callable[[Any], Awaitable[object]], error: type[RelayError], message: str
) -> None:
    """Input Python's own checks refused with a bare TypeError ("'NoneType' object is not iterable", Event()'s
    keyword errors without the batch index) is a RelayError like every other refusal (docs/library.md: "Every error is
    a RelayError"), the gateway's 400; data JSON cannot encode is InvalidData, a TypeError too."""
    relay = make_relay("memory://walkthrough-input")
    with pytest.raises(error) as raised:
        await call(relay)
    assert message in str(raised.value)
    assert raised.value.http_status == 400
    if error is InvalidData:
        assert isinstance(raised.value, TypeError)
    assert memory_store("walkthrough-input").published == []


def test_a_users_info_that_json_cannot_encode_is_refused_when_the_user_is_made() -> None:
    """A presence user whose info holds a date raised a bare TypeError from inside the provider's auth signer."""
    relay = Relay("memory://walkthrough-user")
    with pytest.raises(InvalidData, match="a user's info must be JSON-serialisable: Object of type date"):
        relay.authorize_channel("1.2", "presence-a", {"id": "u", "info": {"d": datetime.date(2026, 1, 1)}})
    with pytest.raises(InvalidData):
        User("u", {"d": datetime.date(2026, 1, 1)})


def test_a_closed_client_still_signs_auth_bodies_but_sends_nothing() -> None:
    """docs/library.md: publishing or querying a closed client raises ClientClosed; auth bodies need no connection
    and are still signed."""
    relay = Relay("emulator://app-key:app-secret@127.0.0.1:1/apps/1")
    relay.close()
    body = relay.authorize_channel("1.2", "private-orders")
    assert body == {"auth": channel_auth("app-key", "app-secret", "1.2", "private-orders")}
    with pytest.raises(ClientClosed):
        relay.publish("orders", "e", 1)
    with pytest.raises(ClientClosed):
        relay.channel("orders")


async def test_relay_publishes_with_the_pusher_url_a_pusher_sdk_codebase_has(
    emulator: RunningEmulator, subscriber: Subscribe
) -> None:
    """A codebase on pusher-http-python or -ruby often has PUSHER_URL (their from_env reads it, Heroku's Pusher add-on
    sets it): Relay.from_env reads the same variable, so the code moves over without a new setting."""
    env = {"PUSHER_URL": f"http://{emulator.app.key}:{emulator.app.secret}@127.0.0.1:{emulator.port}/apps/1"}
    sub = await subscriber(emulator)
    await sub.subscribe("orders")
    async with AsyncRelay.from_env(env) as relay:
        await relay.publish("orders", "from-relay", {"n": 2})
    assert json.loads((await sub.expect("from-relay", "orders"))["data"]) == {"n": 2}


class _NotFoundHandler(http.server.BaseHTTPRequestHandler):
    """A web server that is no Pusher-protocol API, answering 404 as FastAPI does (relay serve's port)."""

    def _not_found(self) -> None:
        body = b'{"error":"Not Found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _not_found

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_a_pusher_api() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFoundHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_404_from_a_server_that_is_no_pusher_api_says_to_check_the_port(not_a_pusher_api: int) -> None:
    """RELAY_URL with the gateway's port (8000) for the emulator's (6001) was "the Relay emulator answered 404: Not
    Found (check the app id and host in the provider URL)": the app id was right, the port was not."""
    for url in (
        f"emulator://app-key:app-secret@127.0.0.1:{not_a_pusher_api}/apps/1",
        f"pusher://app-key:app-secret@127.0.0.1:{not_a_pusher_api}/apps/1?tls=false",
    ):
        with Relay.from_url(url) as relay, pytest.raises(RelayError) as caught:
            relay.publish("orders", "shipped", 1)
        assert caught.value.http_status == 404
        assert str(caught.value) == (
            f"the server at http://127.0.0.1:{not_a_pusher_api} answered 404: Not Found (no Pusher HTTP API there: "
            "check the port and any path prefix in the provider URL; the emulator listens on 6001 by default, relay "
            "serve (the gateway) on 8000)"
        ), str(caught.value)
        assert caught.value.answered_by == f"the server at http://127.0.0.1:{not_a_pusher_api}"


async def test_a_path_prefix_the_emulator_lacks_says_to_check_it_and_an_unknown_app_names_the_app_id(
    emulator: RunningEmulator, make_relay: MakeRelay
) -> None:
    prefixed = f"emulator://{emulator.app.key}:{emulator.app.secret}@127.0.0.1:{emulator.port}/pusher/apps/1"
    with pytest.raises(RelayError) as caught:
        await make_relay(prefixed).publish("orders", "shipped", 1)
    assert str(caught.value).startswith(
        f"the server at http://127.0.0.1:{emulator.port}/pusher answered 404: no route for "
    ), str(caught.value)
    assert "(no Pusher HTTP API there: check the port and any path prefix" in str(caught.value)
    with pytest.raises(RelayError) as caught:
        await make_relay(emulator_url(emulator, app_id="nope")).publish("orders", "shipped", 1)
    assert str(caught.value).endswith("(check the app id and host in the provider URL)"), str(caught.value)
