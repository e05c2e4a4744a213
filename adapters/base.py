"""What every provider adapter offers: operations turned into HTTP request values, and responses parsed back.

Adapters never do I/O. A :class:`Call` pairs the request to send (or ``None`` for in-process providers) with the
function that turns the response into a result, so the sync and async clients share every line except the send.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import quote

from relay.config import ProviderConfig
from relay.errors import InvalidFrame, ProtocolError, RelayError, StaleTimestamp, UnsupportedCapability, json_kind
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent, integer_id_as_digits
from relay.payload import Payload
from relay.protocol.frames import loads

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
    CHANNELS_TOKEN = "authorize_channels"
    USER_AUTH = "authenticate_user"
    WEBHOOKS = "verify_webhook"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    idempotent: bool = False
    # The same request signed anew, which a retry sends: a signature's timestamp ages (Pusher refuses one over 600 s
    # old), and waits between attempts may add up to more
    signed_again: Callable[[], HttpRequest] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""  # the URL that answered, for links relative to it


# How often a paginated call starts again from its first page when its pages went stale
MAX_RESTARTS = 2


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    request: HttpRequest | None
    parse: Callable[[HttpResponse | None], T]
    # A paginated answer: ``next_page`` gives the request for the page after a response (None after the last), and
    # ``join`` adds a page's parsed result to what the pages before it gave.
    next_page: Callable[[HttpResponse], HttpRequest | None] | None = None
    join: Callable[[T, T], T] | None = None
    # What to ask instead when the provider refuses ``request`` with ``error`` for a part it can do without (hosted
    # Pusher's subscription count, off by default in the app's settings; an Ably connectionKey Ably calls invalid):
    # the request whose response ``parse`` reads, or None to raise.
    instead: Callable[[RelayError], HttpRequest | None] | None = None
    # Whether a later page's ``error`` says the pagination went stale (Ably's channel enumeration, 40011): the pages are
    # then asked for again from the first, at most MAX_RESTARTS times.
    restarts: Callable[[RelayError], bool] | None = None

    def pages(self, response: HttpResponse | None) -> tuple[T, HttpRequest | None]:
        """The result ``response`` gives, and the request for the next page, if there is one to follow."""
        follow = None if self.next_page is None or response is None else self.next_page(response)
        return self.parse(response), follow

    def joined(self, result: T, page: T) -> T:
        assert self.join is not None  # only a call with next_page has pages to join
        return self.join(result, page)

    def restarts_after(self, error: RelayError) -> bool:
        return self.restarts is not None and self.restarts(error)

    def request_instead(self, error: RelayError) -> HttpRequest | None:
        """The request to send after ``request`` failed with ``error``, if the call has one for that error."""
        return None if self.instead is None else self.instead(error)


class Adapter(Protocol):
    scheme: str
    name: str
    capabilities: frozenset[Capability]
    # What to do instead of an operation the provider lacks: said by the adapter's methods and the client's check alike
    unsupported_hints: Mapping[Capability, str]
    max_channels_per_publish: int
    max_batch_events: int
    # The headers (lowercase) that say a webhook claims to come from this provider
    webhook_headers: frozenset[str]

    def check_publish_channels(self, channels: Sequence[str]) -> None:
        """What the provider refuses of a publish's channels taken together (an encrypted channel among others), for
        all of them before they are split into calls of ``max_channels_per_publish``: ``publish`` checks only the
        channels of its own call."""
        ...

    def publish(
        self,
        channels: Sequence[str],
        event: str,
        payload: Payload,
        socket_id: str | None,
        idempotency_key: str | None = None,
    ) -> Call[PublishResult]:
        """``idempotency_key``: the publish's, which a provider that dedupes resends (Ably) makes its message ids
        of; the others have none to send (the client remembers the key for them)."""
        ...

    def batch_parts(self, events: Sequence[tuple[Event, Payload]]) -> list[Sequence[tuple[Event, Payload]]]:
        """``events`` in the calls ``publish_batch`` is given them in: the provider's events per call, within its
        request size."""
        ...

    def publish_batch(
        self, events: Sequence[tuple[Event, Payload]], idempotency_key: str | None = None, first: int = 0
    ) -> Call[PublishResult]:
        """``idempotency_key`` as ``publish``'s; ``first``: the index in the whole batch of ``events[0]`` (one of
        ``batch_parts``), so that every event of a keyed batch gets its own message id."""
        ...

    def channel(self, name: str) -> Call[ChannelInfo]: ...

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]: ...

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]: ...

    def send_to_user(self, user_id: str | int, event: str, payload: Payload) -> Call[None]: ...

    def terminate_user_connections(self, user_id: str | int) -> Call[None]: ...

    def authorize_channel(self, socket_id: str, channel: str, user: User | None) -> dict[str, Any]: ...

    def authorize_channels(self, channels: Sequence[str], user: User | None) -> dict[str, Any]: ...

    def authenticate_user(self, socket_id: str, user: User) -> dict[str, Any]: ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes | str) -> list[WebhookEvent]: ...

    def error_for(self, response: HttpResponse) -> Exception: ...

    def check_channel(self, name: object) -> str: ...

    def check_socket_id(self, socket_id: object) -> str: ...


# URL parsers (httpx's among them) resolve "." and ".." segments away (RFC 3986 §5.2.4): a channel named ".." would
# reach the channel list. Percent-encoded, they are names like any other.
_DOT_SEGMENTS = {".": "%2E", "..": "%2E%2E"}


def path_segment(name: str, kept: str = "") -> str:
    """``name`` as one segment of a URL's path: percent-encoded but for the characters in ``kept``, ``/`` and dot-only
    names included."""
    return _DOT_SEGMENTS.get(name) or quote(name, safe=kept)


def calls_of(events: Sequence[tuple[Event, Payload]], size: int) -> list[Sequence[tuple[Event, Payload]]]:
    """``events`` in calls of ``size`` (the last one shorter): a provider's batch limit when that is a count."""
    return [events[i : i + size] for i in range(0, len(events), size)]


def server_name(service: str, is_hosted: Callable[[str], bool], config: ProviderConfig) -> str:
    """Who answers, as errors name it: the hosted ``service`` by its name; any other server speaking its protocol
    (soketi, Reverb, the emulator, …) by its address, so that its refusals are not taken for the hosted service's."""
    if is_hosted(config.host):
        return service
    port = "" if config.port is None else f":{config.port}"
    return f"the {service}-protocol server at {config.url_host}{port}"


def unsupported(adapter: Adapter, capability: Capability) -> UnsupportedCapability:
    """The error for ``capability``, which ``adapter`` lacks, with the adapter's hint."""
    return UnsupportedCapability(adapter.name, capability.value, hint=adapter.unsupported_hints.get(capability, ""))


def count_of(value: object) -> int | None:
    """``value`` if it is a count a provider answers (a whole number, 0 or more; not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def unreadable_answer(provider: str, response: HttpResponse, problem: str, *, changes: bool = False) -> ProtocolError:
    """A provider's success answer that is not what its API answers (``problem`` says how): the provider, or a proxy
    in front of it, broke the protocol, not the request; so the status to pass on is 502, as a gateway answers an
    upstream's nonsense. The answer to a request that ``changes`` something (a publish) leaves its outcome unknown:
    the provider may have processed it."""
    error = ProtocolError(
        f"{provider} answered {response.status} with {problem}: {response.body[:200]!r}",
        http_status=502,
        answered_by=provider,
    )
    error.outcome_unknown = changes
    return error


def webhook_bytes(body: object) -> bytes:
    """A webhook's body as signed: the bytes received, or the text they decode to (as some frameworks give it)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")  # as the signature of a str was always computed
    raise ProtocolError(f"a webhook body is the raw bytes (or str) received, not {type(body).__name__}")


def webhook_json(body: bytes, what: str) -> Any:
    """A signed webhook body parsed as every provider's is: JSON in UTF-8, with nothing JSON cannot carry on (NaN, a
    lone surrogate), which a forward of its events could not encode. ``what`` names the body in the error."""
    try:
        return loads(body, what)  # also refuses nesting deeper than the parser goes
    except InvalidFrame as exc:  # the parser's error names a frame; a webhook body is no frame
        raise ProtocolError(exc.message) from None


WEBHOOK_WINDOW_SECONDS = 300
_LATEST_MILLISECONDS = 2**53  # a JSON number's whole range (year 285,000): past it a time is no time


def webhook_milliseconds(value: object, what: str) -> int:
    """A webhook's time as providers send it: a JSON integer of milliseconds since 1970 (a string or ``true`` was
    read as one)."""
    if type(value) is not int or not 0 <= value <= _LATEST_MILLISECONDS:
        shown = repr(value) if type(value) in (int, float) else json_kind(value)
        raise ProtocolError(f"{what} must be a whole number of milliseconds since 1970, not {shown[:40]}")
    return value


def refuse_replayed_webhook(what: str, time_ms: int, now: float) -> None:
    """A signed body carries no nonce: sent again later by whoever saw it, it would verify. So, as Pusher's webhooks
    (pusher-http-python's validate_webhook), a body whose time (``what``, ``time_ms``) is over the window from ``now``
    (seconds) is refused."""
    skew = abs(now - time_ms / 1000)
    if skew > WEBHOOK_WINDOW_SECONDS:
        shown = math.ceil(skew * 1000) / 1000  # rounded up: 300.0004 s shown as 300 s would read as within the window
        raise StaleTimestamp(
            f"{what} is {shown} s from now; over {WEBHOOK_WINDOW_SECONDS} s is a replay (or a clock to fix)"
        )


def webhook_event(
    where: str,
    kind: object,
    channel: object,
    time_ms: int,
    *,
    user_id: object = None,
    event: object = None,
    data: object = None,
    socket_id: object = None,
    subscription_count: object = None,
    encoding: str | None = None,
) -> WebhookEvent:
    """A verified webhook event in the common model; ``where`` names it in the body when a field is not what the
    providers send (a signed body may still be malformed: a provider's bug, a test's typo)."""
    if not isinstance(kind, str) or not kind:
        raise ProtocolError(f"{where} has no name")
    if not isinstance(channel, str) or not channel:
        raise ProtocolError(f"{where} ({kind}) has no channel")
    if subscription_count is not None and (
        isinstance(subscription_count, bool) or not isinstance(subscription_count, int)
    ):
        raise ProtocolError(f"{where} ({kind}) has a subscription_count that is not an integer: {subscription_count!r}")
    return WebhookEvent(
        kind,
        channel,
        time_ms,
        _user_id(where, kind, user_id),
        _text(where, kind, "event", event),
        data,
        _text(where, kind, "socket_id", socket_id),
        subscription_count,
        encoding,
    )


def _text(where: str, kind: str, name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{where} ({kind}) has a {name} that is not a string: {value!r}")
    return value


def _user_id(where: str, kind: str, user_id: object) -> str | None:
    """A user id as presence members carry it: a string, or an integer read as its digits (channel_data's
    ``user_id`` may be either)."""
    user_id = integer_id_as_digits(user_id)
    if user_id is None or isinstance(user_id, str):
        return user_id
    raise ProtocolError(f"{where} ({kind}) has a user id that is neither a string nor an integer: {user_id!r}")
