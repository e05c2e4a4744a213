"""Channel kinds, cache prefixes, channel and event names."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidChannelName, InvalidEventName, ProtocolError
from relay.protocol import channels
from relay.protocol.channels import ChannelKind

PROPERTY = settings(max_examples=150, deadline=None)
CHANNEL_CHARS = string.ascii_letters + string.digits + "_-=@,.;"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("presence-room", ChannelKind.PRESENCE),
        ("presence-private-encrypted-x", ChannelKind.PRESENCE),
        ("presence-cache-x", ChannelKind.PRESENCE),
        ("private-encrypted-room", ChannelKind.ENCRYPTED),
        ("private-encrypted-cache-room", ChannelKind.ENCRYPTED),
        ("private-room", ChannelKind.PRIVATE),
        ("private-presence-room", ChannelKind.PRIVATE),
        ("private-cache-room", ChannelKind.PRIVATE),
        ("private-encrypted", ChannelKind.PRIVATE),
        ("#server-to-user-42", ChannelKind.SERVER_TO_USER),
        ("room", ChannelKind.PUBLIC),
        ("cache-room", ChannelKind.PUBLIC),
        ("presence", ChannelKind.PUBLIC),
        ("private", ChannelKind.PUBLIC),
        ("Private-room", ChannelKind.PUBLIC),
        ("xprivate-room", ChannelKind.PUBLIC),
        ("server-to-user-1", ChannelKind.PUBLIC),
    ],
)
def test_classify(name: str, kind: ChannelKind) -> None:
    assert channels.classify(name) is kind


def test_kind_properties() -> None:
    assert {kind for kind in ChannelKind if kind.needs_auth} == {
        ChannelKind.PRIVATE,
        ChannelKind.PRESENCE,
        ChannelKind.ENCRYPTED,
    }
    assert {kind for kind in ChannelKind if kind.allows_client_events} == {
        ChannelKind.PRIVATE,
        ChannelKind.PRESENCE,
        ChannelKind.ENCRYPTED,
    }


@pytest.mark.parametrize(
    ("name", "cached"),
    [
        ("cache-x", True),
        ("private-cache-x", True),
        ("private-encrypted-cache-x", True),
        ("presence-cache-x", True),
        ("x", False),
        ("private-x", False),
        ("presence-x", False),
        ("xcache-x", False),
        ("private-encrypted-x", False),
        ("cache", False),
    ],
)
def test_is_cache_channel(name: str, cached: bool) -> None:
    assert channels.is_cache_channel(name) is cached


def test_channel_name_length_limit() -> None:
    assert channels.validate_channel_name("a" * 200) == "a" * 200
    assert channels.validate_channel_name("private-" + "a" * 192) == "private-" + "a" * 192
    with pytest.raises(InvalidChannelName, match="201 characters long; the limit is 200") as info:
        channels.validate_channel_name("a" * 201)
    assert info.value.http_status == 400
    with pytest.raises(InvalidChannelName):
        channels.validate_channel_name("#server-to-user-" + "1" * 185)
    limits = channels.Limits(max_channel_name=164)
    assert channels.validate_channel_name("a" * 164, limits)
    with pytest.raises(InvalidChannelName, match="limit is 164"):
        channels.validate_channel_name("a" * 165, limits)


def test_channel_name_full_charset() -> None:
    name = CHANNEL_CHARS
    assert channels.validate_channel_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["a b", "a/b", "a:b", "a#b", "#room", "é", "a\nb", "a*", "a+b", "a'b", "a\x00", "ｆｕｌｌ", "a[b]"],
)
def test_channel_name_illegal_characters(name: str) -> None:
    with pytest.raises(InvalidChannelName, match="characters outside"):
        channels.validate_channel_name(name)


@pytest.mark.parametrize("name", ["", None, 42, b"private-x", ["x"]])
def test_channel_name_must_be_non_empty_string(name: object) -> None:
    with pytest.raises(InvalidChannelName, match="non-empty string"):
        channels.validate_channel_name(name)


def test_server_to_user_channel_is_the_only_hash_channel() -> None:
    assert channels.validate_channel_name("#server-to-user-42") == "#server-to-user-42"
    assert channels.server_to_user_channel("user@example.com") == "#server-to-user-user@example.com"
    assert channels.validate_channel_name(channels.server_to_user_channel("a-b_c=d")) == "#server-to-user-a-b_c=d"
    for name in ["#server-to-user-", "#server-to-user-a b", "#server-to-user-#1", "#server-to-user-é"]:
        with pytest.raises(InvalidChannelName, match="server-to-user"):
            channels.validate_channel_name(name)
    for name in ["#server-to-users-1", "#private-1", "#", "##server-to-user-1"]:
        with pytest.raises(InvalidChannelName, match="reserved"):
            channels.validate_channel_name(name)


@PROPERTY
@given(
    prefix=st.sampled_from(["", "private-", "presence-", "private-encrypted-", "cache-"]),
    rest=st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=200),
)
def test_valid_names_accepted_up_to_limit(prefix: str, rest: str) -> None:
    name = prefix + rest
    if len(name) <= 200:
        assert channels.validate_channel_name(name) == name
    else:
        with pytest.raises(InvalidChannelName):
            channels.validate_channel_name(name)


@PROPERTY
@given(st.text(max_size=250))
def test_validate_channel_name_agrees_with_charset(name: str) -> None:
    ok = (
        0 < len(name) <= 200
        and all(char in CHANNEL_CHARS for char in name.removeprefix("#server-to-user-"))
        and (not name.startswith("#") or (name.startswith("#server-to-user-") and len(name) > 16))
    )
    if ok:
        assert channels.validate_channel_name(name) == name
    else:
        with pytest.raises(ProtocolError):
            channels.validate_channel_name(name)


@PROPERTY
@given(
    prefix=st.sampled_from(["", "#server-to-user-", "#", "presence-"]),
    rest=st.text(alphabet=CHANNEL_CHARS + '#:[] \né"\\', max_size=210),
    limits=st.sampled_from(
        [channels.DEFAULT_LIMITS, channels.HOSTED_PUSHER_LIMITS, channels.Limits(max_channel_name=20)]
    ),
)
def test_is_valid_channel_name_is_what_validate_takes_and_such_a_name_is_its_own_json(
    prefix: str, rest: str, limits: channels.Limits
) -> None:
    """The channel list checks every occupied channel with is_valid_channel_name (one match, no exception) and writes
    the names it takes into its JSON as they are."""
    name = prefix + rest
    try:
        channels.validate_channel_name(name, limits)
    except InvalidChannelName:
        assert not channels.is_valid_channel_name(name, limits)
    else:
        assert channels.is_valid_channel_name(name, limits)
        assert json.dumps(name, ensure_ascii=False) == f'"{name}"'


@pytest.mark.parametrize("name", ["App\\Events\\X", "my-event", "a.b:c", "é ☃ \n", "client-typing", "x" * 200, " "])
def test_event_names_any_characters(name: str) -> None:
    assert channels.validate_event_name(name) == name


@pytest.mark.parametrize("name", ["", None, 3, b"event"])
def test_event_name_must_be_non_empty_string(name: object) -> None:
    with pytest.raises(InvalidEventName, match="non-empty string"):
        channels.validate_event_name(name)


def test_event_name_length_limit() -> None:
    with pytest.raises(InvalidEventName, match="201 characters long; the limit is 200"):
        channels.validate_event_name("x" * 201)
    with pytest.raises(InvalidEventName):
        channels.validate_event_name("x" * 11, channels.Limits(max_event_name=10))


def test_client_events_and_default_limits() -> None:
    assert channels.is_client_event("client-typing")
    assert not channels.is_client_event("pusher:ping")
    assert not channels.is_client_event("Client-typing")
    limits = channels.DEFAULT_LIMITS
    assert (limits.max_channel_name, limits.max_event_name, limits.max_event_bytes) == (200, 200, 10_240)
    assert (limits.max_channels_per_event, limits.max_batch_events, limits.max_presence_members) == (100, 10, 100)
    assert (limits.max_user_info_bytes, limits.max_user_id_length, limits.max_watchlist) == (1_024, 128, 100)
    assert limits.client_events_per_second == 10
