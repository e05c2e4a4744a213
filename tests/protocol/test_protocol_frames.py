"""Pusher WebSocket frames: the double-encoding rule, frame shapes, and decoding of client frames."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidFrame, PayloadTooLarge, ProtocolError
from relay.protocol import frames

PROPERTY = settings(max_examples=200, deadline=None)
BIG = 1 << 20

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


def _load(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


# -- server frames ---------------------------------------------------------------------------------------------


def test_connection_established_data_is_a_json_string() -> None:
    frame = _load(frames.connection_established("123.456", 120))
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"socket_id": "123.456", "activity_timeout": 120}
    assert "channel" not in frame


def test_error_data_is_an_object() -> None:
    frame = _load(frames.error(4001, "Application does not exist"))
    assert frame == {"event": "pusher:error", "data": {"code": 4001, "message": "Application does not exist"}}
    assert _load(frames.error(None, "Existing subscription"))["data"] == {
        "code": None,
        "message": "Existing subscription",
    }


def test_ping_and_pong() -> None:
    assert _load(frames.ping()) == {"event": "pusher:ping", "data": {}}
    assert _load(frames.pong()) == {"event": "pusher:pong", "data": {}}


@pytest.mark.parametrize("data", ['{"some":"data"}', '{"some": "data"}', "plain text", "", 'é ☃ \\ " \n', "[1, 2]"])
def test_channel_event_keeps_data_verbatim(data: str) -> None:
    text = frames.channel_event("App\\Events\\X", "my-channel", data)
    assert _load(text) == {"event": "App\\Events\\X", "channel": "my-channel", "data": data}


def test_channel_event_user_id_and_compact_encoding() -> None:
    text = frames.channel_event("client-typing", "presence-x", "{}", user_id="42")
    assert text == '{"event":"client-typing","channel":"presence-x","data":"{}","user_id":"42"}'
    assert "user_id" not in _load(frames.channel_event("e", "c", "{}"))


@PROPERTY
@given(st.text(), st.text(), st.text(), st.none() | st.text())
def test_channel_event_is_the_compact_encoding_of_its_object(
    event: str, channel: str, data: str, user: str | None
) -> None:
    """Built from encoded strings (the per-publish hot path), it must equal what ``dumps`` gives for the object."""
    expected = {"event": event, "channel": channel, "data": data} | ({} if user is None else {"user_id": user})
    assert frames.channel_event(event, channel, data, user) == frames.dumps(expected)


def test_subscription_succeeded_default_data() -> None:
    assert _load(frames.subscription_succeeded("private-x")) == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": "private-x",
        "data": "{}",
    }


def test_presence_data_shape() -> None:
    data = frames.presence_data({"1": '{"name":"Ann"}', "2": "{}", 'q"uote': "null"})
    assert json.loads(data) == {
        "presence": {
            "ids": ["1", "2", 'q"uote'],
            "hash": {"1": {"name": "Ann"}, "2": {}, 'q"uote': None},
            "count": 3,
        }
    }
    assert json.loads(frames.presence_data({})) == {"presence": {"ids": [], "hash": {}, "count": 0}}


@PROPERTY
@given(st.dictionaries(st.text(min_size=1, max_size=20), json_values, max_size=8))
def test_presence_data_is_valid_json(members: dict[str, Any]) -> None:
    encoded = {user_id: json.dumps(info, separators=(",", ":")) for user_id, info in members.items()}
    data = frames.presence_data(encoded)
    assert json.loads(data) == {"presence": {"ids": list(members), "hash": members, "count": len(members)}}
    frame = _load(frames.subscription_succeeded("presence-room", data))
    assert frame["data"] == data


def test_member_added_and_removed() -> None:
    added = _load(frames.member_added("presence-x", "3", '{"name":"C"}'))
    assert added["event"] == "pusher_internal:member_added"
    assert added["channel"] == "presence-x"
    assert isinstance(added["data"], str)
    assert json.loads(added["data"]) == {"user_id": "3", "user_info": {"name": "C"}}
    removed = _load(frames.member_removed("presence-x", "3"))
    assert removed == {"event": "pusher_internal:member_removed", "channel": "presence-x", "data": '{"user_id":"3"}'}


@PROPERTY
@given(user_id=st.text(min_size=1, max_size=30), info=json_values)
def test_member_added_data_parses(user_id: str, info: Any) -> None:
    added = _load(frames.member_added("presence-x", user_id, json.dumps(info)))
    assert json.loads(added["data"]) == {"user_id": user_id, "user_info": info}


def test_other_server_frames() -> None:
    assert _load(frames.subscription_error("private-x", "AuthError", "bad", 401)) == {
        "event": "pusher:subscription_error",
        "channel": "private-x",
        "data": {"type": "AuthError", "error": "bad", "status": 401},
    }
    count = _load(frames.subscription_count("c", 5))
    assert count["event"] == "pusher_internal:subscription_count"
    assert json.loads(count["data"]) == {"subscription_count": 5}
    assert _load(frames.cache_miss("cache-x")) == {"event": "pusher:cache_miss", "channel": "cache-x", "data": "{}"}
    assert _load(frames.signin_success('{"id":"42"}')) == {
        "event": "pusher:signin_success",
        "data": {"user_data": '{"id":"42"}'},
    }
    assert _load(frames.watchlist_events(["1"], ["2", "3"]))["data"] == {
        "events": [{"name": "online", "user_ids": ["1"]}, {"name": "offline", "user_ids": ["2", "3"]}]
    }
    assert _load(frames.watchlist_events([], ["2"]))["data"] == {"events": [{"name": "offline", "user_ids": ["2"]}]}


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert frames.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'


# -- decoding client frames ------------------------------------------------------------------------------------


@PROPERTY
@given(
    event=st.text(min_size=1, max_size=50),
    channel=st.text(max_size=50),
    data=st.text(max_size=200),
    user_id=st.none() | st.text(max_size=10),
)
def test_channel_event_round_trip(event: str, channel: str, data: str, user_id: str | None) -> None:
    text = frames.channel_event(event, channel, data, user_id)
    decoded = frames.decode_client_frame(text, BIG)
    assert decoded == frames.ClientFrame(event=event, data=data, channel=channel)
    assert frames.decode_client_frame(text.encode(), BIG) == decoded


def test_decode_subscribe_frame() -> None:
    text = '{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"k:s"}}'
    frame = frames.decode_client_frame(text, 1000)
    assert frame == frames.ClientFrame(
        event="pusher:subscribe", data={"channel": "private-x", "auth": "k:s"}, channel=None
    )
    assert frames.data_object(frame) == {"channel": "private-x", "auth": "k:s"}


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("not json", "not valid JSON"),
        ('{"event":"x"', "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        ('{"event":"pusher:ping"}'.encode("utf-16"), "not valid JSON"),  # JSON on the wire is UTF-8 (RFC 8259)
        (b'{"event":"\xed\xa0\x80"}', "not valid JSON"),  # an encoded surrogate is not UTF-8
        ("[1,2]", "JSON object"),
        ('"pusher:ping"', "JSON object"),
        ("null", "JSON object"),
        ("42", "JSON object"),
        ('{"data":{}}', "string 'event'"),
        ('{"event":null}', "string 'event'"),
        ('{"event":42}', "string 'event'"),
        ('{"event":""}', "string 'event'"),
        ('{"event":["pusher:ping"]}', "string 'event'"),
        ('{"event":"client-x","channel":7}', "'channel' must be a string"),
        ('{"event":"client-x","channel":{"name":"c"}}', "'channel' must be a string"),
        ('{"event":"client-x","channel":["c"]}', "'channel' must be a string"),
        ("[" * 100_000, "frame nests arrays and objects too deeply"),
        ('{"event":"x","data":' + "[" * 100_000 + "]" * 100_000 + "}", "frame nests arrays and objects too deeply"),
        ('{"event":"x","data":' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "}", "nests arrays and objects too deeply"),
    ],
)
def test_decode_rejects_malformed(text: str | bytes, phrase: str) -> None:
    with pytest.raises(InvalidFrame, match=phrase) as info:
        frames.decode_client_frame(text, 1 << 22)
    assert info.value.http_status == 400


def test_decode_size_limit() -> None:
    text = '{"event":"pusher:ping","data":{}}'
    assert frames.decode_client_frame(text, len(text)).event == "pusher:ping"
    with pytest.raises(PayloadTooLarge, match="limit is") as info:
        frames.decode_client_frame(text, len(text) - 1)
    assert info.value.http_status == 413
    with pytest.raises(PayloadTooLarge):
        frames.decode_client_frame(text.encode(), len(text) - 1)
    # The size check comes before parsing: an oversized frame is too large, not malformed.
    with pytest.raises(PayloadTooLarge):
        frames.decode_client_frame("[" * 2000, 1000)


def test_decode_size_limit_counts_utf8_bytes_of_text() -> None:
    text = '{"event":"client-x","channel":"private-a","data":"' + "é" * 600 + '"}'
    assert len(text) <= 1000 < len(text.encode())
    with pytest.raises(PayloadTooLarge):
        frames.decode_client_frame(text, 1000)


def test_client_event_with_lone_surrogate_is_rejected() -> None:
    # A lone surrogate could not be UTF-8 encoded when relayed, so decoding refuses it.
    text = '{"event":"client-typing","channel":"private-a","data":{"text":"\\ud800"}}'
    with pytest.raises(InvalidFrame, match="frame contains a lone UTF-16 surrogate escape"):
        frames.decode_client_frame(text, 1000)


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_decode_arbitrary_input_only_raises_protocol_errors(text: str | bytes) -> None:
    try:
        frame = frames.decode_client_frame(text, 200)
    except ProtocolError:
        return
    assert isinstance(frame, frames.ClientFrame)
    assert isinstance(frame.event, str)
    assert frame.event
    assert frame.channel is None or isinstance(frame.channel, str)


@PROPERTY
@given(json_values | st.dictionaries(st.sampled_from(["event", "channel", "data", "x"]), json_values))
def test_decode_arbitrary_json_only_raises_protocol_errors(value: Any) -> None:
    text = json.dumps(value)
    try:
        frame = frames.decode_client_frame(text, BIG)
    except InvalidFrame:
        return
    assert isinstance(value, dict)
    assert frame == frames.ClientFrame(event=value["event"], data=value.get("data"), channel=value.get("channel"))


@pytest.mark.parametrize(("data", "expected"), [(None, {}), ("", {}), ({"channel": "c"}, {"channel": "c"})])
def test_data_object_accepts_object_or_empty(data: object, expected: dict[str, object]) -> None:
    assert frames.data_object(frames.ClientFrame(event="pusher:ping", data=data, channel=None)) == expected


@pytest.mark.parametrize("data", ["{}", "x", 0, [], ["a"], True])
def test_data_object_rejects_other_types(data: object) -> None:
    with pytest.raises(InvalidFrame, match="pusher:subscribe data must be a JSON object"):
        frames.data_object(frames.ClientFrame(event="pusher:subscribe", data=data, channel=None))


def test_client_event_data() -> None:
    assert frames.client_event_data('{"a": 1}') == '{"a": 1}'
    assert frames.client_event_data({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert frames.client_event_data(None) == "null"


_JSONISH = st.text(alphabet=' \t\n\r\x0b\ufeff{}[]":,0123456789.-+eEtruefalsnNIiy\\ab', max_size=40)


_NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1E+309", "1" * 310 + ".5", "1e-400"])


@PROPERTY
@given(
    st.one_of(
        _JSONISH,
        st.builds(lambda value, before, after: before + json.dumps(value) + after, json_values, _JSONISH, _JSONISH),
        st.builds(lambda number, before, after: f"{before}[{number}]{after}", _NON_FINITE, _JSONISH, _JSONISH),
    )
)
def test_loads_accepts_exactly_what_json_loads_accepts(text: str) -> None:
    """loads calls json's C scanner directly; what it accepts and what it returns are json.loads' own, except
    numbers RFC 8259 has no room for: NaN, Infinity and -Infinity (which json.loads takes) and numbers too large for
    a double (which json.loads turns into infinity), all of which json.dumps would write back as ``NaN`` or
    ``Infinity``, text a browser's JSON.parse refuses."""
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(InvalidFrame, match="not valid JSON"):
            frames.loads(text)
        return
    try:
        json.dumps(expected, allow_nan=False)
    except ValueError:
        with pytest.raises(InvalidFrame, match="is not a finite number"):
            frames.loads(text)
        return
    if "\\u" not in text:  # lone surrogate escapes are refused on purpose (test above)
        assert frames.loads(text) == expected


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ('{"v":NaN}', "NaN"),
        ("[Infinity]", "Infinity"),
        ('{"a":[1,-Infinity]}', "-Infinity"),
        ("[1e400]", "1e400"),
        ("[-1.5E+309]", "-1.5E+309"),
        ("[" + "9" * 400 + ".0]", "9999999999"),  # no exponent, still beyond a double
    ],
)
def test_loads_refuses_numbers_json_has_no_room_for(text: str, number: str) -> None:
    """Python's json takes NaN and Infinity and reads 1e400 as infinity, and would write them back as NaN/Infinity:
    a browser's JSON.parse then throws on the whole frame (every other message in it lost to every subscriber)."""
    with pytest.raises(
        InvalidFrame, match=rf"frame is not valid JSON: {re.escape(number)}.* is not a finite number"
    ) as info:
        frames.loads(text)
    assert info.value.http_status == 400
    with pytest.raises(InvalidFrame, match="is not a finite number"):
        frames.decode_client_frame('{"event":"client-x","channel":"private-a","data":' + text + "}", BIG)


def test_loads_keeps_finite_floats_and_big_integers() -> None:
    """Only non-finite results are refused: a float that underflows to 0.0 is a number, and an integer of any
    length stays an exact int (the scanner never makes it a float)."""
    assert frames.loads("[1.5, -2e10, 1e-400, 1.7976931348623157e308]") == [1.5, -2e10, 0.0, 1.7976931348623157e308]
    assert frames.loads("[" + "1" * 400 + "]") == [int("1" * 400)]


def test_loads_never_raises_recursion_error_near_the_depth_limit() -> None:
    """A document the scanner reads just under its depth limit may be a level too deep to write back, which loads
    does when it holds a surrogate escape (to refuse a lone one): that is InvalidFrame too, never a RecursionError
    escaping to a caller that handles protocol errors only (at some depth for any stack the test runs on)."""
    for depth in range(800, 1100):
        document = "[" * depth + '"\\ud800"' + "]" * depth
        with pytest.raises(InvalidFrame, match=r"too deeply|lone UTF-16 surrogate"):
            frames.loads(document)


@pytest.mark.parametrize(("data", "value"), [(" 42", 42), ('\t\n\r{"a": 1}\n', {"a": 1})])
def test_strict_json_reads_a_document_with_jsons_whitespace_around_it(data: str, value: object) -> None:
    assert frames.strict_json(data) == value
    assert frames.looks_like_json(data)


@pytest.mark.parametrize("data", ["\xa042", "42\u2028", "\u3000[]"])
def test_strict_json_takes_other_whitespace_for_text(data: str) -> None:
    """Ably subscribers are sent data as JSON exactly when pusher-js's ``JSON.parse`` would read it: a no-break space
    or a line separator around the document makes it text to a browser, so it stays text."""
    assert frames.strict_json(data) is frames.NOT_JSON
    assert not frames.looks_like_json(data)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("", "it is empty"),
        (" \r\n", "it is empty"),
        ('\ufeff{"event":"x"}', "it starts with a byte order mark (U+FEFF)"),
        ('\ufeff{"event":"x"}'.encode(), "it starts with a byte order mark (U+FEFF)"),
        (b"\x1f\x8b\x08\x00", "it is not UTF-8 text"),  # a gzip header
        ('{"event":"x"}'.encode("utf-16"), "it is not UTF-8 text"),
        (b'{"event":"caf\xe9"}', "it is not UTF-8 text"),  # Latin-1
    ],
)
def test_json_that_is_not_json_for_a_reason_a_sender_can_fix_says_the_reason(text: str | bytes, cause: str) -> None:
    """An empty body, a byte order mark, gzip or another encoding all said only 'is not valid JSON'."""
    with pytest.raises(InvalidFrame) as raised:
        frames.loads(text, "the request body")
    assert str(raised.value) == f"the request body is not valid JSON: {cause}"
