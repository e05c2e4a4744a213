"""The same call behaves the same whatever the URL names: the in-memory test provider refuses what Pusher and the
emulator refuse, a missing encryption key is a ConfigError everywhere, and a host given as an IPv6 address or a
name with a port is used as it is."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import respx

from relay import AsyncRelay, Relay
from relay.adapters.memory import Published, memory_store
from relay.config import parse_url
from relay.emulator.config import App, EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.errors import ConfigError, LimitExceeded, PayloadTooLarge, ProtocolError
from tests.conftest import RunningEmulator, StartEmulator

PUSHER_URL = "pusher://app-key:app-secret@api-eu.pusher.com/apps/1"


@pytest.mark.parametrize("url", [PUSHER_URL, "emulator://app-key:app-secret@127.0.0.1:6001/apps/1", "memory://audit"])
def test_authorizing_an_encrypted_channel_without_a_master_key_is_a_config_error(url: str) -> None:
    """A missing setting is a ConfigError naming the fix (docs/library.md), for authorizing as for publishing."""
    with pytest.raises(ConfigError, match="encryption_master_key"):
        Relay.from_url(url).authorize_channel("123.456", "private-encrypted-orders")


def test_memory_presence_members_refuses_a_non_presence_channel_like_pusher() -> None:
    """An application's tests under RELAY_URL=memory:// fail where the same call would fail in production."""
    with pytest.raises(ProtocolError, match="not a presence channel"):
        Relay.from_url(PUSHER_URL).presence_members("orders")
    with pytest.raises(ProtocolError, match="not a presence channel"):
        Relay.from_url("memory://audit").presence_members("orders")
    # Ably would answer [] for any channel: refused before anything is sent
    with (
        respx.mock(assert_all_called=False) as cloud,
        pytest.raises(ProtocolError, match="'orders' is not a presence channel"),
    ):
        Relay.from_url("ably://app.key:secret@rest.ably.io").presence_members("orders")
    assert not cloud.calls


def test_memory_refuses_a_multi_channel_encrypted_publish_like_pusher() -> None:
    """Each encrypted channel's data is encrypted with its own key, so it is published alone, on memory too."""
    with pytest.raises(ProtocolError, match="one at a time"):
        Relay.from_url("memory://audit").publish(["private-encrypted-a", "b"], "e", "x")


async def test_memory_send_to_user_refuses_an_invalid_user_id_like_the_emulator(emulator: RunningEmulator) -> None:
    """A user id no ``#server-to-user-`` channel can carry is refused before any request, on every provider."""
    async with AsyncRelay(f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1") as real:
        with pytest.raises(ProtocolError):
            await real.send_to_user("bad id", "notice", {})
    with pytest.raises(ProtocolError):
        Relay.from_url("memory://audit").send_to_user("bad id", "notice", {})


LONG_CALLS = {
    "publish": lambda client: client.publish("a" * 165, "e", 1),
    "authorize_channel": lambda client: client.authorize_channel("123.456", "private-" + "a" * 157),
    "channel": lambda client: client.channel("a" * 165),
    "send_to_user": lambda client: client.send_to_user("u" * 149, "e", 1),
}


@pytest.mark.parametrize("call", list(LONG_CALLS))
@pytest.mark.parametrize("url", [PUSHER_URL, "memory://audit"])
def test_memory_refuses_the_names_hosted_pusher_refuses(url: str, call: str) -> None:
    """Hosted Pusher takes channel names of 164 characters, so user ids of 148 (``#server-to-user-`` and the id):
    memory accepted up to 200, a self-hosted server's limit, and a test passed that production failed."""
    client = Relay.from_url(url)
    with respx.mock(assert_all_called=False) as cloud, pytest.raises(ProtocolError) as refused:
        LONG_CALLS[call](client)
    assert not cloud.calls
    assert "164" in refused.value.message if call != "send_to_user" else "1 to 148" in refused.value.message
    if url.startswith("memory"):
        store = memory_store("audit")
        assert not [record for record in store.published if len(record.channel) > 164]
        client.publish("a" * 164, "e", 1)
        client.send_to_user("u" * 148, "e", 1)
        assert [len(record.channel) for record in store.published[-2:]] == [164, 164]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("pusher://key:secret@[::1]:6001/apps/1?tls=false", "::1"),
        ("pusher://key:secret@soketi:6001/apps/1?tls=false", "soketi"),
    ],
)
def test_pusher_hosts_with_a_port_are_not_taken_for_cluster_names(url: str, host: str) -> None:
    """Only a dot-free host without a port is a cluster name ('@eu/apps/1'): an IPv6 address or a docker-compose
    service with a port ('soketi:6001') is a host."""
    assert parse_url(url).host == host


@pytest.fixture
async def ipv6_emulator() -> AsyncIterator[int]:
    node = EmulatorNode(EmulatorConfig(apps=(App(app_id="1", key="app-key", secret="app-secret"),)))
    sock = socket.socket(socket.AF_INET6)
    sock.bind(("::1", 0))
    server = await start_server(node, sock=sock)
    yield sock.getsockname()[1]
    server.close()  # type: ignore[attr-defined]
    await node.close()


async def test_an_ipv6_emulator_url_works(ipv6_emulator: int) -> None:
    """An IPv6 host keeps its brackets in the URLs requests go to."""
    async with AsyncRelay(f"emulator://app-key:app-secret@[::1]:{ipv6_emulator}/apps/1") as client:
        result = await client.publish("orders", "order-ready", {"id": 1})
    assert result.channels == ("orders",)


@pytest.mark.parametrize("url", [PUSHER_URL, "memory://limits"])
def test_a_presence_member_over_pusher_s_limits_is_refused_when_signing(url: str) -> None:
    """A member Pusher would refuse at subscription (a 129-character id, user_info over 1 KB) is refused when the
    backend signs it, where the error can name the cause, instead of in the browser."""
    client = Relay.from_url(url)
    with pytest.raises(LimitExceeded, match="user_id is 129 characters long; the limit is 128"):
        client.authorize_channel("1.1", "presence-room", {"id": "u" * 129})
    with pytest.raises(PayloadTooLarge, match=r"user_info is 1[0-9]{3} bytes; the limit is 1024"):
        client.authorize_channel("1.1", "presence-room", {"id": "u", "info": {"bio": "x" * 1100}})
    assert client.authorize_channel("1.1", "presence-room", {"id": "u" * 128})["auth"]


MASTER_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="


async def test_memory_refuses_the_event_sizes_the_emulator_refuses_encrypted_channels_included(
    start_emulator: StartEmulator,
) -> None:
    """Pusher's 10 KB limit counts what is sent: an encrypted channel's data goes as the JSON of a nonce and the
    ciphertext in base64, so 7,619 plaintext bytes fit (10,240 sent) and 7,620 do not (10,244). memory:// refuses
    exactly what the emulator refuses, with its message, which says the size is the encrypted form's (the sender never
    saw 10,244 bytes)."""
    emulator = await start_emulator()
    query = f"?encryption_master_key={MASTER_KEY}"
    plain, encrypted = "orders", "private-encrypted-orders"
    cases = [(plain, 10_240), (plain, 10_241), (encrypted, 7_619), (encrypted, 7_620)]
    refused = [
        "data is 10241 bytes; the limit is 10240",
        "data is 10244 bytes encrypted (the nonce and ciphertext in base64: about 4/3 of the plaintext, plus 84); the "
        "limit is 10240",
    ]
    memory_store("sizes").clear()
    memory = AsyncRelay(f"memory://sizes{query}")
    async with AsyncRelay(f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1{query}") as real:
        for client in (memory, real):
            outcomes = []
            for channel, size in cases:
                try:
                    await client.publish(channel, "e", "x" * size)
                    outcomes.append("sent")
                except PayloadTooLarge as exc:
                    outcomes.append(exc.message)
            assert outcomes[0] == outcomes[2] == "sent", outcomes
            assert refused[0] in outcomes[1] and refused[1] in outcomes[3], outcomes
    assert memory_store("sizes").published == [
        Published(plain, "e", "x" * 10_240),
        Published(encrypted, "e", "x" * 7_619),
    ]
