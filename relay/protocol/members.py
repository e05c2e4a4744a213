"""Presence members and signed-in users: parsing and checking the JSON strings clients send."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.errors import InvalidFrame, LimitExceeded, PayloadTooLarge
from relay.protocol.channels import DEFAULT_LIMITS, Limits
from relay.protocol.frames import dumps_parsed, loads, utf8_length


@dataclass(frozen=True, slots=True)
class Member:
    """A presence member; ``user_info_json`` is kept encoded so it is serialised once per join."""

    user_id: str
    user_info_json: str


@dataclass(frozen=True, slots=True)
class SignedInUser:
    user_id: str
    user_info_json: str
    watchlist: tuple[str, ...]


def _load_object(text: object, what: str) -> dict[str, object]:
    if not isinstance(text, str):
        raise InvalidFrame(f"{what} must be a JSON-encoded string")
    value = loads(text, what)
    if not isinstance(value, dict):
        raise InvalidFrame(f"{what} must encode a JSON object")
    return value


def _user_id(value: object, what: str, limits: Limits) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidFrame(f"{what} must be a string or an integer")
    user_id = str(value)
    if not user_id:
        raise InvalidFrame(f"{what} must not be empty")
    if len(user_id) > limits.max_user_id_length:
        raise LimitExceeded(f"{what} is {len(user_id)} characters long; the limit is {limits.max_user_id_length}")
    return user_id


def _info_json(value: object, what: str, limits: Limits) -> str:
    encoded = dumps_parsed(value if value is not None else {}, what)
    size = utf8_length(encoded)
    if size > limits.max_user_info_bytes:
        raise PayloadTooLarge(f"{what} is {size} bytes; the limit is {limits.max_user_info_bytes}")
    return encoded


def parse_channel_data(channel_data: object, limits: Limits = DEFAULT_LIMITS) -> Member:
    """The member a presence subscription's ``channel_data`` describes: ``{"user_id":…, "user_info":…}``."""
    data = _load_object(channel_data, "channel_data")
    if "user_id" not in data:
        raise InvalidFrame("channel_data must contain user_id")
    return Member(
        user_id=_user_id(data["user_id"], "user_id", limits),
        user_info_json=_info_json(data.get("user_info"), "user_info", limits),
    )


def watchlist_problem(watchlist: Sequence[str], limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why a watchlist's ids cannot all be user ids (the first one that cannot), or None. An empty id or one past
    the longest user id names no user who could sign in: the watcher would be told of no one, and nothing said why."""
    for index, user_id in enumerate(watchlist):
        if not user_id:
            return f"item {index} is empty: a user id has at least one character"
        if len(user_id) > limits.max_user_id_length:
            return f"item {index} is {len(user_id)} characters long; a user id is at most {limits.max_user_id_length}"
    return None


def parse_user_data(user_data: object, limits: Limits = DEFAULT_LIMITS) -> tuple[SignedInUser, bool]:
    """The user a sign-in's ``user_data`` describes, and whether its watchlist was cut to the limit."""
    data = _load_object(user_data, "user_data")
    user_id = data.get("id")
    if not isinstance(user_id, str) or not user_id:
        raise InvalidFrame("user_data must contain a non-empty string id")
    watchlist = data.get("watchlist", [])
    if not isinstance(watchlist, list) or not all(isinstance(item, str) for item in watchlist):
        raise InvalidFrame("user_data watchlist must be a list of user id strings")
    problem = watchlist_problem(watchlist, limits)
    if problem is not None:
        raise InvalidFrame(f"user_data watchlist {problem}")
    watchlist = list(dict.fromkeys(watchlist))  # pusher-js fires its online callback once per report
    truncated = len(watchlist) > limits.max_watchlist
    if len(user_id) > limits.max_user_id_length:  # as a presence member's; its #server-to-user- channel then fits
        raise LimitExceeded(f"user_data id is {len(user_id)} characters long; the limit is {limits.max_user_id_length}")
    user = SignedInUser(
        user_id=user_id,
        user_info_json=_info_json(data.get("user_info"), "user_info", limits),
        watchlist=tuple(watchlist[: limits.max_watchlist]),
    )
    return user, truncated
