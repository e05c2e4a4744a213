"""Fixes from an audit of the library: memory:// answers and refuses as the emulator does (channel queries, batch
errors), URLs and retry policies are checked when the client is built, a test can sign a webhook for memory://,
a Pusher- or Ably-protocol server that is not hosted Pusher or Ably is not called so, and data nested too deeply
is InvalidData.
"""

from __future__ import annotations

import math
import re
import socket
import time
from typing import Any

import pytest

import relay
from relay import AsyncRelay, Relay
from relay.adapters.memory import memory_store
from relay.client import parse_configuration
from relay.config import from_env, parse_url
from relay.errors import (
    AuthenticationError,
    ConfigError,
    InvalidData,
    PayloadTooLarge,
    StaleTimestamp,
    TransportError,
    UnsupportedCapability,
)
from relay.models import User
from relay.senders import RetryPolicy
from relay.testing import published, signed_webhook
from tests.conftest import RunningEmulator, emulator_url

# -- 1. memory:// answers channel queries as the emulator does (subscription counting off) -------------------------


async def test_memory_answers_channel_queries_as_the_emulator_does(emulator: RunningEmulator) -> None:
    """An app whose subscription counting is off (the emulator's default, and hosted Pusher's) answers
    subscription_count None, not 0: memory:// is such an app with no subscribers."""
    answers = []
    for url in ("memory://audit-queries", emulator_url(emulator)):
        async with AsyncRelay(url) as client:
            answers.append(
                (
                    await client.channel("orders"),
                    await client.channel("presence-room"),
                    await client.channels(),
                    await client.channels("presence-"),
                    await client.presence_members("presence-room"),
                )
            )
    memory, real = answers
    assert memory == real
    assert memory[0].subscription_count is None


# -- 2. a URL that is not a str is a ConfigError ---------------------------------------------------------------------


@pytest.mark.parametrize("client_class", [Relay, AsyncRelay])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "no provider URL given (None): set RELAY_URL or pass a URL"),
        (5, "a provider URL is a str (scheme://…, with scheme one of pusher, emulator, ably, memory), not int"),
        (b"memory://x", "a provider URL is a str, not bytes: decode it"),
    ],
)
def test_a_url_that_is_not_a_str_is_a_config_error(
    client_class: type[Relay] | type[AsyncRelay], url: Any, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        client_class.from_url(url)
    assert str(raised.value).startswith(message)


# -- 3. a memory URL is memory://NAME, the name as written --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("memory://a/b", "has a path"),
        ("memory://a:1", "has a port"),
        ("memory://user@a", "has credentials"),
        ("memory://user:password@a", "has credentials"),
        ("memory://a#tests", "has a fragment"),
        ("memory://a?store=b", "unknown option(s) store"),
    ],
)
def test_a_memory_url_with_more_than_a_name_is_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_url(url)
    assert problem in raised.value.message
    assert "password" not in raised.value.message
    if "option" not in problem:
        assert "a memory URL is memory://NAME" in raised.value.message


def test_a_memory_name_is_kept_as_written() -> None:
    upper, lower = Relay.from_url("memory://Tests"), Relay.from_url("memory://tests")
    assert upper.adapter.store is not lower.adapter.store  # type: ignore[attr-defined]
    assert upper.config.url() == "memory://Tests"
    # A trailing slash is no path: memory://tests/ and memory:/// (no name) worked before names were checked.
    assert Relay.from_url("memory://tests/").adapter.store is lower.adapter.store  # type: ignore[attr-defined]
    assert Relay.from_url("memory:///").config.url() == Relay.from_url("memory://").config.url()


# -- 4. a test signs a webhook as memory:// verifies it ---------------------------------------------------------------


MEMBER_ADDED = {"name": "member_added", "channel": "presence-kitchen", "user_id": "alice"}


def test_signed_webhook_is_verified_by_a_memory_client(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Relay.from_url("memory://audit-webhooks")
    headers, body = signed_webhook([MEMBER_ADDED], client=client)
    (event,) = client.verify_webhook(headers, body)
    assert (event.kind, event.channel, event.user_id) == ("member_added", "presence-kitchen", "alice")
    assert headers["Content-Type"] == "application/json"

    monkeypatch.setenv("RELAY_URL", "memory://audit-webhooks-default")
    relay.reset_default_client()
    try:
        (event,) = relay.verify_webhook(*signed_webhook([MEMBER_ADDED]))  # signed for the module-level client
        assert event.user_id == "alice"
    finally:
        relay.reset_default_client()


def test_signed_webhook_can_be_stale_and_is_only_for_memory() -> None:
    client = Relay.from_url("memory://audit-webhooks")
    long_ago = int((time.time() - 3600) * 1000)
    with pytest.raises(StaleTimestamp):
        client.verify_webhook(*signed_webhook([MEMBER_ADDED], client=client, time_ms=long_ago))
    with pytest.raises(AssertionError, match="memory provider"):
        signed_webhook([MEMBER_ADDED], client=Relay.from_url("pusher://k:s@eu/apps/1"))


# -- 5. a memory batch error names the item, and published, as the emulator's --------------------------------------


@pytest.mark.parametrize("oversized", [4, 11])
async def test_a_memory_batch_error_names_the_item_as_the_emulator_does(
    emulator: RunningEmulator, oversized: int
) -> None:
    """12 events go as two calls of 10 and 2: the second refused, the first 10 were published, on both providers."""
    events = [{"channel": "orders", "name": "e", "data": f"event {index}"} for index in range(12)]
    events[oversized] = {"channel": "orders", "name": "e", "data": "x" * 10_241}
    store = memory_store("audit-batch")
    store.clear()
    errors: list[PayloadTooLarge] = []
    for url in ("memory://audit-batch", emulator_url(emulator)):
        async with AsyncRelay(url) as client:
            with pytest.raises(PayloadTooLarge) as raised:
                await client.publish_batch(events)
            errors.append(raised.value)
    memory, real = errors
    assert f"batch[{oversized}]: data is 10241 bytes; the limit is 10240" in memory.message
    assert memory.published == real.published == (10 if oversized >= 10 else None)
    answer = "the Relay emulator answered 413: "
    advice = " (the payload is over the provider's size limit)"
    assert memory.message == real.message.removeprefix(answer).replace(advice, "")
    assert [entry.data for entry in store.published] == [f"event {index}" for index in range(memory.published or 0)]


# -- 6. a retry policy is checked when it is made -------------------------------------------------------------------

TIMEOUT_WANTED = "RetryPolicy timeout must be a number of seconds over 0 and at most 86,400, or None for no limit"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"timeout": -1}, f"{TIMEOUT_WANTED}, got -1"),
        ({"timeout": 0}, f"{TIMEOUT_WANTED}, got 0"),
        ({"timeout": math.inf}, f"{TIMEOUT_WANTED}, got inf"),
        # The sync client's first request raised OverflowError ("timestamp out of range for platform time_t")
        ({"timeout": 1e10}, f"{TIMEOUT_WANTED}, got 10000000000.0"),
        ({"timeout": 86_401}, f"{TIMEOUT_WANTED}, got 86401"),
        ({"backoff": "x"}, "RetryPolicy backoff must be a number of seconds from 0 to 86,400, got 'x'"),
        ({"max_delay": -0.5}, "RetryPolicy max_delay must be a number of seconds from 0 to 86,400, got -0.5"),
        ({"max_delay": 1e300}, "RetryPolicy max_delay must be a number of seconds from 0 to 86,400, got 1e+300"),
        ({"attempts": 0}, "RetryPolicy attempts must be a whole number, 1 or more, got 0"),
        ({"attempts": 2.5}, "RetryPolicy attempts must be a whole number, 1 or more, got 2.5"),
        ({"attempts": True}, "RetryPolicy attempts must be a whole number, 1 or more, got True"),
    ],
)
def test_a_retry_policy_with_an_impossible_field_is_a_config_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        RetryPolicy(**fields)


def test_a_retry_policy_of_a_day_is_taken() -> None:
    assert RetryPolicy(timeout=86_400, backoff=86_400, max_delay=86_400).timeout == 86_400


def test_a_retry_policy_without_a_timeout_is_one_httpx_waits_for_ever() -> None:
    """None is httpx's "no limit", which the policy was handed to unchecked before it was checked."""
    assert RetryPolicy(timeout=None).timeout is None
    with Relay("memory://audit-retry", retry=RetryPolicy(timeout=None)) as client:
        client.publish("orders", "e", {})


@pytest.mark.parametrize("client_class", [Relay, AsyncRelay])
def test_a_retry_that_is_not_a_retry_policy_is_a_config_error(client_class: type[Relay] | type[AsyncRelay]) -> None:
    with pytest.raises(ConfigError, match=r"^retry must be a RetryPolicy such as RetryPolicy\(attempts=5\), got 5$"):
        client_class("memory://audit-retry", retry=5)  # type: ignore[arg-type]


# -- 7. a Pusher- or Ably-protocol server that is not the hosted service is named by its address ----------------------


async def test_an_error_from_a_self_hosted_pusher_server_names_that_server(emulator: RunningEmulator) -> None:
    """PUSHER_HOST pointing at the emulator (or soketi): its 401 is not hosted Pusher's."""
    env = {
        "PUSHER_APP_ID": "1",
        "PUSHER_KEY": "app-key",
        "PUSHER_SECRET": "wrong",
        "PUSHER_HOST": "127.0.0.1",
        "PUSHER_PORT": str(emulator.port),
        "PUSHER_SCHEME": "http",
    }
    server = f"the Pusher-protocol server at 127.0.0.1:{emulator.port}"
    async with AsyncRelay.from_env(env) as client:
        with pytest.raises(AuthenticationError) as raised:
            await client.publish("orders", "e", {})
    assert raised.value.message.startswith(f"{server} answered 401: ")
    assert raised.value.answered_by == server
    assert Relay.from_url("pusher://k:s@eu/apps/1").adapter.name == "Pusher"


async def test_an_error_from_a_self_hosted_ably_server_names_that_server(emulator: RunningEmulator) -> None:
    """An ably:// URL at the emulator's Ably side (local development): its 401, and what it cannot do, are not hosted
    Ably's; a local port nothing listens on is named by its address alone."""
    key_name = emulator.app.ably_api_key.partition(":")[0]
    server = f"the Ably-protocol server at 127.0.0.1:{emulator.port}"
    async with AsyncRelay(f"ably://{key_name}:wrong@127.0.0.1:{emulator.port}?tls=false") as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.publish("orders", "e", {})
        with pytest.raises(UnsupportedCapability) as lacking:
            await client.send_to_user("alice", "e", {})
        with pytest.raises(UnsupportedCapability) as encrypted:
            await client.publish("private-encrypted-card", "e", {})
    assert refused.value.message.startswith(f"{server} answered 401: Invalid credentials")
    assert refused.value.answered_by == server
    assert str(lacking.value).startswith(f"{server} does not support send_to_user")
    assert encrypted.value.provider == server
    with socket.socket() as unlistened:
        unlistened.bind(("127.0.0.1", 0))  # bound, never listening: refused, and no other process can take the port
        port = unlistened.getsockname()[1]
        async with AsyncRelay(
            f"ably://{key_name}:secret@127.0.0.1:{port}?tls=false", retry=RetryPolicy(attempts=1)
        ) as client:
            with pytest.raises(TransportError) as unreachable:
                await client.publish("orders", "e", {})
    assert str(unreachable.value) == f"could not reach 127.0.0.1:{port}: ConnectError; check the host, port and network"
    assert Relay.from_url("ably://appid.keyid:secret").adapter.name == "Ably"


# -- 8. credentials cut by a '/', and whitespace around a URL -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "pusher://key:s3/cr3t@eu/apps/1",
            "pusher:// URL's credentials end at a '/': a secret containing / is percent-encoded (%2F)",
        ),
        (
            "emulator://key:s3/cr3t@127.0.0.1:6001/apps/1",
            "emulator:// URL's credentials end at a '/': a secret containing / is percent-encoded (%2F)",
        ),
        (
            "emulator://key:s3?cr3t@127.0.0.1:6001/apps/1",
            "emulator:// URL's credentials end at a '?': a secret containing ? is percent-encoded (%3F)",
        ),
        (
            "ably://appid.keyid:s3/cr3t",
            "ably:// URL has a path after the host: a secret containing / is percent-encoded (%2F)",
        ),
    ],
)
def test_a_secret_with_a_slash_is_told_to_be_percent_encoded(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_url(url)
    assert raised.value.message == message
    assert "cr3t" not in raised.value.message


@pytest.mark.parametrize(
    "url",
    [
        "emulator://app-key:app-secret@127.0.0.1:6001/apps/1 ",
        " emulator://app-key:app-secret@127.0.0.1:6001/apps/1",
        "emulator://app-key:app-secret@127.0.0.1:6001/apps/1\r\n",
        "mirror:memory://a|memory://b\n",
    ],
)
def test_whitespace_around_a_url_is_left_out(url: str) -> None:
    """From a .env file, `RELAY_URL=emulator://…/apps/1 ` made the app id "1 " (refused by the server as an unknown
    app); a secret file's last newline is no part of the URL either (urlsplit drops it; refusing it broke them)."""
    configs = parse_configuration(url)[1]
    if url.startswith("mirror:"):
        assert [config.host for config in configs] == ["a", "b"]
        return
    (config,) = configs
    assert (config.app_id, config.port) == ("1", 6001)
    assert from_env({"RELAY_URL": url}) == config


def test_a_pusher_url_variable_with_whitespace_around_it_is_read_without_it() -> None:
    config = from_env({"PUSHER_URL": "http://key:secret@127.0.0.1:6001/apps/1 \n"})
    assert (config.app_id, config.port, config.tls) == ("1", 6001, False)


# -- 9. data nested too deeply for JSON is InvalidData ------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "memory://audit-deep",
        "emulator://app-key:app-secret@127.0.0.1:6001/apps/1",
        "pusher://key:secret@eu/apps/1",
        "ably://appid.keyid:secret",
    ],
)
def test_data_nested_too_deeply_is_invalid_data_before_anything_is_sent(url: str) -> None:
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]
    client = Relay.from_url(url, retry=RetryPolicy(attempts=1, timeout=0.01))
    with pytest.raises(InvalidData, match="event data is nested too deeply to encode as JSON"):
        client.publish("orders", "e", nested)
    with pytest.raises(InvalidData, match=r"^events\[0\]: event data is nested too deeply"):
        client.publish_batch([{"channel": "orders", "name": "e", "data": nested}])
    if url.startswith("memory://"):
        assert published(client=client) == []


def test_a_user_info_nested_too_deeply_is_invalid_data_too() -> None:
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]
    with pytest.raises(InvalidData, match=r"^a user's info is nested too deeply to encode as JSON"):
        User("alice", {"deep": nested})
    with pytest.raises(InvalidData, match=r"^a user's info must be JSON-serialisable: "):
        User("alice", {"when": object()})
