"""What docs/providers.md, docs/configuration.md and docs/library.md promise about the library's errors, held to it:
each docstring names the page and line."""

from __future__ import annotations

import socket

import pytest

from relay import Relay, User
from relay.adapters.memory import memory_store
from relay.config import parse_url
from relay.errors import ConfigError, TransportError, UnsupportedCapability
from relay.senders import RetryPolicy

MASTER_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


@pytest.mark.parametrize(
    ("operation", "hint"),
    [
        (lambda client: client.send_to_user("42", "notice", {}), "per-user channel"),
        (lambda client: client.terminate_user_connections("42"), "revoke the user's tokens"),
        (lambda client: client.authenticate_user("123.456", User("42", {})), "clientId"),
    ],
    ids=["send_to_user", "terminate_user_connections", "authenticate_user"],
)
def test_ably_unsupported_capability_carries_the_documented_hint(operation: object, hint: str) -> None:
    """docs/providers.md:242-243: a "no" raises UnsupportedCapability("Ably", ...) "with a hint (publish to a per-user
    channel instead; revoke the user's tokens instead; Ably identifies users by the clientId ...)". The error the
    client raises carries that hint after "Ably does not support <operation>"."""
    client = Relay.from_url("ably://appid.keyid:keysecret")
    with pytest.raises(UnsupportedCapability) as raised:
        operation(client)  # type: ignore[operator]
    assert hint in str(raised.value)


def test_memory_refuses_an_encrypted_publish_without_a_master_key_as_pusher_does() -> None:
    """docs/providers.md:244 (and :223): "memory refuses what Pusher refuses, before anything is recorded". A Pusher
    client without ?encryption_master_key= raises ConfigError on a private-encrypted- publish before any request,
    and memory:// raises the same ConfigError and records nothing, so a test suite fails where production would."""
    with pytest.raises(ConfigError, match="encryption_master_key"):
        Relay.from_url("pusher://key:secret@127.0.0.1:9/apps/1").publish("private-encrypted-orders", "e", {})
    memory = Relay.from_url("memory://walkthrough-encrypted")
    try:
        with pytest.raises(ConfigError, match="encryption_master_key"):
            memory.publish("private-encrypted-orders", "e", {})
        assert memory_store("walkthrough-encrypted").published == []
    finally:
        memory_store("walkthrough-encrypted").clear()


def test_an_ably_secret_with_an_unencoded_slash_is_not_silently_truncated() -> None:
    """docs/configuration.md:32: "A secret containing /, @ or : is percent-encoded." An Ably key whose secret holds
    an unencoded '/' is refused with a ConfigError that says to percent-encode it (%2F), rather than parsed with the
    secret cut at the '/' (which would fail later with a 401 that blames the key)."""
    with pytest.raises(ConfigError, match=r"secret containing / is percent-encoded \(%2F\)"):
        parse_url("ably://appid.keyid:abc/def")


def test_an_unknown_url_option_is_an_error_not_silently_ignored() -> None:
    """docs/configuration.md:30-32: the query options are ?tls= and ?encryption_master_key=. A misspelt option
    (?encryption_master_ky=) is accepted and dropped, so the user later reads "add ?encryption_master_key=... to the
    URL" about a URL that has it; the emulator's config file and the rules file refuse unknown keys by name."""
    with pytest.raises(ConfigError, match="encryption_master_ky"):
        parse_url(f"pusher://key:secret@eu/apps/1?encryption_master_ky={MASTER_KEY}")


def test_a_transport_error_names_the_port_it_could_not_reach() -> None:
    """docs/library.md:70 (TransportError, network): the message names the host and the port it could not reach
    ("could not reach 127.0.0.1:PORT: ..."), since the port is the usual mistake (a second emulator on --port 0)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        client = Relay(f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/1", retry=RetryPolicy(attempts=1))
        with pytest.raises(TransportError) as raised:
            client.publish("orders", "e", {})
        client.close()
    assert f"could not reach 127.0.0.1:{port}:" in str(raised.value), str(raised.value)
