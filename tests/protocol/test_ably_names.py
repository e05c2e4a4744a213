"""Ably channel names: one rule (``relay.protocol.ably.ably_channel_problem``, after https://ably.com/docs/channels:
not empty, not starting with ``[`` or ``:``, no newline; at most the 2048 characters Ably recommends) for the library
and the emulator, which refuses a little more of its own (control characters, Pusher's per-user channels)."""

from __future__ import annotations

import httpx
import pytest

from relay import AsyncRelay, Relay
from relay.emulator.ably_auth import AblyError
from relay.emulator.ably_hub import check_channel_name
from relay.errors import InvalidChannelName
from relay.protocol.ably import MAX_CHANNEL_NAME, ably_channel_problem, validate_channel_name
from tests.conftest import RunningEmulator

ABLY = "ably://app.key:secret@rest.ably.io"

ALLOWED = [
    "a" * 250,
    "a" * 251,
    "a" * 2048,
    "chat:room",
    "room:",
    "a[b]",
    "rooms: café bar",
    "family-\U0001f468\u200d\U0001f469",
]
REFUSED = [
    ("a" * 2049, "must be at most 2048 characters, not 2049"),
    (":room", "must not start with ':'"),
    ("[meta]log", "must not start with '['"),
    ("[?rewind=1]room", "must not start with '['"),
    ("a\nb", "must not contain a newline"),
    ("\n", "must not contain a newline"),
    ("", "must be a non-empty string"),
    (None, "must be a non-empty string"),
    (42, "must be a non-empty string"),
]


def test_the_longest_name_is_the_length_ably_recommends() -> None:
    assert MAX_CHANNEL_NAME == 2048


@pytest.mark.parametrize("name", ALLOWED, ids=lambda name: f"{name[:12]!r}x{len(name)}")
def test_names_ably_allows_pass_the_library_and_the_emulator(name: str) -> None:
    assert ably_channel_problem(name) is None
    assert validate_channel_name(name) == name
    assert check_channel_name(name) == name


@pytest.mark.parametrize(("name", "problem"), REFUSED, ids=lambda value: repr(value)[:16])
def test_names_ably_refuses_fail_the_library_and_the_emulator_alike(name: object, problem: str) -> None:
    """Each refusal names its reason: the library raises InvalidChannelName, the emulator AblyError, both 40010."""
    found = ably_channel_problem(name)
    assert found is not None and problem in found
    with pytest.raises(InvalidChannelName) as library:
        validate_channel_name(name)
    assert library.value.code == 40010 and library.value.message.startswith("invalid Ably channel name")
    assert problem in library.value.message
    with pytest.raises(AblyError) as emulator:
        check_channel_name(name)
    assert emulator.value.code == 40010 and emulator.value.message.startswith("Invalid channel name")
    assert problem in emulator.value.message


@pytest.mark.parametrize(
    ("name", "problem"),
    [("tab\there", "control characters"), ("cr\rhere", "control characters"), ("#server-to-user-1", "per-user")],
)
def test_the_emulator_alone_refuses_control_characters_and_pusher_user_channels(name: str, problem: str) -> None:
    assert validate_channel_name(name) == name
    with pytest.raises(AblyError) as refused:
        check_channel_name(name)
    assert refused.value.code == 40010 and problem in refused.value.message


def test_the_library_applies_the_rule_before_any_request() -> None:
    """A token for a 2048-character channel is signed; for 2049 characters or a leading ':' it is refused."""
    relay = Relay.from_url(ABLY)
    long_name = "n" * 2048
    assert relay.authorize_channel("conn", long_name, "alice")["capability"] == f'{{"{long_name}":["subscribe"]}}'
    for name in ("n" * 2049, ":room"):
        with pytest.raises(InvalidChannelName) as refused:
            relay.authorize_channel("conn", name, "alice")
        assert refused.value.code == 40010


async def test_the_library_and_the_emulator_agree_at_the_edges(emulator: RunningEmulator) -> None:
    """The library publishes to a 2048-character channel of a real emulator, which takes it; a 2049-character name is
    refused by the library before it sends, and by the emulator's REST API (40010), which goes on serving."""
    app = emulator.app
    relay = AsyncRelay.from_url(f"ably://{app.app_id}.{app.key}:{app.secret}@127.0.0.1:{emulator.port}?tls=false")
    try:
        await relay.publish("n" * 2048, "e", {"k": 1})
        with pytest.raises(InvalidChannelName):
            await relay.publish("n" * 2049, "e", {"k": 1})
    finally:
        await relay.aclose()
    auth = (f"{app.app_id}.{app.key}", app.secret)
    async with httpx.AsyncClient(base_url=emulator.http_url, auth=auth) as http:
        refused = await http.post(f"/channels/{'n' * 2049}/messages", json={"name": "e"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == 40010, refused.text
        assert "must be at most 2048 characters" in refused.json()["error"]["message"]
        refused = await http.post("/channels/%3Aroom/messages", json={"name": "e"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == 40010, refused.text
        taken = await http.post(f"/channels/{'n' * 2048}/messages", json={"name": "e"})
        assert taken.status_code == 201, taken.text
