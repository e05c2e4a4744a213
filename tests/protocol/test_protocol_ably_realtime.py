"""A realtime connection's pure rules (``relay.protocol.ably``): the channel modes a capability grants and an ATTACH
requests, its channel params, msgSerials, SYNC pages, the connect query and the protocol's limits; and the rules of
messages: how many a publish may carry, what their extras weigh, channelSerials and the ids of a publish. ``sent_to``,
``renewal_time`` and ``remain_present_for`` have their tests beside the emulator behaviour they decide
(tests/ably/test_ably_name_modes.py, test_ably_realtime_edges.py, test_ably_resume.py)."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import ProtocolError
from relay.protocol import ably
from relay.protocol.ably import (
    APPLIED_PARAMS,
    CONNECTION_STATE_TTL_MS,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_INBOUND_RATE,
    MAX_MESSAGE_SIZE,
    MAX_MESSAGES_PER_PUBLISH,
    MAX_REMAIN_PRESENT_MS,
    MIN_REMAIN_PRESENT_MS,
    MODE_PRESENCE,
    MODE_PRESENCE_SUBSCRIBE,
    MODE_PUBLISH,
    MODE_SUBSCRIBE,
    MODES,
    PRESENCE_HOLD_SECONDS,
    RENEWAL_LEAD_MS,
    SYNC_PAGE_BYTES,
    Rewind,
    allowed_modes,
    are_numbered_ids,
    channel_params,
    channel_serial,
    check_message_count,
    connect_query,
    extras_size,
    is_connection_key,
    is_msg_serial,
    numbered,
    publish_id,
    requested_modes,
    sync_pages,
)

PRESENCE, PUBLISH, SUBSCRIBE, PRESENCE_SUBSCRIBE = 1 << 16, 1 << 17, 1 << 18, 1 << 19  # Ably spec TR3


def test_the_protocol_message_actions_and_flags_are_ably_s() -> None:
    """Ably spec TR2 (actions) and TR3 (flags), and a message's own action (TM2j)."""
    actions = [
        "HEARTBEAT", "ACK", "NACK", "CONNECT", "CONNECTED", "DISCONNECT", "DISCONNECTED", "CLOSE", "CLOSED", "ERROR",
        "ATTACH", "ATTACHED", "DETACH", "DETACHED", "PRESENCE", "MESSAGE", "SYNC", "AUTH",
    ]  # fmt: skip
    assert [getattr(ably, action) for action in actions] == list(range(18))
    assert (ably.HAS_PRESENCE, ably.HAS_BACKLOG, ably.RESUMED, ably.MESSAGE_CREATE) == (1, 2, 4, 0)


def test_the_mode_flags_and_limits_are_ably_s() -> None:
    assert (MODE_PRESENCE, MODE_PUBLISH, MODE_SUBSCRIBE, MODE_PRESENCE_SUBSCRIBE) == (
        PRESENCE,
        PUBLISH,
        SUBSCRIBE,
        PRESENCE_SUBSCRIBE,
    )
    assert MODES == PRESENCE | PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE == 0xF0000
    assert (MAX_CHANNELS_PER_CONNECTION, MAX_INBOUND_RATE, CONNECTION_STATE_TTL_MS) == (200, 50, 120_000)
    assert (PRESENCE_HOLD_SECONDS, MIN_REMAIN_PRESENT_MS, MAX_REMAIN_PRESENT_MS) == (15.0, 1_000, 120_000)
    assert (RENEWAL_LEAD_MS, SYNC_PAGE_BYTES) == (30_000, 262_144)
    assert APPLIED_PARAMS == ("rewind", "rewindLimit", "occupancy", "modes")


@pytest.mark.parametrize(
    ("capability", "channel", "modes"),
    [
        ({"*": ["*"]}, "room", MODES),
        ({"*": ["subscribe"]}, "room", SUBSCRIBE | PRESENCE_SUBSCRIBE),
        ({"*": ["publish"]}, "room", PUBLISH),
        ({"*": ["presence"]}, "room", PRESENCE),
        ({"*": ["publish", "presence"]}, "room", PUBLISH | PRESENCE),
        ({"*": ["history", "channel-metadata", "stats"]}, "room", 0),  # attach needs one of the modes' operations
        ({"chat:*": ["publish"], "chat:room": ["subscribe"]}, "chat:room", PUBLISH | SUBSCRIBE | PRESENCE_SUBSCRIBE),
        ({"chat:*": ["*"], "chat:room": ["subscribe"]}, "chat:room", MODES),
        ({"chat:*": ["publish"]}, "room", 0),
        ({}, "room", 0),
        # Metachannels: "*" does not cover them, and no capability grants more than subscribe there.
        ({"*": ["*"]}, "[meta]channel.lifecycle", 0),
        ({"[meta]*": ["*"]}, "[meta]channel.lifecycle", SUBSCRIBE),
        ({"[*]*": ["subscribe"]}, "[meta]channel.lifecycle", SUBSCRIBE),
        ({"[meta]*": ["publish", "presence"]}, "[meta]channel.lifecycle", 0),
    ],
)
def test_allowed_modes_are_those_the_capability_grants(
    capability: dict[str, list[str]], channel: str, modes: int
) -> None:
    assert allowed_modes(capability, channel) == modes


@pytest.mark.parametrize(
    ("params", "flags", "modes"),
    [
        ({}, None, MODES),  # no flags: every mode
        ({}, 0, MODES),
        ({}, PUBLISH, PUBLISH),
        ({}, PUBLISH | PRESENCE_SUBSCRIBE | 1, PUBLISH | PRESENCE_SUBSCRIBE),  # flags other than modes: ignored
        ({}, "262144", MODES),  # flags that are not an integer: none
        ({"modes": "subscribe"}, PUBLISH, SUBSCRIBE),  # the param wins over the flags
        ({"modes": " Publish , presence_subscribe"}, None, PUBLISH | PRESENCE_SUBSCRIBE),
        ({"modes": "message_subscribe"}, None, SUBSCRIBE),  # ably-js 2.30's name for subscribe
        ({"modes": "presence"}, None, PRESENCE),
        ({"modes": "presence,annotation_subscribe"}, None, PRESENCE),
        ({"modes": "annotation_publish,object_subscribe,object_publish"}, PUBLISH, MODES),  # none emulated: all
        ({"rewind": "1"}, SUBSCRIBE, SUBSCRIBE),
    ],
)
def test_requested_modes(params: dict[str, object], flags: object, modes: int) -> None:
    assert requested_modes(params, flags) == modes


@pytest.mark.parametrize(
    ("modes", "message"),
    [
        ("subscribe,fly", "Invalid channel params: unknown channel mode 'fly'"),
        (" FLY ", "Invalid channel params: unknown channel mode 'FLY'"),
        ("", "Invalid channel params: unknown channel mode ''"),
        ("subscribe,", "Invalid channel params: unknown channel mode ''"),
        ("x" * 200, f"Invalid channel params: unknown channel mode {'x' * 100!r}"),
        (["subscribe"], "Invalid channel params: modes is a comma-separated string of channel modes"),
        (262144, "Invalid channel params: modes is a comma-separated string of channel modes"),
    ],
)
def test_requested_modes_refuses_a_mode_ably_does_not_know_with_40000(modes: object, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        requested_modes({"modes": modes}, SUBSCRIBE)
    assert (refused.value.code, refused.value.http_status, refused.value.message) == (40000, 400, message)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (None, None)),
        ({"modes": "subscribe"}, (None, None)),
        ({"rewind": "1"}, (Rewind(1), None)),
        ({"rewind": "2m", "occupancy": "metrics.connections"}, (Rewind(100, 120_000, True), ("connections",))),
        ({"rewind": "30s", "rewindLimit": "5"}, (Rewind(5, 30_000), None)),
        ({"occupancy": "metrics.publishers"}, (None, ("publishers",))),
    ],
)
def test_channel_params(params: dict[str, object], expected: tuple[Rewind | None, tuple[str, ...] | None]) -> None:
    assert channel_params(params) == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"rewind": "x"},
            "Invalid channel params: rewind must be a number of messages or a time such as '30s' or '2m', got 'x'",
        ),
        (
            {"rewind": "1", "rewindLimit": "0"},
            "Invalid channel params: rewindLimit must be a positive number of messages, got '0'",
        ),
        (
            {"occupancy": "all"},
            "Invalid channel params: occupancy must be 'metrics' or 'metrics.' and one of connections, "
            "presenceConnections, presenceMembers, presenceSubscribers, publishers, subscribers, objectPublishers, "
            "objectSubscribers, got 'all'",
        ),
    ],
)
def test_channel_params_refuses_what_ably_would_with_40003(params: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        channel_params(params)
    assert (refused.value.code, refused.value.http_status, refused.value.message) == (40003, 400, message)


@pytest.mark.parametrize(
    ("value", "serial"),
    [
        (0, True),
        (7, True),
        (2**63 - 1, True),
        (2**63, False),  # msgpack's int64 cannot carry it back
        (-1, False),
        (True, False),
        (1.0, False),
        ("1", False),
        (None, False),
    ],
)
def test_is_msg_serial(value: object, serial: bool) -> None:
    assert is_msg_serial(value) is serial


def sizes(pages: list[list[dict[str, Any]]]) -> list[int]:
    return [len(page) for page in pages]


@pytest.mark.parametrize(
    ("members", "pages"),
    [
        ([], [0]),  # one empty page: a SYNC is still sent
        ([{"clientId": "a"}], [1]),
        ([{"clientId": str(i)} for i in range(1310)], [1310]),  # 200 bytes a member: 1310 fill 262,000 of 262,144
        ([{"clientId": str(i)} for i in range(1311)], [1310, 1]),
        # 200 + 196,308 × 4 / 3 = 261,944: with a plain member exactly SYNC_PAGE_BYTES, one page
        ([{"data": "a" * 196_308}, {"clientId": "b"}], [2]),
        ([{"data": b"a" * 196_309}, {"clientId": "b"}], [1, 1]),  # one byte more: two
        ([{"data": "a" * 1_000_000}], [1]),  # a member over the size still has a page
        ([{"clientId": "a"}, {"data": "a" * 1_000_000}, {"clientId": "b"}], [1, 1, 1]),
        ([{"data": {"not": "text"}}] * 1311, [1310, 1]),  # data that is neither text nor binary weighs nothing
    ],
)
def test_sync_pages_hold_about_sync_page_bytes_each(members: list[dict[str, Any]], pages: list[int]) -> None:
    paged = sync_pages(members)
    assert sizes(paged) == pages
    assert [member for page in paged for member in page] == members  # in order, none lost


@pytest.mark.parametrize(
    ("target", "query"),
    [
        ("/", {}),
        ("/?", {}),
        (
            "/?key=app.key:secret&format=msgpack&heartbeats=true",
            {"key": "app.key:secret", "format": "msgpack", "heartbeats": "true"},
        ),
        ("/?clientId=&resume=", {"clientId": "", "resume": ""}),  # blank values kept
        ("/?clientId=a%20b+c&x=1&x=2", {"clientId": "a b c", "x": "2"}),  # decoded; the last of a repeated key
        ("/?access_token=a.b.c#fragment", {"access_token": "a.b.c"}),
    ],
)
def test_connect_query(target: str, query: dict[str, str]) -> None:
    assert connect_query(target) == query


# -- messages ------------------------------------------------------------------------------------------------------


def test_message_limits_are_ably_s() -> None:
    assert (MAX_MESSAGE_SIZE, MAX_MESSAGES_PER_PUBLISH) == (65_536, 1_000)


@pytest.mark.parametrize("count", [0, 1, 1_000])
def test_a_publish_of_up_to_a_thousand_messages_passes(count: int) -> None:
    check_message_count(count, "messages")


@pytest.mark.parametrize(
    ("count", "where", "message"),
    [
        (1_001, "messages", "messages: Too many messages in one publish (1001; the maximum is 1000)"),
        (100_000, "presence", "presence: Too many messages in one publish (100000; the maximum is 1000)"),
        (1_001, "[0].messages", "[0].messages: Too many messages in one publish (1001; the maximum is 1000)"),
    ],
)
def test_more_messages_in_one_publish_is_ably_s_40034(count: int, where: str, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        check_message_count(count, where)
    assert (refused.value.code, refused.value.http_status, refused.value.message) == (40034, 400, message)


@pytest.mark.parametrize(
    ("extras", "size"),
    [
        ({}, 2),
        ({"headers": {"k": "v"}}, 21),  # {"headers":{"k":"v"}}
        ({"a": "é"}, 9),  # one UTF-16 code unit, not the six of \u00e9
        ({"a": "\U0001f600"}, 10),  # outside the BMP: two
        ({"a": [1, True, None]}, 19),  # {"a":[1,true,null]}
    ],
)
def test_extras_weigh_their_json_in_utf16_code_units_as_ably_js_measures(extras: dict[str, Any], size: int) -> None:
    assert extras_size(extras) == size


@pytest.mark.parametrize(
    ("serial", "text"),
    [(0, "0000000000000000"), (255, "00000000000000ff"), (2**52 + 1, "0010000000000001"), (2**64 - 1, "f" * 16)],
)
def test_channel_serial_is_sixteen_hex_digits(serial: int, text: str) -> None:
    assert channel_serial(serial) == text


def test_numbered_ids_count_from_zero() -> None:
    assert numbered("00000000000000ff", 3) == ["00000000000000ff:0", "00000000000000ff:1", "00000000000000ff:2"]
    assert numbered("base", 0) == []


@pytest.mark.parametrize(
    ("ids", "numbered_ok"),
    [
        ([], True),
        ([None], True),
        (["any-id"], True),  # one message may carry any id
        ([None, None], True),  # no ids at all
        (["b:0", "b:1", "b:2"], True),
        (["a:b:0", "a:b:1"], True),  # the base is what comes before the last ':'
        (["b:1", "b:2"], False),  # numbered from 0
        (["b:0", "c:1"], False),
        (["b:0", None], False),
        ([None, "b:1"], False),
        (["b", "b:1"], False),
        ([":0", ":1"], False),  # an empty base
        (["b:0", "b:01"], False),
    ],
)
def test_the_ids_of_a_publish_of_several_are_base_0_base_1(ids: list[str | None], numbered_ok: bool) -> None:
    assert are_numbered_ids(ids) is numbered_ok


@pytest.mark.parametrize(
    ("ids", "message_id"),
    [(("base:0", "base:1"), "base"), (("a:b:0",), "a:b"), (("plain",), "plain"), ((":0",), ":0")],
)
def test_publish_id_is_the_base_the_ids_are_numbered_from(ids: tuple[str, ...], message_id: str) -> None:
    assert publish_id(ids) == message_id


@pytest.mark.parametrize(
    ("key", "is_key"),
    [
        ("123.456", True),  # a Pusher socket id
        ("123.456!abcDEF09", True),  # an Ably connection's key: its id, "!", a secret
        ("123.456!", False),
        ("123.456!ab-c", False),
        ("123.456!abc!d", False),
        ("123.456!\u00e9", False),  # the secret is ASCII
        ("abc!x", False),
        ("!abc", False),
        ("", False),
    ],
)
def test_is_connection_key(key: str, is_key: bool) -> None:
    assert is_connection_key(key) is is_key
