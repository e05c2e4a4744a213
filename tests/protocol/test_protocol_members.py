"""Presence channel_data and sign-in user_data parsing, with the protocol's limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidFrame, LimitExceeded, PayloadTooLarge, ProtocolError
from relay.protocol import members
from relay.protocol.channels import Limits

PROPERTY = settings(max_examples=150, deadline=None)


def _info_of_size(size: int) -> dict[str, str]:
    """A user_info whose compact JSON encoding is exactly ``size`` bytes."""
    info = {"n": "x" * (size - len('{"n":""}'))}
    assert len(json.dumps(info, separators=(",", ":")).encode()) == size
    return info


# -- channel_data ----------------------------------------------------------------------------------------------


def test_parse_channel_data_doc_example() -> None:
    member = members.parse_channel_data('{"user_id":10,"user_info":{"name":"Mr. Channels"}}')
    assert member == members.Member(user_id="10", user_info_json='{"name":"Mr. Channels"}')


def test_parse_channel_data_string_id_and_missing_info() -> None:
    member = members.parse_channel_data('{"user_id": "abc"}')
    assert member.user_id == "abc"
    assert member.user_info_json == "{}"
    assert members.parse_channel_data('{"user_id":"a","user_info":null}').user_info_json == "{}"


def test_parse_channel_data_reencodes_info_compactly() -> None:
    member = members.parse_channel_data('{"user_id": -5, "user_info": {"name": "É", "tags": [1, 2]}}')
    assert member.user_id == "-5"
    assert member.user_info_json == '{"name":"É","tags":[1,2]}'


def test_user_id_length_limit() -> None:
    assert members.parse_channel_data(json.dumps({"user_id": "u" * 128})).user_id == "u" * 128
    with pytest.raises(LimitExceeded, match="129 characters long; the limit is 128"):
        members.parse_channel_data(json.dumps({"user_id": "u" * 129}))
    assert members.parse_channel_data(json.dumps({"user_id": int("9" * 128)})).user_id == "9" * 128
    with pytest.raises(LimitExceeded):
        members.parse_channel_data(json.dumps({"user_id": int("9" * 129)}))
    with pytest.raises(LimitExceeded, match="limit is 8"):
        members.parse_channel_data('{"user_id":"123456789"}', Limits(max_user_id_length=8))


def test_user_info_size_limit() -> None:
    ok = json.dumps({"user_id": "1", "user_info": _info_of_size(1024)})
    assert len(members.parse_channel_data(ok).user_info_json.encode()) == 1024
    too_big = json.dumps({"user_id": "1", "user_info": _info_of_size(1025)})
    with pytest.raises(PayloadTooLarge, match="1025 bytes; the limit is 1024") as info:
        members.parse_channel_data(too_big)
    assert info.value.http_status == 413


def test_user_info_size_counts_utf8_bytes() -> None:
    info = {"n": "é" * 510}  # 510 characters, 1020 bytes of text, 1028 bytes encoded
    with pytest.raises(PayloadTooLarge):
        members.parse_channel_data(json.dumps({"user_id": "1", "user_info": info}))


@pytest.mark.parametrize(
    ("channel_data", "phrase"),
    [
        (None, "JSON-encoded string"),
        ({"user_id": "1"}, "JSON-encoded string"),
        (b'{"user_id":"1"}', "JSON-encoded string"),
        ("not json", "not valid JSON"),
        ("[" * 100_000, "nests arrays and objects too deeply"),
        ('["user_id"]', "encode a JSON object"),
        ('"1"', "encode a JSON object"),
        ("{}", "must contain user_id"),
        ('{"user_info":{}}', "must contain user_id"),
        ('{"user_id":""}', "must not be empty"),
        ('{"user_id":null}', "string or an integer"),
        ('{"user_id":true}', "string or an integer"),
        ('{"user_id":1.5}', "string or an integer"),
        ('{"user_id":["1"]}', "string or an integer"),
        ('{"user_id":{"id":1}}', "string or an integer"),
    ],
)
def test_parse_channel_data_rejects(channel_data: object, phrase: str) -> None:
    with pytest.raises(InvalidFrame, match=phrase):
        members.parse_channel_data(channel_data)


@PROPERTY
@given(
    user_id=st.integers(-(10**30), 10**30) | st.text(min_size=1, max_size=128),
    user_info=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=20) | st.integers(), max_size=5),
)
def test_parse_channel_data_property(user_id: int | str, user_info: dict[str, Any] | None) -> None:
    member = members.parse_channel_data(json.dumps({"user_id": user_id, "user_info": user_info}))
    assert member.user_id == str(user_id)
    assert json.loads(member.user_info_json) == (user_info if user_info is not None else {})


@PROPERTY
@given(st.text(max_size=200))
def test_parse_channel_data_arbitrary_text_only_raises_protocol_errors(text: str) -> None:
    try:
        member = members.parse_channel_data(text)
    except ProtocolError:
        return
    assert isinstance(member.user_id, str)
    assert member.user_id


def test_parse_channel_data_lone_surrogate_is_a_protocol_error() -> None:
    with pytest.raises(InvalidFrame, match="channel_data contains a lone UTF-16 surrogate escape"):
        members.parse_channel_data('{"user_id":"1","user_info":{"name":"\\ud800"}}')


# -- user_data ----------------------------------------------------------------------------------------------------


def test_parse_user_data() -> None:
    user, truncated = members.parse_user_data('{"id":"42","user_info":{"name":"Ann"},"watchlist":["1","2"]}')
    assert user == members.SignedInUser(user_id="42", user_info_json='{"name":"Ann"}', watchlist=("1", "2"))
    assert truncated is False
    user, truncated = members.parse_user_data('{"id":"12345"}')
    assert user == members.SignedInUser(user_id="12345", user_info_json="{}", watchlist=())
    assert truncated is False


@pytest.mark.parametrize(
    ("user_data", "phrase"),
    [
        ('{"id":12345}', "non-empty string id"),
        ('{"id":""}', "non-empty string id"),
        ('{"id":null}', "non-empty string id"),
        ('{"user_id":"1"}', "non-empty string id"),
        ("{}", "non-empty string id"),
        ('{"id":"1","watchlist":"2"}', "watchlist"),
        ('{"id":"1","watchlist":[2]}', "watchlist"),
        ('{"id":"1","watchlist":{"a":"b"}}', "watchlist"),
        (
            '{"id":"1","watchlist":["2",""]}',
            "user_data watchlist item 1 is empty: a user id has at least one character",
        ),
        (
            json.dumps({"id": "1", "watchlist": ["u" * 129]}),
            "user_data watchlist item 0 is 129 characters long; a user id is at most 128",
        ),
        ("nope", "not valid JSON"),
        ("[]", "encode a JSON object"),
        (None, "JSON-encoded string"),
    ],
)
def test_parse_user_data_rejects(user_data: object, phrase: str) -> None:
    with pytest.raises(InvalidFrame, match=phrase):
        members.parse_user_data(user_data)


def test_a_watchlist_id_of_the_longest_user_id_signs_in() -> None:
    user, _ = members.parse_user_data(json.dumps({"id": "1", "watchlist": ["u" * 128, "2"]}))
    assert user.watchlist == ("u" * 128, "2")


def test_parse_user_data_limits() -> None:
    with pytest.raises(LimitExceeded, match="user_data id is 129 characters long; the limit is 128"):
        members.parse_user_data(json.dumps({"id": "u" * 129}))
    user, _ = members.parse_user_data(json.dumps({"id": "u" * 128}))
    assert user.user_id == "u" * 128
    with pytest.raises(PayloadTooLarge):
        members.parse_user_data(json.dumps({"id": "1", "user_info": _info_of_size(1025)}))


@pytest.mark.parametrize(("size", "truncated"), [(0, False), (99, False), (100, False), (101, True), (250, True)])
def test_watchlist_cut_to_limit(size: int, truncated: bool) -> None:
    watchlist = [str(index) for index in range(size)]
    user, was_truncated = members.parse_user_data(json.dumps({"id": "me", "watchlist": watchlist}))
    assert was_truncated is truncated
    assert user.watchlist == tuple(watchlist[:100])


def test_watchlist_limit_is_configurable() -> None:
    user, truncated = members.parse_user_data('{"id":"me","watchlist":["a","b","c"]}', Limits(max_watchlist=2))
    assert user.watchlist == ("a", "b")
    assert truncated is True


def test_parse_user_data_lone_surrogate_is_a_protocol_error() -> None:
    with pytest.raises(InvalidFrame, match="user_data contains a lone UTF-16 surrogate escape"):
        members.parse_user_data('{"id":"1","user_info":{"name":"\\ud800"}}')
