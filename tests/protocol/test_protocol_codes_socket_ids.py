"""Error/close codes and socket ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidSocketId
from relay.protocol import codes, socket_ids
from relay.protocol.codes import ErrorCode, Reconnect

PROPERTY = settings(max_examples=150, deadline=None)


@pytest.mark.parametrize(
    ("code", "strategy"),
    [
        (4000, Reconnect.NEVER),
        (4001, Reconnect.NEVER),
        (4009, Reconnect.NEVER),
        (4099, Reconnect.NEVER),
        (4100, Reconnect.BACKOFF),
        (4199, Reconnect.BACKOFF),
        (4200, Reconnect.IMMEDIATELY),
        (4201, Reconnect.IMMEDIATELY),
        (4299, Reconnect.IMMEDIATELY),
        (4300, Reconnect.STAYS_OPEN),
        (4301, Reconnect.STAYS_OPEN),
        (4399, Reconnect.STAYS_OPEN),
    ],
)
def test_reconnect_strategy_ranges(code: int, strategy: Reconnect) -> None:
    assert codes.reconnect_strategy(code) is strategy


@pytest.mark.parametrize("code", [0, 1000, 1006, 3999, 4400, 4999, -4001])
def test_reconnect_strategy_rejects_other_codes(code: int) -> None:
    with pytest.raises(ValueError, match="not a Pusher error code"):
        codes.reconnect_strategy(code)


def test_named_codes() -> None:
    closing = {code for code in ErrorCode if codes.reconnect_strategy(code) is not Reconnect.STAYS_OPEN}
    assert closing == set(ErrorCode) - {ErrorCode.CLIENT_EVENT_REJECTED, ErrorCode.WATCHLIST_LIMIT}
    assert codes.reconnect_strategy(ErrorCode.OVER_CAPACITY) is Reconnect.BACKOFF
    assert codes.reconnect_strategy(ErrorCode.PONG_NOT_RECEIVED) is Reconnect.IMMEDIATELY
    assert codes.reconnect_strategy(ErrorCode.UNAUTHORIZED) is Reconnect.NEVER
    assert (ErrorCode.APP_NOT_FOUND, ErrorCode.UNAUTHORIZED, ErrorCode.WATCHLIST_LIMIT) == (4001, 4009, 4302)


@PROPERTY
@given(st.integers(4000, 4399))
def test_only_43xx_stays_open(code: int) -> None:
    assert (codes.reconnect_strategy(code) is Reconnect.STAYS_OPEN) is (code >= 4300)


@pytest.mark.parametrize("value", ["1234.1234", "0.0", "1.2", "123456789.987654321", "1" * 20 + "." + "2" * 20])
def test_valid_socket_ids(value: str) -> None:
    assert socket_ids.is_valid_socket_id(value)
    assert socket_ids.validate_socket_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1234",
        "1234.",
        ".1234",
        "1234.1234.1",
        "a.1",
        "1.a",
        "1 .1",
        " 1.1",
        "1.1 ",
        "1.1\n",
        "-1.1",
        "+1.1",
        "1,1",
        "1.1e3",
        "1" * 21 + ".1",
    ],
)
def test_invalid_socket_ids(value: str) -> None:
    assert not socket_ids.is_valid_socket_id(value)
    with pytest.raises(InvalidSocketId, match=r"digits '\.' digits") as info:
        socket_ids.validate_socket_id(value)
    assert info.value.http_status == 400


@pytest.mark.parametrize("value", [None, 1.5, 12, b"1.1"])
def test_socket_id_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidSocketId):
        socket_ids.validate_socket_id(value)


@pytest.mark.parametrize("value", ["١٢٣.٤٥٦", "１.２", "1.٣"])
def test_socket_id_digits_are_ascii(value: str) -> None:
    assert not socket_ids.is_valid_socket_id(value)


@PROPERTY
@given(node=st.integers(0, 10**20 - 1), counter=st.integers(0, 10**20 - 1))
def test_make_socket_id_is_valid_and_unique(node: int, counter: int) -> None:
    socket_id = socket_ids.make_socket_id(node, counter)
    assert socket_id == f"{node}.{counter}"
    assert socket_ids.validate_socket_id(socket_id) == socket_id
    assert socket_ids.make_socket_id(node, counter + 1) != socket_id
    assert socket_ids.make_socket_id(node + 1, counter) != socket_id


@pytest.mark.parametrize(("node", "counter"), [(-1, 0), (0, -1)])
def test_make_socket_id_rejects_negative(node: int, counter: int) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        socket_ids.make_socket_id(node, counter)
