"""``Relay`` and ``AsyncRelay``: one publish/auth API whatever the provider.

Both build the same :class:`~relay.adapters.base.Call` values through :class:`_Operations` and differ only in how
they send them. A configuration may name several providers: ``mirror`` runs every operation on all of them (for a
migration while clients move), ``failover`` runs it on the first that works.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any, Generic, NamedTuple, Self, TypeVar

from relay.adapters.base import MAX_RESTARTS, Adapter, Call, Capability, HttpRequest, HttpResponse, unsupported
from relay.config import (
    ProviderConfig,
    env_master_key,
    from_env,
    parse_url,
    provider_url_text,
    trimmed_environment,
    with_master_key,
)
from relay.errors import (
    ClientClosed,
    ConfigError,
    InvalidChannelName,
    InvalidEventName,
    InvalidSocketId,
    LimitExceeded,
    ProtocolError,
    ProviderError,
    RateLimited,
    RelayError,
    TransportError,
    UnknownKey,
    UnsupportedCapability,
    about_item,
)
from relay.idempotency import (
    NOTHING_DELIVERED,
    AsyncPublishedKeys,
    Delivered,
    PublishedKeys,
    fingerprint,
)
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent
from relay.payload import Payload
from relay.protocol.channels import validate_event_name
from relay.protocol.frames import refuse_lone_surrogates
from relay.protocol.idempotency_keys import check_idempotency_key
from relay.senders import (
    DEFAULT_RETRY,
    AsyncSender,
    Deadline,
    RetryPolicy,
    Sending,
    SyncSender,
    checked_retry_policy,
    refuse_undecodable_host,
)

T = TypeVar("T")
SenderT = TypeVar("SenderT", SyncSender, AsyncSender)
KeysT = TypeVar("KeysT", PublishedKeys, AsyncPublishedKeys)
R = TypeVar("R")  # what one operation returns, once its calls on one provider are combined
# Channels one Ably token may be asked for: a TokenRequest's capability grows with each, and so does every
# request that carries the token.
MAX_TOKEN_CHANNELS = 100
UserLike = User | Mapping[str, Any] | str | int
# A request's headers as web frameworks give them: a mapping (Starlette, Django, a dict) or what lists its
# (name, value) pairs (Flask's werkzeug Headers, an ASGI scope's raw pairs of bytes)
WebhookHeaders = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


class Mode(enum.Enum):
    SINGLE = "single"
    MIRROR = "mirror"
    FAILOVER = "failover"


class MirrorError(RelayError):
    """In mirror mode, some providers failed: ``results`` has what succeeded, ``errors`` what failed, by provider.
    A 502 to a web caller: the request was checked against every provider before any was sent it."""

    http_status = 502

    def __init__(self, results: dict[str, object], errors: dict[str, RelayError]) -> None:
        failed = "; ".join(f"{name}: {error.message}" for name, error in errors.items())
        super().__init__(f"mirror: {len(errors)} of {len(results) + len(errors)} providers failed ({failed})")
        self.results = results
        self.errors = errors
        # A caller that checks only this error before sending again would deliver twice what one provider may have
        self.outcome_unknown = any(error.outcome_unknown for error in errors.values())


def make_adapter(config: ProviderConfig) -> Adapter:
    if config.scheme in ("pusher", "emulator"):
        from relay.adapters.pusher import PusherAdapter

        return PusherAdapter(config)
    if config.scheme == "ably":
        from relay.adapters.ably import AblyAdapter

        return AblyAdapter(config)
    from relay.adapters.memory import MemoryAdapter

    return MemoryAdapter(config)


@dataclass(frozen=True, slots=True)
class Providers:
    """Several providers as ``mirror:URL|URL…`` or ``failover:URL|URL…`` configure them, parsed."""

    mode: Mode
    configs: tuple[ProviderConfig, ...]


# What names the providers a client sends to: a URL as written, or one or several providers parsed.
Configuration = str | ProviderConfig | Providers


def parse_configuration(url: Configuration) -> tuple[Mode, list[ProviderConfig]]:
    """``URL``, or ``mirror:URL|URL…`` / ``failover:URL|URL…``, or an already parsed configuration."""
    mode, configs = _parsed_configuration(url)
    for config in configs:
        refuse_undecodable_host(config)
    return mode, configs


def _parsed_configuration(url: Configuration) -> tuple[Mode, list[ProviderConfig]]:
    if isinstance(url, ProviderConfig):
        return Mode.SINGLE, [url]
    if isinstance(url, Providers):
        single = url.mode is Mode.SINGLE
        if len(url.configs) != 1 if single else len(url.configs) < 2:  # none: StopIteration at the first publish
            wanted = "one provider" if single else "two or more providers"
            raise ConfigError(f"Providers({url.mode.value}) takes {wanted}, got {len(url.configs)}")
        _refuse_repeated_providers(url.mode, url.configs)
        return url.mode, list(url.configs)
    url = provider_url_text(url)
    for mode in (Mode.MIRROR, Mode.FAILOVER):
        prefix = f"{mode.value}:"
        if url[: len(prefix)].lower() == prefix:  # as the schemes are: MIRROR: is mirror:
            urls = [part.strip() for part in url[len(prefix) :].split("|") if part.strip()]
            if len(urls) < 2:
                raise ConfigError(f"{mode.value}: needs two or more provider URLs separated by '|'")
            for index, part in enumerate(urls, 1):  # every part's shape before any is parsed: see _refuse_member
                _refuse_member(mode, index, part)
            configs = [parse_url(part) for part in urls]
            _refuse_repeated_providers(mode, configs)
            return mode, configs
    return Mode.SINGLE, [parse_url(url)]


def _refuse_member(mode: Mode, index: int, url: str) -> None:
    """Refuse the ``index``-th part of a ``mirror:`` or ``failover:`` list when it is no provider URL: the rest of a
    secret cut at its '|' (the part before it would be refused for what it lacks, not for that), or a nested list."""
    lowered = url.lower()
    if lowered.startswith(("mirror:", "failover:")):
        raise ConfigError(f"{mode.value}: URL {index} is another {lowered.partition(':')[0]}: list; they do not nest")
    if "://" not in url:  # never echoed: it may be the rest of a secret
        raise ConfigError(
            f"{mode.value}: URL {index} is not a provider URL (scheme://…): a '|' separates the providers, so one "
            "inside a key or secret is written %7C"
        )


def _refuse_repeated_providers(mode: Mode, configs: Sequence[ProviderConfig]) -> None:
    """A mirror naming one provider twice (whatever the key) would publish every event twice to its subscribers; a
    failover naming one twice would try again what just failed, as if it were another provider."""
    seen: set[tuple[str, str, str, str]] = set()
    for config in configs:
        provider = (config.scheme, config.base_url, config.path_prefix, config.app_id)
        if provider in seen:
            raise ConfigError(f"{mode.value}: names {config.url()} twice; each provider goes in once")
        seen.add(provider)


def _can_fail_over(error: RelayError) -> bool:
    """A provider that could not be reached, was rate limited, failed (5xx), or lacks the operation (Ably's
    send_to_user): the next one may do it."""
    return isinstance(error, TransportError | RateLimited | UnsupportedCapability) or (
        isinstance(error, ProviderError) and (error.http_status or 500) >= 500
    )


@dataclass(frozen=True, slots=True)
class _Route:
    adapter: Adapter
    config: ProviderConfig

    @property
    def label(self) -> str:
        return self.config.url()


class _Operations:
    """What the sync and async clients share: validation, data encoding, splitting and the calls to send."""

    def __init__(self, mode: Mode, configs: Sequence[ProviderConfig]) -> None:
        self.mode = mode
        self.routes = [_Route(make_adapter(config), config) for config in configs]

    def routes_for(self, capability: Capability) -> list[_Route]:
        """The providers an operation goes to: a mirror asks only its first one a query (what it answers is the
        answer; another being down does not fail it)."""
        if self.mode is Mode.MIRROR and capability in _QUERIES:
            return self.routes[:1]
        return self.routes

    @property
    def primary(self) -> Adapter:
        return self.routes[0].adapter

    def require(self, adapter: Adapter, capability: Capability) -> None:
        if capability not in adapter.capabilities:
            raise unsupported(adapter, capability)

    def calls(
        self, route: _Route, operation: Callable[[Adapter], list[Call[T]]], capability: Capability
    ) -> list[Call[T]]:
        self.require(route.adapter, capability)
        return operation(route.adapter)

    def plan(
        self, operation: Callable[[Adapter], list[Call[T]]], capability: Capability
    ) -> list[tuple[_Route, list[Call[T]] | None]]:
        """The providers an operation goes to, each with its calls if built already (None: built in its turn). A
        mirror builds every capable provider's calls before it sends any, so what one of them refuses as input (a user
        id it cannot carry, a channel it would publish in clear) is the caller's error, raised before another
        provider has delivered, not a MirrorError; a provider lacking the operation still fails in its turn."""
        routes = self.routes_for(capability)
        if self.mode is not Mode.MIRROR:
            return [(route, None) for route in routes]
        return [
            (route, operation(route.adapter) if capability in route.adapter.capabilities else None) for route in routes
        ]

    def publish_calls(
        self, adapter: Adapter, publish: _Publish, idempotency_key: str | None
    ) -> list[Call[PublishResult]]:
        channels, step = publish.channels, adapter.max_channels_per_publish
        # The publish as the caller made it: an encrypted channel 101st of 101 is as shared as one first
        adapter.check_publish_channels(channels)
        # One provider has checked the socket id already (per publish: no second check)
        socket_id = publish.socket_id if self.mode is Mode.SINGLE else self.socket_id_for(adapter, publish.socket_id)
        return [
            adapter.publish(channels[i : i + step], publish.event, publish.payload, socket_id, idempotency_key)
            for i in range(0, len(channels), step)
        ]

    def batch_calls(
        self, adapter: Adapter, events: Sequence[tuple[Event, Payload]], idempotency_key: str | None
    ) -> list[Call[PublishResult]]:
        if self.mode is not Mode.SINGLE:  # one provider has checked each socket id already
            events = [
                (event, payload)
                if event.socket_id == (socket_id := self.socket_id_for(adapter, event.socket_id))
                else (replace(event, socket_id=socket_id), payload)
                for event, payload in events
            ]
        calls, first = [], 0
        for part in adapter.batch_parts(events):
            calls.append(adapter.publish_batch(part, idempotency_key, first))
            first += len(part)
        return calls

    def skipping(
        self, operation: Callable[[Adapter], list[Call[PublishResult]]], delivered: Delivered
    ) -> Callable[[Adapter], list[Call[PublishResult]]]:
        """``operation``, but a provider that ``delivered`` it already (a mirror's earlier attempt with the same
        idempotency key, which failed on another provider) is sent nothing: it answers with what it did then."""
        if not delivered:
            return operation
        done = {id(route.adapter): delivered[route.label] for route in self.routes if route.label in delivered}

        def calls(adapter: Adapter) -> list[Call[PublishResult]]:
            result = done.get(id(adapter))
            return operation(adapter) if result is None else [_answered(result)]

        return calls

    def channel(self, name: object) -> str:
        """A channel name every configured provider accepts."""
        for route in self.routes:
            route.adapter.check_channel(name)
        assert isinstance(name, str)
        return name

    def socket_id(self, socket_id: object) -> str:
        """A socket id some configured provider accepts: a connection is one provider's (mid-migration, pusher-js
        pages send Pusher socket ids and ably-js pages Ably connection keys); else the first provider's error."""
        refusals: list[InvalidSocketId] = []
        for route in self.routes:
            try:
                return route.adapter.check_socket_id(socket_id)
            except InvalidSocketId as error:
                refusals.append(error)
        raise refusals[0]

    @staticmethod
    def socket_id_for(adapter: Adapter, socket_id: str | None) -> str | None:
        """``socket_id`` as ``adapter`` gets it: none when it cannot be a connection of that provider's (an Ably
        connection key to Pusher), which then has no connection to leave out."""
        if socket_id is None:
            return None
        try:
            return adapter.check_socket_id(socket_id)
        except InvalidSocketId:
            return None

    def prefix(self, prefix: object) -> str:
        """A prefix of channel names, as ``channels()`` lists them."""
        if not isinstance(prefix, str):
            raise InvalidChannelName(f"a channel name prefix must be a string, got {prefix!r}")
        # Checked here, as names are, so every provider refuses it alike: memory:// has no request to fail
        refuse_lone_surrogates(prefix, "a channel name prefix", ProtocolError)
        return prefix

    def checked_publish(self, channels: str | Sequence[str], event: str, data: Any, socket_id: str | None) -> _Publish:
        """A publish checked and its data encoded, once for every provider it goes to."""
        if isinstance(channels, str):
            names = [channels]
        elif isinstance(channels, Iterable) and not isinstance(channels, bytes | Mapping):
            names = list(channels)
        else:
            raise InvalidChannelName(f"channels is a channel name or a list of them, not {type(channels).__name__}")
        if not names:
            raise LimitExceeded("publish needs at least one channel")
        for name in names:
            self.channel(name)
        # "" is no socket id, as pusher-http-python reads it: a backend passing on a request's missing X-Socket-Id
        # header as "" publishes to everyone, where refusing it lost the event
        checked_socket_id = None if socket_id is None or socket_id == "" else self.socket_id(socket_id)
        return _Publish(list(dict.fromkeys(names)), _event_name(event), _payload_of(data), checked_socket_id)

    @staticmethod
    def checked_user_event(event: str, data: Any) -> tuple[str, Payload]:
        return _event_name(event), _payload_of(data)

    def checked_events(self, events: Iterable[Event | Mapping[str, Any]]) -> list[tuple[Event, Payload]]:
        """Every event checked before any is sent: a batch split into calls must not fail after its first call."""
        if not isinstance(events, Iterable) or isinstance(events, str | bytes | Mapping):
            raise ProtocolError(f"events is a list of Events or mappings, not {type(events).__name__}")
        checked = []
        for index, item in enumerate(events):
            try:
                event = item if isinstance(item, Event) else _event_of(item)
                self.channel(event.channel)
                _event_name(event.name)
                if event.socket_id is not None:
                    self.socket_id(event.socket_id)
                checked.append((event, _payload_of(event.data)))
            except ProtocolError as error:
                raise about_item(error, f"events[{index}]") from None  # in a batch of 1,000, which one
        return checked


_EVENT_FIELDS = ("channel", "name", "data", "socket_id")


def _event_of(item: object) -> Event:
    """A batch item given as a mapping of :class:`Event`'s fields (``socket_id`` optional)."""
    if not isinstance(item, Mapping):
        raise ProtocolError(f"an event is an Event or a mapping, not {type(item).__name__}")
    unknown = [str(key) for key in item if key not in _EVENT_FIELDS]
    missing = [key for key in _EVENT_FIELDS[:3] if key not in item]
    problems = []
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))}")
    if missing:
        problems.append(f"missing {', '.join(map(repr, missing))}")
    if problems:
        raise ProtocolError(
            f"{'; '.join(problems)} (an event's keys are channel, name, data and, optionally, socket_id)"
        )
    return Event(**item)


def _event_name(name: object) -> str:
    validate_event_name(name)
    assert isinstance(name, str)
    refuse_lone_surrogates(name, "event name", InvalidEventName)
    return name


class _Publish(NamedTuple):
    channels: list[str]
    event: str
    payload: Payload
    socket_id: str | None

    def sent(self) -> bytes:
        """What this publish sends, for its idempotency key: a resend sends the same."""
        return fingerprint(("publish", self.channels, self.event, self.payload, self.socket_id))


def _answered(result: PublishResult) -> Call[PublishResult]:
    """A call that sends nothing and gives ``result``."""
    return Call(None, lambda _: result)


def _delivered_by_mirror(error: RelayError) -> Delivered:
    """What the providers of a mirror that did not fail delivered, by their labels (none for another error)."""
    if not isinstance(error, MirrorError):
        return NOTHING_DELIVERED
    return {label: result for label, result in error.results.items() if isinstance(result, PublishResult)}


def _batch_sent(events: Sequence[tuple[Event, Payload]]) -> bytes:
    """What a batch sends, as :meth:`_Publish.sent` (a batch reusing a publish's key is another request)."""
    return fingerprint(("batch", [(event.channel, event.name, payload, event.socket_id) for event, payload in events]))


def _payload_of(data: Any) -> Payload:
    """``data`` encoded, if every provider's clients can read it back."""
    payload = Payload.of(data)
    refuse_lone_surrogates(payload.text, "event data", ProtocolError)
    # Python writes NaN and Infinity into JSON, which has no such values: JSON.parse (pusher-js, ably-js) refuses the
    # whole message. The substring test keeps the second encoding off every other payload.
    if payload.is_json and ("NaN" in payload.text or "Infinity" in payload.text):
        try:
            json.dumps(data, allow_nan=False)
        except ValueError:
            raise ProtocolError(
                "event data holds NaN or Infinity, which JSON cannot carry (JSON.parse in pusher-js and ably-js "
                "refuses the message): send null or a string instead"
            ) from None
    return payload


# Pusher-protocol servers (the emulator among them) name a refused event by its index in the call they got
_BATCH_INDEX = re.compile(r"\bbatch\[(\d+)\]")


def _note_published(error: RelayError, done: Sequence[Any], capability: Capability, unsent_calls: int) -> None:
    """After the first of an operation's calls, what failed comes after what was published: say so, so that a caller
    does not send it all again and deliver the published part twice. A call the provider refused in part (Ably
    answers channel by channel) says what of it was published; if calls come after it, they were not sent: say that
    too, so that a caller sending again only what was refused does not lose them."""
    if capability not in (Capability.PUBLISH, Capability.BATCH):
        return
    unit = "events" if capability is Capability.BATCH else "channels"
    if unsent_calls and error.published is not None:
        calls = f"{unsent_calls} more call{'s' if unsent_calls > 1 else ''}"
        error.message += f"; the {unit} after this call's ({calls}) were not sent: send them too"
    if not done:
        return
    published = sum(len(part.channels) for part in done)  # a batch's result names one channel per event
    message = error.message
    if capability is Capability.BATCH:
        message = _BATCH_INDEX.sub(lambda match: f"batch[{int(match[1]) + published}]", message)
    error.message = (
        f"{message}; {unit} 0-{published - 1} were already published by the calls before this one "
        f"(its first call took {len(done[0].channels)})"
    )
    # A call refused in part (Ably answers channel by channel) already said which of its own were published
    if error.outcome_unknown:  # this call was sent, and its part may have been delivered too
        error.message += f": those from {published} on may have been delivered in part, check before sending them again"
    elif error.published is None:
        error.message += f": send only the {unit} from {published} on again"
    error.published = published + (error.published or 0)


class _Outcomes(Generic[R]):
    """One operation across the configured providers: what the mode makes of each provider's result or error."""

    def __init__(self, mode: Mode, *, asked_one: bool = False) -> None:
        self.mode = mode
        # An operation asked of one provider (a mirror's query goes to its first alone): its error is the answer, as
        # without a mirror
        self.asked_one = asked_one
        self.results: dict[str, R] = {}
        self.errors: dict[str, RelayError] = {}

    def failed(self, label: str, error: RelayError) -> None:
        """Record ``error``, or raise it where the mode does not go on to the next provider: a client closed
        (during this provider's request) is closed for the next one too, and says so alone."""
        if (
            self.mode is Mode.SINGLE
            or isinstance(error, ClientClosed)
            or (self.mode is Mode.FAILOVER and not _can_fail_over(error))
        ):
            raise self._after_earlier(error)
        self.errors[label] = error

    def _after_earlier(self, error: RelayError) -> RelayError:
        """A failover's error, saying so when a provider tried before it published part of the operation, or got the
        request and gave no answer: the last provider's refusal alone would tell the caller it may send it all again,
        and that part be delivered twice."""
        if self.mode is not Mode.FAILOVER:
            return error
        for label, earlier in self.errors.items():
            if earlier is not error and earlier.published:
                error.message += (
                    f"; an earlier provider, {label}, had published part of it before it failed ({earlier.message})"
                )
        if error.outcome_unknown:
            return error
        unanswered = next((label for label, earlier in self.errors.items() if earlier.outcome_unknown), None)
        if unanswered is not None:
            error.message += (
                f"; an earlier provider, {unanswered}, got it and gave no answer: it may have processed it (a publish "
                "may have been delivered), check before sending it again"
            )
            error.outcome_unknown = True
        return error

    def succeeded(self, label: str, outcome: R) -> bool:
        """Record ``outcome``; True when it is the answer (every mode but mirror stops at the first success)."""
        self.results[label] = outcome
        return self.mode is not Mode.MIRROR

    def final(self) -> R:
        """After every provider ran: failover's last error, or mirror's result (MirrorError if any failed)."""
        if self.errors and (self.mode is Mode.FAILOVER or self.asked_one):
            last = self.errors.popitem()[1]
            raise self._after_earlier(last)
        if self.errors:
            raise MirrorError(dict(self.results), self.errors)
        return next(iter(self.results.values()))


# An operation without its I/O: a generator that yields each request it needs sent (with the Sending its errors are
# worded by), and is sent the response, or has the RelayError of sending it thrown in where it asked. Relay and
# AsyncRelay only drive it (see _Driven), one sending, the other awaiting: what an operation does across its calls,
# pages and providers is written once, here, for both.
_Requests = Generator[tuple[HttpRequest, Sending], HttpResponse, T]


class _Driven(Generic[T]):
    """Requests as a client's ``_drive`` goes through them: ``next_request()`` gives the next request to send, or
    None when they are done and ``result`` is what they give; ``answer()`` takes its response, or its error."""

    result: T

    def __init__(self, requests: _Requests[T]) -> None:
        self._requests = requests
        self._answer: HttpResponse | RelayError | None = None  # None: not started yet

    def answer(self, answer: HttpResponse | RelayError) -> None:
        self._answer = answer

    def next_request(self) -> tuple[HttpRequest, Sending] | None:
        # An error is thrown in here, not from the driver's except clause: what the requests raise after it (the next
        # provider's refusal, a MirrorError) would be chained to it, as if raised while handling it
        try:
            if self._answer is None:
                return next(self._requests)
            if isinstance(self._answer, RelayError):
                return self._requests.throw(self._answer)
            return self._requests.send(self._answer)
        except StopIteration as done:
            self.result = done.value
            return None


def _run_all(calls: list[Call[T]], route: _Route, capability: Capability) -> _Requests[list[T]]:
    done: list[T] = []
    sending = _sending(route, capability)
    for index, call in enumerate(calls, 1):
        try:
            done.append((yield from _run(call, sending)))
        except RelayError as error:
            _note_published(error, done, capability, len(calls) - index)
            raise
    return done


def _run(call: Call[T], sending: Sending) -> _Requests[T]:
    response = None if call.request is None else (yield from _first_response(call, call.request, sending))
    result, follow = call.pages(response)
    restarts = MAX_RESTARTS
    requested = _Requested(call.request)
    while follow is not None:
        requested.add(follow, sending)
        try:
            page_response = yield follow, sending
        except RelayError as error:
            if call.request is None or not restarts or not call.restarts_after(error):
                raise
            restarts -= 1
            result, follow = call.pages((yield from _first_response(call, call.request, sending)))
            requested = _Requested(call.request)
            continue
        page, follow = call.pages(page_response)
        result = call.joined(result, page)
    return result


def _first_response(call: Call[Any], request: HttpRequest, sending: Sending) -> _Requests[HttpResponse]:
    try:
        return (yield request, sending)
    except RelayError as error:
        instead = call.request_instead(error)
        if instead is None:
            raise
    return (yield instead, sending)


class _Publishing(NamedTuple):
    """A publish or a batch checked, to send (by a client's ``_publish``)."""

    # Its requests to the providers that have not delivered it already (in a mirror's earlier attempt with the same
    # idempotency key, which failed on another provider)
    requests: Callable[[Delivered], _Requests[PublishResult]]
    # With an idempotency key: the key, and what the publish sends (a resend with the key must send the same)
    keyed: tuple[str, bytes] | None


class _BaseRelay(Generic[SenderT, KeysT]):
    """What both clients do without I/O: build themselves, describe themselves, sign auth bodies, verify webhooks, and
    make each operation's requests (which they send)."""

    # What a client builds of its own kind, sync or async: its sender (unless it is given one), and the memory of
    # its idempotency keys
    _sender_kind: type[SenderT]
    _keys_kind: type[KeysT]
    # The senders know when they are closed; a provider no request goes to (memory) would not
    _closed = False

    def __init__(
        self, url: Configuration, *, retry: RetryPolicy = DEFAULT_RETRY, sender: SenderT | None = None
    ) -> None:
        mode, configs = parse_configuration(url)
        policy = checked_retry_policy(retry)
        if sender is not None and policy != DEFAULT_RETRY:  # it would be ignored without a word
            kind = self._sender_kind.__name__
            raise ConfigError(
                f"retry= and sender= together: a sender given retries by its own policy, so give the policy to it, "
                f"{kind}(RetryPolicy(...))"
            )
        self._ops = _Operations(mode, configs)
        self._sender: SenderT = sender or self._sender_kind(policy)
        self._published: KeysT = self._keys_kind(lambda: self._closed, _delivered_by_mirror)

    @classmethod
    def from_url(cls, url: str | None, *, retry: RetryPolicy = DEFAULT_RETRY, sender: SenderT | None = None) -> Self:
        """``url`` may be ``os.getenv("RELAY_URL")``: None raises a ConfigError saying to set it."""
        return cls(provider_url_text(url), retry=retry, sender=sender)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        sender: SenderT | None = None,
    ) -> Self:
        return cls(configuration_from_env(environ), retry=retry, sender=sender)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_describe(self._ops)!r})"

    @property
    def adapter(self) -> Adapter:
        return self._ops.primary

    @property
    def config(self) -> ProviderConfig:
        """The primary provider's configuration."""
        return self._ops.routes[0].config

    # -- auth and webhooks (no I/O) ---------------------------------------------------------------------------

    def authorize_channel(self, socket_id: str, channel: str, user: UserLike | None = None) -> dict[str, Any]:
        """The body the primary provider's client expects from a channel-auth endpoint."""
        self._ops.require(self.adapter, Capability.CHANNEL_AUTH)
        return self.adapter.authorize_channel(
            self.adapter.check_socket_id(socket_id),
            self.adapter.check_channel(channel),
            None if user is None else User.coerce(user),
        )

    def authorize_channels(self, channels: Iterable[str], user: UserLike | None = None) -> dict[str, Any]:
        """An Ably TokenRequest for all of ``channels``, so one ably-js client, one connection, serves them. Ably
        only: pusher-js authorizes each channel on its own (:meth:`authorize_channel`)."""
        names = self.token_channels(channels)
        return self.adapter.authorize_channels(names, None if user is None else User.coerce(user))

    def token_channels(self, channels: Iterable[str]) -> list[str]:
        """``channels`` as :meth:`authorize_channels` takes them: 1 to MAX_TOKEN_CHANNELS valid names, each once.
        Raises UnsupportedCapability off Ably, before anything else is checked."""
        self._ops.require(self.adapter, Capability.CHANNELS_TOKEN)
        # A str is a sequence of one-character channel names; any other iterable is taken, as publish() takes it
        if isinstance(channels, str | bytes) or not isinstance(channels, Iterable):
            raise ProtocolError(f"channels must be a list of channel names, not {type(channels).__name__}")
        channels = list(channels)
        if not 1 <= len(channels) <= MAX_TOKEN_CHANNELS:
            raise ProtocolError(f"a token is asked for 1 to {MAX_TOKEN_CHANNELS} channels, not {len(channels)}")
        checked = []
        for index, channel in enumerate(channels):
            try:
                checked.append(self.adapter.check_channel(channel))
            except ProtocolError as error:
                raise about_item(error, f"channels[{index}]") from None  # of 100, which one
        return list(dict.fromkeys(checked))

    def authenticate_user(self, socket_id: str, user: UserLike) -> dict[str, Any]:
        self._ops.require(self.adapter, Capability.USER_AUTH)
        return self.adapter.authenticate_user(self.adapter.check_socket_id(socket_id), User.coerce(user))

    def verify_webhook(self, headers: WebhookHeaders, body: bytes | str) -> list[WebhookEvent]:
        """Check a webhook's signature and return its events in one model for every provider. ``body`` is the raw
        body received: bytes, or the str they decode to."""
        return _verify_webhook(self._ops, headers, body)

    # -- the operations' engine, sans I/O ---------------------------------------------------------------------

    def _each(
        self, operation: Callable[[Adapter], list[Call[T]]], capability: Capability, combine: Callable[[list[T]], R]
    ) -> _Requests[R]:
        """Run ``operation(adapter) -> list[Call]`` on the configured provider(s) according to the mode; ``combine``
        makes one provider's call results the operation's."""
        if self._closed:
            raise ClientClosed()
        plan = self._ops.plan(operation, capability)
        outcomes: _Outcomes[R] = _Outcomes(self._ops.mode, asked_one=len(plan) == 1)
        for route, built in plan:
            try:
                calls = built if built is not None else self._ops.calls(route, operation, capability)
                outcome = combine((yield from _run_all(calls, route, capability)))
            except RelayError as error:
                outcomes.failed(route.label, error)
                continue
            if outcomes.succeeded(route.label, outcome):
                return outcome
        return outcomes.final()

    # -- each operation checked, as the requests the clients send ---------------------------------------------

    def _publishing(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        socket_id: str | None,
        idempotency_key: str | None,
    ) -> _Publishing:
        publish = self._ops.checked_publish(channels, event, data, socket_id)
        return self._once_per_key(
            lambda adapter, key: self._ops.publish_calls(adapter, publish, key),
            Capability.PUBLISH,
            idempotency_key,
            publish.sent,
        )

    def _batch_publishing(
        self, events: Iterable[Event | Mapping[str, Any]], idempotency_key: str | None
    ) -> _Publishing:
        checked = self._ops.checked_events(events)
        return self._once_per_key(
            lambda adapter, key: self._ops.batch_calls(adapter, checked, key),
            Capability.BATCH,
            idempotency_key,
            lambda: _batch_sent(checked),
        )

    def _once_per_key(
        self,
        calls: Callable[[Adapter, str | None], list[Call[PublishResult]]],
        capability: Capability,
        idempotency_key: str | None,
        sent: Callable[[], bytes],
    ) -> _Publishing:
        """A publish or batch whose ``calls`` to one provider carry its ``idempotency_key``, checked; ``sent``: what it
        sends (fingerprinted only when there is a key to remember it by)."""
        key = None if idempotency_key is None else check_idempotency_key(idempotency_key)

        def requests(delivered: Delivered) -> _Requests[PublishResult]:
            return self._each(self._ops.skipping(lambda adapter: calls(adapter, key), delivered), capability, _merge)

        return _Publishing(requests, None if key is None else (key, sent()))

    def _send_to_user(self, user_id: str | int, event: str, data: Any) -> _Requests[None]:
        event, payload = self._ops.checked_user_event(event, data)
        return self._each(
            lambda adapter: [adapter.send_to_user(user_id, event, payload)], Capability.SEND_TO_USER, _nothing
        )

    def _terminate_user_connections(self, user_id: str | int) -> _Requests[None]:
        return self._each(
            lambda adapter: [adapter.terminate_user_connections(user_id)], Capability.TERMINATE_USER, _nothing
        )

    def _channel(self, name: str) -> _Requests[ChannelInfo]:
        self._ops.channel(name)
        return self._each(lambda adapter: [adapter.channel(name)], Capability.CHANNEL_INFO, _single)

    def _channels(self, prefix: str) -> _Requests[dict[str, ChannelInfo]]:
        self._ops.prefix(prefix)
        return self._each(lambda adapter: [adapter.channels(prefix)], Capability.CHANNEL_LIST, _single)

    def _presence_members(self, channel: str) -> _Requests[list[PresenceMember]]:
        self._ops.channel(channel)
        return self._each(lambda adapter: [adapter.presence_members(channel)], Capability.PRESENCE, _single)


class Relay(_BaseRelay[SyncSender, PublishedKeys]):
    """The synchronous client. Build it with :meth:`from_url` or :meth:`from_env`."""

    _sender_kind = SyncSender
    _keys_kind = PublishedKeys

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._sender.close()

    def _drive(self, requests: _Requests[T], deadline: Deadline | None = None) -> T:
        """What ``requests`` give, each request they ask for sent, all by one ``deadline`` (the operation's)."""
        deadline = deadline or Deadline(self._sender.policy)
        driven = _Driven(requests)
        with closing(requests):  # an interruption (not a RelayError) leaves it suspended: closed, not left to the gc
            while (asked := driven.next_request()) is not None:
                try:
                    driven.answer(self._sender.send(*asked, deadline))
                except RelayError as error:
                    driven.answer(error)
        return driven.result

    def _publish(self, publishing: _Publishing) -> PublishResult:
        deadline = Deadline(self._sender.policy)  # from the call: a resend's wait for the key's first attempt counts
        if publishing.keyed is None:
            return self._drive(publishing.requests(NOTHING_DELIVERED), deadline)
        key, sent = publishing.keyed
        return self._published.once(key, sent, lambda delivered: self._drive(publishing.requests(delivered), deadline))

    # -- publishing -------------------------------------------------------------------------------------------

    def publish(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        *,
        socket_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish ``data`` (a str is sent as is, anything else JSON-encoded once) to one or many channels. With an
        ``idempotency_key``, a repeat within 2 minutes is not sent again: it gets the first result, ``replayed``."""
        return self._publish(self._publishing(channels, event, data, socket_id, idempotency_key))

    def publish_batch(
        self, events: Iterable[Event | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Publish several events, each to its channel; ``idempotency_key`` as :meth:`publish`'s."""
        return self._publish(self._batch_publishing(events, idempotency_key))

    def send_to_user(self, user_id: str | int, event: str, data: Any) -> None:
        self._drive(self._send_to_user(user_id, event, data))

    def terminate_user_connections(self, user_id: str | int) -> None:
        self._drive(self._terminate_user_connections(user_id))

    # -- queries ----------------------------------------------------------------------------------------------

    def channel(self, name: str) -> ChannelInfo:
        return self._drive(self._channel(name))

    def channels(self, prefix: str = "") -> dict[str, ChannelInfo]:
        return self._drive(self._channels(prefix))

    def presence_members(self, channel: str) -> list[PresenceMember]:
        return self._drive(self._presence_members(channel))


class AsyncRelay(_BaseRelay[AsyncSender, AsyncPublishedKeys]):
    """The asynchronous client: the same methods as :class:`Relay`, awaited."""

    _sender_kind = AsyncSender
    _keys_kind = AsyncPublishedKeys

    async def __aenter__(self) -> AsyncRelay:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        await self._sender.aclose()

    async def _drive(self, requests: _Requests[T], deadline: Deadline | None = None) -> T:
        """What ``requests`` give, each request they ask for sent, all by one ``deadline`` (the operation's)."""
        deadline = deadline or Deadline(self._sender.policy)
        driven = _Driven(requests)
        with closing(requests):  # a cancellation leaves it suspended: closed, not left to the garbage collector
            while (asked := driven.next_request()) is not None:
                try:
                    driven.answer(await self._sender.send(*asked, deadline))
                except RelayError as error:
                    driven.answer(error)
        return driven.result

    async def _publish(self, publishing: _Publishing) -> PublishResult:
        deadline = Deadline(self._sender.policy)  # from the call: a resend's wait for the key's first attempt counts
        if publishing.keyed is None:
            return await self._drive(publishing.requests(NOTHING_DELIVERED), deadline)
        key, sent = publishing.keyed
        return await self._published.once(
            key, sent, lambda delivered: self._drive(publishing.requests(delivered), deadline)
        )

    async def publish(
        self,
        channels: str | Sequence[str],
        event: str,
        data: Any,
        *,
        socket_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        return await self._publish(self._publishing(channels, event, data, socket_id, idempotency_key))

    async def publish_batch(
        self, events: Iterable[Event | Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> PublishResult:
        return await self._publish(self._batch_publishing(events, idempotency_key))

    async def send_to_user(self, user_id: str | int, event: str, data: Any) -> None:
        await self._drive(self._send_to_user(user_id, event, data))

    async def terminate_user_connections(self, user_id: str | int) -> None:
        await self._drive(self._terminate_user_connections(user_id))

    async def channel(self, name: str) -> ChannelInfo:
        return await self._drive(self._channel(name))

    async def channels(self, prefix: str = "") -> dict[str, ChannelInfo]:
        return await self._drive(self._channels(prefix))

    async def presence_members(self, channel: str) -> list[PresenceMember]:
        return await self._drive(self._presence_members(channel))


def _verify_webhook(ops: _Operations, headers: WebhookHeaders, body: bytes | str) -> list[WebhookEvent]:
    """Any configured provider may be the sender (during a migration both are). When none verifies the webhook, the
    error is the one of the provider it claims to come from: whose signature headers it has, and whose key."""
    received = _header_values(headers)
    failures: list[tuple[Adapter, RelayError]] = []
    for route in ops.routes:
        try:
            return route.adapter.verify_webhook(received, body)
        except RelayError as error:
            failures.append((route.adapter, error))
    named = set(received)
    claimed = [(adapter, error) for adapter, error in failures if named & adapter.webhook_headers] or failures
    # A key that is not this provider's says only that the webhook is another's
    raise next((error for _, error in claimed if not isinstance(error, UnknownKey)), claimed[0][1])


def _header_values(headers: object) -> dict[str, str]:
    """``headers`` by lower-case name (HTTP's names are case-insensitive); bytes, as an ASGI scope has them, decoded
    as HTTP's latin-1."""
    items = getattr(headers, "items", None)
    pairs = items() if callable(items) else headers
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Iterable):
        raise ProtocolError(
            "headers must be the request's headers: a mapping of names to values, or (name, value) pairs, "
            f"not {type(headers).__name__}"
        )
    received: dict[str, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(p, str | bytes) for p in pair)):
            raise ProtocolError(f"a header must be a (name, value) pair of str (or bytes), not {pair!r:.100}")
        name, value = (part.decode("latin-1") if isinstance(part, bytes) else part for part in pair)
        received[name.lower()] = value
    return received


def _merge(parts: list[PublishResult]) -> PublishResult:
    """A publish's calls' results as one: replayed when no call sent anything again (the emulator remembered each)."""
    return PublishResult(
        tuple(channel for part in parts for channel in part.channels),
        tuple(message_id for part in parts for message_id in part.message_ids),
        replayed=bool(parts) and all(part.replayed for part in parts),
    )


# What one provider's calls for an operation make (_merge above, for publishes): the operation's result, and a
# MirrorError's per provider.
def _single(parts: list[T]) -> T:
    return parts[0]


def _nothing(parts: list[T]) -> None:
    return None


# The most pages one listing follows: 10 million channels at Ably's 1,000 a page. A server whose every page links
# a new next one (a fresh cursor each time) would otherwise be followed for ever.
MAX_PAGES = 10_000


class _Requested:
    """The pages one paginated call requested, from its first: a next page linked again (a server, or a proxy,
    whose link never moves on) would be followed for ever, each time with the same answer."""

    def __init__(self, first: HttpRequest | None) -> None:
        self._urls = set() if first is None else {first.url}

    def add(self, page: HttpRequest, sending: Sending) -> None:
        """``page``, about to be requested; a ProtocolError if it was already, or is one too many."""
        if page.url in self._urls:
            problem = f"linked as the next page {page.url[:300]}, which this listing already requested"
        elif len(self._urls) >= MAX_PAGES:
            problem = f"linked a next page after {MAX_PAGES} pages, more than any listing of its API has"
        else:
            self._urls.add(page.url)
            return
        raise ProtocolError(
            f"{sending.answered_by} {problem}: its pages would never end (check that the provider URL points at the "
            "provider itself, not at a proxy or another server)",
            http_status=502,  # the provider broke the protocol, not the request
            answered_by=sending.answered_by,
        )


_QUERIES = frozenset({Capability.CHANNEL_INFO, Capability.CHANNEL_LIST, Capability.PRESENCE})
_PUBLISHES = frozenset({Capability.PUBLISH, Capability.BATCH, Capability.SEND_TO_USER})


def _sending(route: _Route, capability: Capability) -> Sending:
    """What the errors of an operation's requests to ``route`` say: the provider's own, and, for a publish sent
    without an answer, that it may have been delivered."""
    return Sending(route.adapter.error_for, route.config.scheme, capability in _PUBLISHES, route.adapter.name)


def _describe(ops: _Operations) -> str:
    return _written(ops.mode, [route.config for route in ops.routes])


def describe_configuration(url: Configuration) -> str:
    """A provider configuration as written (one URL, or ``mirror:``/``failover:`` URLs joined by ``|``), each secret
    shown as ``***``: for logs and banners."""
    return _written(*parse_configuration(url))


def _written(mode: Mode, configs: Sequence[ProviderConfig]) -> str:
    urls = "|".join(config.url() for config in configs)
    return urls if mode is Mode.SINGLE else f"{mode.value}:{urls}"


def configuration_from_env(environ: Mapping[str, str] | None) -> Configuration:
    """The providers ``RELAY_URL`` names (``mirror:``/``failover:`` several), else the one provider
    :func:`relay.config.from_env` reads; whitespace around values left out, and ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64``
    applied to each Pusher-protocol or memory provider."""
    env = trimmed_environment(environ)
    url = env.get("RELAY_URL", "")
    if url.lower().startswith((f"{Mode.MIRROR.value}:", f"{Mode.FAILOVER.value}:")):
        try:
            mode, configs = parse_configuration(url)
        except ConfigError as exc:  # named, as from_env names a RELAY_URL of one provider
            raise ConfigError(f"RELAY_URL: {exc.message}") from None
        master_key = env_master_key(env)
        return Providers(mode, tuple(with_master_key(config, master_key) for config in configs))
    return from_env(env)
