"""Socket ids: ``{node}.{counter}``, unique across a cluster when every node has its own number."""

from __future__ import annotations

import re

from relay.errors import InvalidSocketId, json_kind

_SOCKET_ID = re.compile(r"\A[0-9]{1,20}\.[0-9]{1,20}\Z")


def is_valid_socket_id(value: str) -> bool:
    return _SOCKET_ID.match(value) is not None


def validate_socket_id(value: object) -> str:
    if not isinstance(value, str):  # by its kind: a list's repr may be as long and as deep as the JSON it came in
        raise InvalidSocketId(
            f"invalid socket_id ({json_kind(value)}): expected digits '.' digits, such as '1234.5678'"
        )
    if not is_valid_socket_id(value):
        raise InvalidSocketId(f"invalid socket_id {value!r:.80}: expected digits '.' digits, such as '1234.5678'")
    return value


def make_socket_id(node: int, counter: int) -> str:
    """The id of a node's ``counter``-th connection; ``node`` must be unique in the cluster."""
    if node < 0 or counter < 0:
        raise ValueError("node and counter must be non-negative")
    return f"{node}.{counter}"
