"""What needs relay/client.py to call the adapters' fixes: an Ably batch published in requests within Ably's request
size (``batch_parts``, through ``batch_calls``; against the real emulator, whose Ably REST API refuses a body over
1 MiB whole), and ``Relay.from_env`` reading a RELAY_URL of one provider as relay.config.from_env does."""

from __future__ import annotations

import base64

import pytest
from libsupport import MakeRelay

from relay import Event, PublishResult, Relay
from relay.adapters.ably import MAX_BATCH_REQUEST_BYTES
from relay.client import Mode, Providers, configuration_from_env
from relay.config import parse_url
from relay.errors import ConfigError, PayloadTooLarge
from tests.conftest import RunningEmulator


def ably_url(running: RunningEmulator) -> str:
    return f"ably://{running.app.ably_api_key}@127.0.0.1:{running.port}?tls=false"


async def test_an_ably_batch_over_the_request_size_is_published_in_parts(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    """30 events of 40 KB, each within Ably's 64 KiB, went in one request of 1.2 MB: the emulator refused it whole
    (413, published=None). A part leaves room for each event's message id as the longest idempotency key would make
    it, so 25 go in the first."""
    relay = make_relay(ably_url(emulator))
    result = await relay.publish_batch([Event("orders", "e", "x" * 40_000) for _ in range(30)])
    assert isinstance(result, PublishResult)
    assert result.channels == ("orders",) * 30 and len(set(result.message_ids)) == 30
    posts = [sent for sent in relay.requests if sent.url.path == "/messages"]
    assert [len(sent.json()) for sent in posts] == [25, 5]
    assert all(len(sent.body) <= MAX_BATCH_REQUEST_BYTES for sent in posts)


async def test_a_refusal_after_the_first_part_says_what_was_published(
    make_relay: MakeRelay, emulator: RunningEmulator
) -> None:
    relay = make_relay(ably_url(emulator))
    events = [Event("orders", "e", "x" * 40_000) for _ in range(30)] + [Event("orders", "e", "x" * 70_000)]
    with pytest.raises(PayloadTooLarge) as raised:
        await relay.publish_batch(events)
    assert raised.value.published == 25
    assert "events 0-24 were already published by the calls before this one" in str(raised.value)


# -- RELAY_URL beside PUSHER_ENCRYPTION_MASTER_KEY_BASE64, through Relay.from_env (client.configuration_from_env) ----


def test_relay_from_env_applies_the_encryption_key_variable_to_a_relay_url_of_one_provider() -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    env = {"RELAY_URL": "memory://keyed-from-env\n", "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": key}
    with Relay.from_env(env) as relay:
        assert "shared_secret" in relay.authorize_channel("1.2", "private-encrypted-orders")
    # whitespace alone is no RELAY_URL: the provider variables configure the client
    with Relay.from_env({"RELAY_URL": " \n", "ABLY_API_KEY": "appid.keyid:secret"}) as relay:
        assert relay.config.scheme == "ably"
    mirror = "mirror:memory://a|memory://b"
    assert configuration_from_env({"RELAY_URL": f" {mirror}\n"}) == Providers(
        Mode.MIRROR, (parse_url("memory://a"), parse_url("memory://b"))
    )


def test_the_encryption_key_variable_applies_to_each_pusher_protocol_provider_of_a_mirror_or_failover() -> None:
    """It was left out of ``mirror:`` and ``failover:`` URLs: an encrypted channel then failed on a ConfigError."""
    key = base64.b64encode(bytes(range(32))).decode()
    ably = "ably://appid.keyid:secret@127.0.0.1:6001?tls=false"
    env = {"RELAY_URL": f"failover:memory://a|{ably}", "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": key}
    providers = configuration_from_env(env)
    assert isinstance(providers, Providers) and providers.mode is Mode.FAILOVER
    assert [config.encryption_master_key for config in providers.configs] == [bytes(range(32)), None]
    with Relay.from_env({**env, "RELAY_URL": "mirror:memory://a|memory://b"}) as relay:
        assert "shared_secret" in relay.authorize_channel("1.2", "private-encrypted-orders")
    other = base64.b64encode(bytes(32)).decode()
    clashing = {**env, "RELAY_URL": f"mirror:memory://a?encryption_master_key={other}|memory://b"}
    with pytest.raises(ConfigError, match="differs from PUSHER_ENCRYPTION_MASTER_KEY_BASE64"):
        configuration_from_env(clashing)
