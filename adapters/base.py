"""What every provider adapter offers: operations turned into HTTP request values, and responses parsed back.

Adapters never do I/O. A :class:`Call` pairs the request to send (or ``None`` for in-process providers) with the
function that turns the response into a result, so the sync and async clients share every line except the send.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from relay.errors import UnsupportedCapability
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent
from relay.payload import Payload

T = TypeVar("T")


class Capability(enum.Enum):
    PUBLISH = "publish"
    BATCH = "publish_batch"
    CHANNEL_INFO = "channel"
    CHANNEL_LIST = "channels"
    PRESENCE = "presence_members"
    SEND_TO_USER = "send_to_user"
    TERMINATE_USER = "terminate_user_connections"
    CHANNEL_AUTH = "authorize_channel"
    USER_AUTH = "authenticate_user"
    WEBHOOKS = "verify_webhook"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    idempotent: bool = False


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""  # the URL that answered, for links relative to it


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    request: HttpRequest | None
    parse: Callable[[HttpResponse | None], T]
    # A paginated answer: ``next_page`` gives the request for the page after a response (None after the last), and
    # ``join`` adds a page's parsed result to what the pages before it gave.
    next_page: Callable[[HttpResponse], HttpRequest | None] | None = None
    join: Callable[[T, T], T] | None = None

    def pages(self, response: HttpResponse | None) -> tuple[T, HttpRequest | None]:
        """The result ``response`` gives, and the request for the next page, if there is one to follow."""
        follow = None if self.next_page is None or response is None else self.next_page(response)
        return self.parse(response), follow

    def joined(self, result: T, page: T) -> T:
        assert self.join is not None  # only a call with next_page has pages to join
        return self.join(result, page)


class Adapter(Protocol):
    scheme: str
    name: str
    capabilities: frozenset[Capability]
    # What to do instead of an operation the provider lacks: said by the adapter's methods and the client's check alike
    unsupported_hints: Mapping[Capability, str]
    max_channels_per_publish: int
    max_batch_events: int

    def publish(
        self, channels: Sequence[str], event: str, payload: Payload, socket_id: str | None
    ) -> Call[PublishResult]: ...

    def publish_batch(self, events: Sequence[tuple[Event, Payload]]) -> Call[PublishResult]: ...

    def channel(self, name: str) -> Call[ChannelInfo]: ...

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]: ...

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]: ...

    def send_to_user(self, user_id: str, event: str, payload: Payload) -> Call[None]: ...

    def terminate_user_connections(self, user_id: str) -> Call[None]: ...

    def authorize_channel(self, socket_id: str, channel: str, user: User | None) -> dict[str, Any]: ...

    def authenticate_user(self, socket_id: str, user: User) -> dict[str, Any]: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookEvent]: ...

    def error_for(self, response: HttpResponse) -> Exception: ...

    def check_channel(self, name: object) -> str: ...

    def check_socket_id(self, socket_id: object) -> str: ...


def unsupported(adapter: Adapter, capability: Capability) -> UnsupportedCapability:
    """The error for ``capability``, which ``adapter`` lacks, with the adapter's hint."""
    return UnsupportedCapability(adapter.name, capability.value, hint=adapter.unsupported_hints.get(capability, ""))
