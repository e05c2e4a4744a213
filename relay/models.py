"""The values Relay's API takes and returns, the same for every provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    """An end user, as channel rules and presence see them."""

    id: str
    info: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, user: User | Mapping[str, Any] | str) -> User:
        if isinstance(user, User):
            return user
        if isinstance(user, str):
            return cls(user)
        user_id = user.get("id", user.get("user_id"))
        if user_id is None or str(user_id) == "":
            raise ValueError("a user needs an id")
        info = user.get("info", user.get("user_info")) or {}
        return cls(str(user_id), info)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a batch publish."""

    channel: str
    name: str
    data: Any
    socket_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    channels: tuple[str, ...]
    message_ids: tuple[str, ...] = ()


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
    """

    kind: str
    channel: str
    time_ms: int
    user_id: str | None = None
    event: str | None = None
    data: Any = None
    socket_id: str | None = None
    subscription_count: int | None = None
