"""Found by generated input: a name or socket id that is not a string is refused without its value in the error. The
error showed ``repr`` of whatever the body held, so a list nested as deep as the JSON parser reads raised RecursionError
(a 500, or a dropped connection) when checked a few calls deeper than it was parsed, and a large object came back
whole in the message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import InvalidChannelName, InvalidEventName, InvalidSocketId, ProtocolError
from relay.protocol.channels import validate_channel_name, validate_event_name
from relay.protocol.frames import InvalidFrame, loads
from relay.protocol.socket_ids import validate_socket_id

VALIDATORS: list[tuple[Callable[[object], str], type[ProtocolError], str]] = [
    (validate_channel_name, InvalidChannelName, "channel name must be a non-empty string, got a list"),
    (validate_event_name, InvalidEventName, "event name must be a non-empty string, got a list"),
    (validate_socket_id, InvalidSocketId, "invalid socket_id (a list): expected digits '.' digits"),
]


def deepest_parsed_list() -> object:
    """The most deeply nested list :func:`loads` reads from here."""
    depth = 1100
    while True:
        try:
            return loads("[" * depth + "]" * depth, "body")
        except InvalidFrame:
            depth -= 10


def called_deeper(frames: int, call: Callable[[], object]) -> object:
    return call() if frames == 0 else called_deeper(frames - 1, call)


@pytest.mark.parametrize(("validate", "error", "message"), VALIDATORS, ids=["channel", "event", "socket_id"])
def test_a_list_nested_as_deep_as_parsed_is_refused_by_kind(
    validate: Callable[[object], str], error: type[ProtocolError], message: str
) -> None:
    value = deepest_parsed_list()
    with pytest.raises(error) as raised:
        called_deeper(40, lambda: validate(value))  # a server's handler runs some calls below its parser
    assert str(raised.value).startswith(message)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=30,
    )
)
def test_a_value_that_is_not_a_string_is_not_shown(value: object) -> None:
    for validate, error, _ in VALIDATORS:
        with pytest.raises(error) as raised:
            validate(value)
        assert len(str(raised.value)) < 120, str(raised.value)


def test_a_long_socket_id_string_is_shown_cut() -> None:
    """A socket id is checked before any length limit: a 1 MB string came back whole in the emulator's 400 (and its
    log line); the message shows its first 80 characters, as an Ably channel name's is shown."""
    with pytest.raises(InvalidSocketId) as raised:
        validate_socket_id("1." + "x" * 1_000_000)
    assert (
        str(raised.value)
        == f"invalid socket_id {'1.' + 'x' * 77!r:.80}: expected digits '.' digits, such as '1234.5678'"
    )
