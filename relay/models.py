"""The values Relay's API takes and returns, the same for every provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import isfinite
from typing import Any

from relay.errors import InvalidData, ProtocolError
from relay.payload import json_text
from relay.protocol.frames import refuse_lone_surrogates


def integer_id_as_digits(user_id: object) -> object:
    """``user_id``, an int (a database's integer primary key, Django's ``user.pk``) taken as its digits, anything else
    as it is, for the caller to refuse: kept an int, Pusher's channel_data would carry a number where its clients and
    sign-in expect a string. A bool is no id, though Python counts it an int."""
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return str(user_id)
    return user_id


@dataclass(frozen=True, slots=True)
class User:
    """An end user, as channel rules and presence see them. ``watchlist``: the ids of the users whose online status
    Pusher tells this user's browser once signed in (``pusher.user.watchlist``), at most 100, each kept once.
    ``signed_in_until``: when the user's sign-in ends, in seconds since the epoch (a JWT's ``exp``): an Ably token for
    the user ends then at the latest, not an hour after it is issued (Pusher's channel authorizations have no end to
    set)."""

    id: str
    info: Mapping[str, Any] = field(default_factory=dict)
    watchlist: tuple[str, ...] = ()
    signed_in_until: float | None = None

    def __post_init__(self) -> None:
        user_id = integer_id_as_digits(self.id)  # as the mapping form's is
        if not isinstance(user_id, str):
            raise ProtocolError(f"a user id is a str (or an int, taken as its digits), not {type(user_id).__name__}")
        if not user_id:
            raise ProtocolError("a user needs an id: User('') has an empty one")
        object.__setattr__(self, "id", user_id)
        watchlist: object = self.watchlist
        # A str would be read as a list of one-character ids
        if not isinstance(watchlist, list | tuple) or not all(isinstance(watched, str) for watched in watchlist):
            raise ProtocolError(f"a user's watchlist is a list of user id strings, not {watchlist!r}")
        # Kept as the tuple it is typed as, each id once: an id listed twice is one user watched, as Pusher's server
        # counts its 100
        object.__setattr__(self, "watchlist", tuple(dict.fromkeys(watchlist)))
        until = self.signed_in_until
        if until is not None and (isinstance(until, bool) or not isinstance(until, int | float) or not isfinite(until)):
            raise ProtocolError(f"a user's signed_in_until is seconds since the epoch (a JWT's exp), not {until!r}")
        # Sent as JSON, in UTF-8, by every provider: what cannot be is refused here, not mid-auth
        refuse_lone_surrogates(self.id, "a user id", ProtocolError)
        for watched in self.watchlist:
            refuse_lone_surrogates(watched, "a user's watchlist", ProtocolError)
        refuse_lone_surrogates(json_text(dict(self.info), "a user's info"), "a user's info", InvalidData)

    @classmethod
    def coerce(cls, user: User | Mapping[str, Any] | str | int) -> User:
        """``user`` as a :class:`User`: an id (an int is taken as its digits), or a mapping with ``id`` (or
        ``user_id``), maybe ``info`` (or ``user_info``) and ``watchlist``, as pusher-http-python's ``user_data``."""
        if isinstance(user, User):
            return user
        user_id = integer_id_as_digits(user)  # an integer key, as User(5) and {"id": 5} take it
        if isinstance(user_id, str):
            return cls(user_id)
        if not isinstance(user, Mapping):
            raise ProtocolError(f"a user is a User, a mapping or an id (a str or an int), not {type(user).__name__}")
        user_id = user.get("id", user.get("user_id"))
        if user_id is None or user_id == "":
            raise ProtocolError("a user needs an id: the mapping's 'id' (or 'user_id') is missing or empty")
        info = user.get("info", user.get("user_info")) or {}
        if not isinstance(info, Mapping):
            raise ProtocolError(f"a user's info is a mapping, not {type(info).__name__}")
        return cls(user_id, info, user.get("watchlist") or ())  # its id a str or an int, as User(…) takes it


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a batch publish."""

    channel: str
    name: str
    data: Any
    socket_id: str | None = None

    def __post_init__(self) -> None:
        if self.socket_id == "":  # no socket id, as publish() reads one (a missing X-Socket-Id header passed on)
            object.__setattr__(self, "socket_id", None)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish delivered to. ``replayed``: the result of an earlier publish with the same idempotency key,
    given again without sending anything."""

    channels: tuple[str, ...]
    message_ids: tuple[str, ...] = ()
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    name: str
    occupied: bool
    subscription_count: int | None = None
    user_count: int | None = None


@dataclass(frozen=True, slots=True)
class PresenceMember:
    user_id: str
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A provider webhook event, normalised.

    ``kind`` is one of ``channel_occupied``, ``channel_vacated``, ``member_added``, ``member_removed``,
    ``client_event``, ``message``, ``cache_miss``, ``subscription_count``.

    ``encoding`` is None when ``data`` is decoded. Otherwise it names, in Ably's notation, the steps of an Ably
    message's encoding still on ``data``: a step relay cannot undo (``cipher+aes-128-cbc``, without the channel's key)
    and those before it, or all of them from a step ``data`` did not follow (base64 that is not).
    """

    kind: str
    channel: str
    time_ms: int
    user_id: str | None = None
    event: str | None = None
    data: Any = None
    socket_id: str | None = None
    subscription_count: int | None = None
    encoding: str | None = None
