"""Channel and event names: their kinds, the characters and lengths allowed, and the protocol's limits."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from relay.errors import InvalidChannelName, InvalidEventName, json_kind

SERVER_TO_USER_PREFIX = "#server-to-user-"
CLIENT_EVENT_PREFIX = "client-"
# Hosted Pusher refuses event names starting with "pusher" (pusher:…, pusher_internal:…, pusher-…) with 400 and this
# text (pusher/pusher-http-ruby#142): clients would take such events for the protocol's own.
RESERVED_EVENT_PREFIX = "pusher"
RESERVED_EVENT_NAME = "The 'pusher' namespace is reserved for internal usage"


class ChannelKind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    PRESENCE = "presence"
    ENCRYPTED = "private-encrypted"
    SERVER_TO_USER = "server-to-user"

    @property
    def needs_auth(self) -> bool:
        return self in (ChannelKind.PRIVATE, ChannelKind.PRESENCE, ChannelKind.ENCRYPTED)

    @property
    def allows_client_events(self) -> bool:
        return self in (ChannelKind.PRIVATE, ChannelKind.PRESENCE, ChannelKind.ENCRYPTED)


# Longest prefix first: "private-encrypted-" must win over "private-".
_PREFIXES = (
    ("presence-", ChannelKind.PRESENCE),
    ("private-encrypted-", ChannelKind.ENCRYPTED),
    ("private-", ChannelKind.PRIVATE),
    (SERVER_TO_USER_PREFIX, ChannelKind.SERVER_TO_USER),
)
_CACHE_PREFIXES = ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")
_CHARS = r"[A-Za-z0-9_\-=@,.;]+"
_NAME_CHARS = re.compile(rf"\A{_CHARS}\Z")
# What validate_channel_name takes, lengths aside, as one match: a #server-to-user- channel's user id has the same
# characters. None of them needs escaping in JSON, so a listing can write such names as they are.
_VALID_NAME = re.compile(rf"\A(?:{re.escape(SERVER_TO_USER_PREFIX)})?{_CHARS}\Z")


def classify(name: str) -> ChannelKind:
    return next((kind for prefix, kind in _PREFIXES if name.startswith(prefix)), ChannelKind.PUBLIC)


def is_cache_channel(name: str) -> bool:
    return name.startswith(_CACHE_PREFIXES)


@dataclass(frozen=True, slots=True)
class Limits:
    """The protocol's limits; an emulator app may configure its own."""

    max_channel_name: int = 200
    max_event_name: int = 200
    max_event_bytes: int = 10_240
    max_channels_per_event: int = 100
    max_batch_events: int = 10
    max_presence_members: int = 100
    max_user_info_bytes: int = 1_024
    max_user_id_length: int = 128
    client_events_per_second: int = 10
    max_watchlist: int = 100
    max_subscriptions_per_connection: int = 1_000
    inbound_frames_per_second: int = 100
    inbound_frame_burst: int = 1_000


DEFAULT_LIMITS = Limits()
# Hosted Pusher refuses a subscription to a channel whose name, prefix included, is over 164 characters (its support
# article "What does the error 'Invalid channel name' mean?"); its HTTP libraries, soketi and the emulator allow 200.
HOSTED_PUSHER_LIMITS = Limits(max_channel_name=164)


def validate_channel_name(name: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """Return ``name`` if it is a channel a client may subscribe to or an API may publish to."""
    if not isinstance(name, str) or not name:
        raise InvalidChannelName(f"channel name must be a non-empty string, got {_shown(name)}")
    if len(name) > limits.max_channel_name:
        raise InvalidChannelName(f"channel name is {len(name)} characters long; the limit is {limits.max_channel_name}")
    if name.startswith(SERVER_TO_USER_PREFIX):
        user_id = name[len(SERVER_TO_USER_PREFIX) :]
        if not user_id or not _NAME_CHARS.match(user_id):
            raise InvalidChannelName(f"invalid server-to-user channel {name!r}")
        return name
    if not _NAME_CHARS.match(name):
        raise InvalidChannelName(
            f"channel name {name!r} has characters outside A-Z a-z 0-9 _ - = @ , . ; "
            "('#' is reserved for #server-to-user-{id})"
        )
    return name


def _shown(name: object) -> str:
    """A name that is not a non-empty string, as an error shows it: by its kind, not its ``repr``, which was as long
    as the JSON it came in and raised RecursionError for a list nested as deep as the parser reads."""
    return repr(name) if name == "" else json_kind(name)


def is_valid_channel_name(name: str, limits: Limits = DEFAULT_LIMITS) -> bool:
    """Whether :func:`validate_channel_name` takes ``name``, without building its error: the channel listing asks
    this of every occupied channel."""
    return len(name) <= limits.max_channel_name and _VALID_NAME.match(name) is not None


def validate_event_name(name: object, limits: Limits = DEFAULT_LIMITS) -> str:
    """Any characters are allowed (Laravel sends ``App\\Events\\X``); presence, length and the reserved ``pusher``
    prefix are checked."""
    if not isinstance(name, str) or not name:
        raise InvalidEventName(f"event name must be a non-empty string, got {_shown(name)}")
    if len(name) > limits.max_event_name:
        raise InvalidEventName(f"event name is {len(name)} characters long; the limit is {limits.max_event_name}")
    if name.startswith(RESERVED_EVENT_PREFIX):
        raise InvalidEventName(f"{RESERVED_EVENT_NAME}: event names cannot start with 'pusher' (got {name[:50]!r})")
    return name


def server_to_user_channel(user_id: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """The user's ``#server-to-user-{id}`` channel; an id no such channel can carry is refused here, before a
    request, in the terms of a user id."""
    try:
        return validate_channel_name(SERVER_TO_USER_PREFIX + user_id, limits)
    except InvalidChannelName:
        longest = limits.max_channel_name - len(SERVER_TO_USER_PREFIX)
        raise InvalidChannelName(
            f"user id {user_id[:50]!r} cannot be used: it goes in the channel #server-to-user-{{id}}, so it is 1 to "
            f"{longest} of A-Z a-z 0-9 _ - = @ , . ;"
        ) from None


def is_client_event(name: str) -> bool:
    return name.startswith(CLIENT_EVENT_PREFIX)
