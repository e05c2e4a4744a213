"""Ably over its REST API: publish, batch, channel status, presence; TokenRequests for clients; webhooks."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from relay.adapters.base import (
    Call,
    Capability,
    HttpRequest,
    HttpResponse,
    count_of,
    path_segment,
    refuse_replayed_webhook,
    server_name,
    unreadable_answer,
    unsupported,
    webhook_bytes,
    webhook_event,
    webhook_json,
    webhook_milliseconds,
)
from relay.adapters.pusher import presence_channel
from relay.config import ProviderConfig, is_hosted_ably
from relay.errors import (
    InvalidChannelName,
    InvalidSignature,
    InvalidSocketId,
    PermissionDenied,
    ProtocolError,
    ProviderError,
    RelayError,
    UnknownKey,
    UnsupportedCapability,
)
from relay.http_errors import error_for_status, leaves_outcome_unknown, parse_retry_after
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent
from relay.payload import Payload
from relay.protocol.ably import (
    ENTER,
    LEAVE,
    build_token_request,
    token_ttl_within,
    validate_channel_name,
    webhook_signature,
)
from relay.protocol.channels import ChannelKind, classify
from relay.protocol.frames import looks_like_json

ABLY_PROTOCOL_VERSION = "3"
_PRESENCE_ACTIONS = {ENTER: "member_added", LEAVE: "member_removed"}
_LIFECYCLE = {"channel.opened": "channel_occupied", "channel.closed": "channel_vacated"}
# What Ably has no counterpart for, and what to do instead (docs/providers.md)
UNSUPPORTED_HINTS: Mapping[Capability, str] = {
    Capability.SEND_TO_USER: "publish to a per-user channel instead",
    Capability.TERMINATE_USER: "revoke the user's tokens instead",
    Capability.USER_AUTH: "Ably identifies users by the clientId of their channel tokens",
}


def capability_for(
    channel: str, *, client_events: bool = False, history: bool = False, occupancy: bool = False
) -> list[str]:
    """Ably operations matching what a Pusher client may do on a channel of that kind.

    A Pusher client may only send ``client-…`` events, on private and presence channels, when the app enables client
    events (off by default; pusher-js refuses them on encrypted channels). An Ably capability cannot restrict event
    names: ``publish`` lets the token publish any name to every subscriber, as if the server had sent it. So it is
    granted only with ``client_events`` (``ably://…?client_events=true``), and never on encrypted channels.
    ``history`` (``ably://…?history=true``) lets the token read what the channel kept (Pusher keeps nothing): the
    messages before the subscriber came, as far back as the Ably app keeps them. ``occupancy``
    (``ably://…?occupancy=true``) grants ``channel-metadata``: the channel's counts, as occupancy events (Pusher's
    subscription_count, which a Pusher app enables in its settings)."""
    kind = classify(channel)
    publish = ["publish"] if client_events and kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE) else []
    reading = [*(["channel-metadata"] if occupancy else []), *(["history"] if history else []), "subscribe"]
    if kind is ChannelKind.PRESENCE:
        return ["presence", *publish, *reading]
    return [*publish, *reading]


def token_channel(name: object) -> str:
    """``name``, if a token capability keyed by it grants that one channel. A capability's key is a pattern: ``*`` is
    every channel, ``chat:*`` every channel of a namespace, and a ``[qualifier]`` prefix selects other channels
    (refused by :func:`validate_channel_name`). Namespaced names such as ``chat:room`` stay allowed."""
    channel = validate_channel_name(name)
    if "*" in channel:
        raise InvalidChannelName(
            f"{channel!r} cannot be authorized on Ably: in a token's capability '*' is a wildcard, "
            "so the token would grant other channels too",
            code=40010,
        )
    return channel


def refuse_encrypted(provider: str, channels: Sequence[str]) -> None:
    """Ably has no counterpart of Pusher's end-to-end encrypted channels: their data would go out in clear, which the
    name promises it never does, so a publish to one is refused before anything is sent."""
    for name in channels:
        if classify(name) is ChannelKind.ENCRYPTED:
            raise UnsupportedCapability(
                provider,
                "end-to-end encrypted channels",
                hint=f"{name!r} would be published in clear; publish it through Pusher or the emulator, "
                "or use a private- channel",
            )


# A token's clientId that lets its holder act as any client (enterClient('bob')); Ably's error for a clientId it
# cannot take is 40012
WILDCARD_CLIENT_ID = "*"
INVALID_CLIENT_ID = 40012

# The largest batch publish request body sent. Ably refuses one of 2 MiB or more (its BatchSpecs' messages each within
# the message size limit); half that is also within the emulator's max_request_bytes (1 MiB by default) and a
# proxy's usual limit (nginx's client_max_body_size is 1m), so a batch published to either is not refused whole.
MAX_BATCH_REQUEST_BYTES = 1 << 20
# What a message id ("{base}:{index}": a random base of 16 characters, or an idempotency key of up to 200 printable
# ASCII characters as relay.idempotency allows, each '"' or backslash of which JSON escapes to two, then ':' and the
# index) may add to a spec's size
_MESSAGE_ID_ROOM = 2 * 200 + 24

PAGE_LIMIT = 1000  # the most a paginated Ably answer gives per page (default 100)
# Ably's "capability denied", answered with status 401: the key is right but may not do this on that channel
CAPABILITY_DENIED = 40160
_CAPABILITY_ADVICE = "the API key's capabilities do not allow it there: Ably dashboard → API Keys"
# Ably's "Malformed message; invalid connectionKey": the whole publish is refused for a socket_id that is not a live
# connection's key (a Pusher socket id, a key cut short). Hosted Ably's text names the connectionId the key holds
# ("Malformed message; invalid connectionId", or "mismatched connectionId": its 40006 page).
MALFORMED_MESSAGE = 40006
_CONNECTION_FIELDS = ("connectionkey", "connectionid")
# A channel enumeration's pages went stale (the channels changed meanwhile): Ably says to start it again
STALE_PAGINATION = 40011

log = logging.getLogger("relay.adapters.ably")


def next_link(header: str) -> str | None:
    """The target of the ``rel="next"`` link in an RFC 5988 ``Link`` header, if any."""
    for link in header.split(","):
        target, _, params = link.partition(";")
        target = target.strip()
        rels = [p.strip().partition("=")[2].strip('"') for p in params.split(";") if p.strip().startswith("rel=")]
        if target.startswith("<") and target.endswith(">") and any("next" in rel.split() for rel in rels):
            return target[1:-1]
    return None


def one_per_user(members: list[PresenceMember]) -> list[PresenceMember]:
    """Ably lists a member per connection (clientId and connectionId); Pusher, and so the library, one per user: the
    first of each clientId, in order."""
    first: dict[str, PresenceMember] = {}
    for member in members:
        first.setdefault(member.user_id, member)
    return list(first.values())


class AblyAdapter:
    scheme = "ably"
    capabilities = frozenset(Capability) - UNSUPPORTED_HINTS.keys()
    unsupported_hints = UNSUPPORTED_HINTS
    max_channels_per_publish = 100
    max_batch_events = 100
    webhook_headers = frozenset({"x-ably-key", "x-ably-signature"})

    def __init__(
        self,
        config: ProviderConfig,
        *,
        clock: Callable[[], float] = time.time,
        random_id: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self._config = config
        self._clock = clock
        self._random_id = random_id
        # An ably:// URL may name a self-hosted Ably-protocol server (the emulator's Ably side): its refusals are not
        # hosted Ably's
        self.name = server_name("Ably", is_hosted_ably, config)
        credentials = base64.b64encode(f"{config.key}:{config.secret}".encode()).decode()
        self._headers = {
            "Authorization": f"Basic {credentials}",
            "X-Ably-Version": ABLY_PROTOCOL_VERSION,
            "Accept": "application/json",
        }

    def _request(self, method: str, path: str, body: object = None, *, idempotent: bool = True) -> HttpRequest:
        headers = dict(self._headers)
        raw = b""
        if body is not None:
            headers["Content-Type"] = "application/json"
            raw = json.dumps(body, separators=(",", ":")).encode()
        return HttpRequest(method, f"{self._config.base_url}{path}", headers, raw, idempotent)

    def _json(self, response: HttpResponse | None, *, changes: bool = False) -> Any:
        """``changes``: the request changes something (a publish), as ``unreadable_answer`` takes it."""
        assert response is not None
        try:
            return json.loads(response.body) if response.body else None
        except ValueError:
            raise unreadable_answer(self.name, response, "invalid JSON", changes=changes) from None

    def check_channel(self, name: object) -> str:
        return validate_channel_name(name)

    def check_socket_id(self, socket_id: object) -> str:
        """Ably's counterpart of a socket id is a connection key: any non-empty string."""
        if not isinstance(socket_id, str) or not socket_id:
            raise InvalidSocketId(f"an Ably connection key must be a non-empty string, got {socket_id!r}")
        return socket_id

    def error_for(self, response: HttpResponse) -> RelayError:
        # Without an ErrorInfo body (Ably's edge refuses a flood of requests so, 42922), the error is in the headers
        # Ably sends with every error, where ably-js reads it then
        text = response.headers.get("x-ably-errormessage") or response.body.decode("utf-8", "replace")
        message, code = text[:500] or "(empty body)", _error_code(response.headers.get("x-ably-errorcode"))
        try:
            error = json.loads(response.body)["error"]
            message, code = str(error.get("message", message)), _error_code(error.get("code"))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if code == CAPABILITY_DENIED:  # answered 401, but the credentials are right: no "check the key and secret"
            return PermissionDenied(
                f"{self.name} answered {response.status}: {message} ({_CAPABILITY_ADVICE})",
                http_status=response.status,
                code=code,
                retry_after=retry_after,
                answered_by=self.name,
            )
        return error_for_status(self.name, response.status, message, code=code, retry_after=retry_after)

    def _message(self, event: str, payload: Payload, message_id: str, socket_id: str | None) -> dict[str, object]:
        message: dict[str, object] = {"name": event, "data": payload.text, "id": message_id}
        # A str holding JSON too: pusher-js parses every data string it can, so its subscribers get the object, and
        # so do ably-js's with encoding json (the emulator's Pusher-to-Ably bridge does the same)
        if payload.is_json or looks_like_json(payload.text):
            message["encoding"] = "json"
        if socket_id is not None:
            # Ably's equivalent of Pusher's socket_id exclusion: publish as that connection, which
            # does not receive its own messages when the client sets echoMessages: false.
            message["connectionKey"] = socket_id
        return message

    # -- operations -------------------------------------------------------------------------------------------

    def check_publish_channels(self, channels: Sequence[str]) -> None:
        refuse_encrypted(self.name, channels)

    def publish(
        self,
        channels: Sequence[str],
        event: str,
        payload: Payload,
        socket_id: str | None,
        idempotency_key: str | None = None,
    ) -> Call[PublishResult]:
        self.check_publish_channels(channels)
        # Ably dedupes a message id per channel for 2 minutes: a key's resend, from any process, is not delivered
        # again (a publish over several calls carries the same id to other channels, which is no repeat)
        message_id = f"{idempotency_key or self._random_id()}:0"

        def request(connection_key: str | None) -> HttpRequest:
            message = self._message(event, payload, message_id, connection_key)
            if len(channels) == 1:
                return self._request("POST", f"/channels/{path_segment(channels[0])}/messages", [message])
            return self._request("POST", "/messages", [{"channels": list(channels), "messages": [message]}])

        def parse(response: HttpResponse | None) -> PublishResult:
            if len(channels) == 1:
                return self._single(response, channels[0], message_id)
            return self._batched(response, (message_id,), batch=False)

        return Call(
            request(socket_id), parse, instead=_unkeyed(self.name, socket_id is not None, lambda: request(None))
        )

    def _single(self, response: HttpResponse | None, channel: str, message_id: str) -> PublishResult:
        """Ably answers a publish to one channel with an object (its serials, from protocol 2) or nothing."""
        assert response is not None
        if not isinstance(self._json(response, changes=True), dict | None):
            raise unreadable_answer(self.name, response, "JSON that is not an object", changes=True)
        return PublishResult((channel,), (message_id,))

    def _batched(self, response: HttpResponse | None, message_ids: tuple[str, ...], *, batch: bool) -> PublishResult:
        """A batch answer: one BatchResult per BatchSpec, with a result per channel, in the order they were sent.
        Ably publishes on the channels it may and refuses the others: what it published is said, not lost."""
        assert response is not None
        body = self._json(response, changes=True)
        results: list[dict[str, Any]] = []
        for answer in body if isinstance(body, list) else [body]:
            # Protocol 1's answer, a list of {channel, messageId}, has no results: not a publish to nobody
            listed = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(listed, list) or not all(isinstance(result, dict) for result in listed):
                raise unreadable_answer(
                    self.name,
                    response,
                    "what is not a BatchResult {successCount, failureCount, results} per spec",
                    changes=True,
                )
            results += listed
        refused = [(index, result) for index, result in enumerate(results) if "error" in result]
        if refused:
            raise _refusal(self.name, refused, len(results) - len(refused), batch=batch)
        return PublishResult(tuple(str(result.get("channel")) for result in results), message_ids)

    def _spec(self, event: Event, payload: Payload, message_id: str, keyed: bool = True) -> dict[str, object]:
        """The BatchSpec publishing ``event``: its channel and its one message (without its connection key unless
        ``keyed``)."""
        message = self._message(event.name, payload, message_id, event.socket_id if keyed else None)
        return {"channels": [event.channel], "messages": [message]}

    def batch_parts(self, events: Sequence[tuple[Event, Payload]]) -> list[Sequence[tuple[Event, Payload]]]:
        """``events`` in the calls they are published in: at most ``max_batch_events`` a call, and a request body of
        at most ``MAX_BATCH_REQUEST_BYTES`` (each event is within Ably's 64 KiB, but 100 of them are not within its
        2 MiB a request, and a request over it fails whole). An event larger than that goes alone, for Ably to say
        why it refuses it."""
        parts: list[Sequence[tuple[Event, Payload]]] = []
        part: list[tuple[Event, Payload]] = []
        size = 1  # the body's closing ']'
        for event, payload in events:
            # the spec as sent, with room for its message id, and the '[' or ',' before it
            spec_size = len(json.dumps(self._spec(event, payload, ""), separators=(",", ":"))) + _MESSAGE_ID_ROOM + 1
            if part and (len(part) == self.max_batch_events or size + spec_size > MAX_BATCH_REQUEST_BYTES):
                parts.append(part)
                part, size = [], 1
            part.append((event, payload))
            size += spec_size
        return [*parts, part] if part else parts

    def publish_batch(
        self, events: Sequence[tuple[Event, Payload]], idempotency_key: str | None = None, first: int = 0
    ) -> Call[PublishResult]:
        refuse_encrypted(self.name, [event.channel for event, _ in events])
        base = idempotency_key or self._random_id()
        # Numbered across the whole batch: two events of a keyed batch to one channel are two messages
        message_ids = tuple(f"{base}:{i}" for i in range(first, first + len(events)))

        def request(keyed: bool) -> HttpRequest:
            pairs = zip(events, message_ids, strict=True)
            specs = [self._spec(event, payload, message_id, keyed) for (event, payload), message_id in pairs]
            return self._request("POST", "/messages", specs)

        keyed = any(event.socket_id is not None for event, _ in events)
        return Call(
            request(True),
            lambda response: self._batched(response, message_ids, batch=True),
            instead=_unkeyed(self.name, keyed, lambda: request(False)),
        )

    def channel(self, name: str) -> Call[ChannelInfo]:
        def parse(response: HttpResponse | None) -> ChannelInfo:
            assert response is not None
            details = self._json(response)
            counts = _occupancy_counts(details)
            # An empty answer (a proxy's 200 or 204) is not an idle channel: Ably always names the channel
            if counts is None or not isinstance(details.get("channelId"), str):
                raise unreadable_answer(
                    self.name, response, "what is not a ChannelDetails {channelId, status: {isActive, occupancy}}"
                )
            subscribers, members = counts
            active = bool(details.get("status", {}).get("isActive"))
            occupied = subscribers > 0 if subscribers is not None else active
            return ChannelInfo(name, occupied, subscribers, members if classify(name) is ChannelKind.PRESENCE else None)

        return Call(self._request("GET", f"/channels/{path_segment(name)}"), parse)

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]:
        """The active channels; listing presence channels (``presence-…``), their user counts, as Pusher gives them
        then: Ably's ChannelDetails (``by=value``) carry each channel's occupancy, names alone (``by=id``) do not, so
        only a ChannelDetails listing can leave out the active channels nobody is subscribed to."""
        params = {"prefix": prefix} if prefix else {}
        counts_users = prefix.startswith("presence-")
        query = urlencode({**params, "by": "value" if counts_users else "id", "limit": PAGE_LIMIT})

        def parse(response: HttpResponse | None) -> dict[str, ChannelInfo]:
            assert response is not None
            listed = self._json(response)
            if not isinstance(listed, list) or not all(isinstance(item, str | dict) for item in listed):
                raise unreadable_answer(self.name, response, "what is not a list of channel names (or ChannelDetails)")
            found = [_listed_channel(item, counts_users) for item in listed]
            return {info.name: info for info in found if info is not None and info.name}

        return Call(
            self._request("GET", f"/channels?{query}"),
            parse,
            self._next_page,
            lambda a, b: {**a, **b},  # a page may repeat a channel an earlier one gave
            restarts=lambda error: error.code == STALE_PAGINATION,
        )

    def _next_page(self, response: HttpResponse) -> HttpRequest | None:
        """The request for the page a paginated answer links as ``rel="next"`` (RFC 5988; Ably's links are relative
        to the request's path)."""
        target = next_link(response.headers.get("link", ""))
        if target is None:
            return None
        request = self._request("GET", "/")
        url = urljoin(response.url or request.url, target)
        if _origin(url) != _origin(request.url):
            # The request carries the API key: followed elsewhere (another host, or http:// from https://), it would
            # hand the key over. Ably's links are relative.
            raise unreadable_answer(self.name, response, f"a next page at another origin ({_origin(url)})")
        return HttpRequest("GET", url, request.headers, b"", True)

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]:
        def parse(response: HttpResponse | None) -> list[PresenceMember]:
            assert response is not None
            messages = self._json(response)
            if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
                raise unreadable_answer(self.name, response, "what is not a list of PresenceMessages")
            members = []
            for message in messages:
                if not isinstance(message.get("clientId"), str):
                    raise unreadable_answer(self.name, response, "a PresenceMessage without its clientId")
                data = message.get("data")
                if message.get("encoding") == "json" and isinstance(data, str):
                    try:
                        data = json.loads(data)
                    except ValueError:
                        raise unreadable_answer(
                            self.name, response, "a PresenceMessage whose data, marked encoding: json, is not JSON"
                        ) from None
                members.append(PresenceMember(message["clientId"], data if isinstance(data, dict) else None))
            return one_per_user(members)

        # Refused as Pusher and memory refuse it: Ably would answer [] for any channel, and code tested on memory://
        # would meet another answer in production
        presence = presence_channel(channel)
        request = self._request("GET", f"/channels/{path_segment(presence)}/presence?limit={PAGE_LIMIT}")
        return Call(request, parse, self._next_page, lambda a, b: one_per_user(a + b))

    def send_to_user(self, user_id: str | int, event: str, payload: Payload) -> Call[None]:
        raise unsupported(self, Capability.SEND_TO_USER)

    def terminate_user_connections(self, user_id: str | int) -> Call[None]:
        raise unsupported(self, Capability.TERMINATE_USER)

    # -- auth and webhooks ------------------------------------------------------------------------------------

    def authorize_channel(self, socket_id: str, channel: str, user: User | None) -> dict[str, Any]:
        """A signed TokenRequest for this channel only; ably-js and ably-python exchange it for a token."""
        return self.authorize_channels([channel], user)

    def authorize_channels(self, channels: Sequence[str], user: User | None) -> dict[str, Any]:
        """A signed TokenRequest for these channels, each with the operations of its kind: one ably-js client (one
        connection) for all of them."""
        names = [token_channel(channel) for channel in channels]  # also for callers that reach it without rules
        if user is None:
            presence = next((name for name in names if classify(name) is ChannelKind.PRESENCE), None)
            if presence is not None:
                raise ProtocolError(f"{presence!r} is a presence channel: authorize it with a user")
        elif user.id == WILDCARD_CLIENT_ID:
            raise ProtocolError(
                "user id '*' cannot be authorized on Ably: a token's clientId '*' is a wildcard, with which its holder "
                "enters presence as any user it names",
                code=INVALID_CLIENT_ID,
            )
        config = self._config
        now = self._clock()
        return build_token_request(
            config.key,
            config.secret,
            timestamp=int(now * 1000),
            nonce=secrets.token_hex(16),
            capability={
                name: capability_for(
                    name, client_events=config.client_events, history=config.history, occupancy=config.occupancy
                )
                for name in names
            },
            client_id=None if user is None else user.id,
            ttl=None if user is None else token_ttl_within(user.signed_in_until, now),
        )

    def authenticate_user(self, socket_id: str, user: User) -> dict[str, Any]:
        raise unsupported(self, Capability.USER_AUTH)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes | str) -> list[WebhookEvent]:
        body = webhook_bytes(body)
        lowered = {name.lower(): value for name, value in headers.items()}
        supplied_key = lowered.get("x-ably-key", "").encode()
        # Ably's docs call the header "the keyId"; verifiers in the wild meet the key name (appId.keyId): both are
        # this key's. The signature, not this header, is what proves the sender.
        key_name = self._config.key.encode()
        names = [name for name in (key_name, key_name.partition(b".")[2]) if name]
        if not any(hmac.compare_digest(supplied_key, name) for name in names):
            raise UnknownKey("webhook X-Ably-Key is missing or not this key's name (appId.keyId) or id (keyId)")
        expected = webhook_signature(self._config.secret, body)
        if not hmac.compare_digest(lowered.get("x-ably-signature", "").encode(), expected.encode()):
            raise InvalidSignature("webhook X-Ably-Signature does not match base64(HMAC-SHA256(key secret, body))")
        payload = webhook_json(body, "Ably webhook body")
        try:
            items = payload["items"]
            events = [event for index, item in enumerate(items) for event in _ably_webhook_events(index, item)]
            stamped = [item["timestamp"] for item in items if "timestamp" in item]  # each checked by its events
        except (ValueError, KeyError, TypeError, AttributeError):  # signed, but not what Ably sends
            raise ProtocolError("Ably webhook body must be {items: [...]} (batched mode) of Ably's items") from None
        if items and not stamped:
            raise ProtocolError("Ably webhook items have no timestamp (Ably stamps every item of a batched webhook)")
        if stamped:  # Ably retries a batch for up to 5 minutes (backing off to 60 s): within 300 s of its newest item
            refuse_replayed_webhook("Ably webhook's newest item", max(stamped), self._clock())
        return events


def _unkeyed(
    provider: str, keyed: bool, unkeyed: Callable[[], HttpRequest]
) -> Callable[[RelayError], HttpRequest | None] | None:
    """For a publish carrying a socket_id (a connectionKey): the same messages without it, when Ably refuses the key.
    Ably refuses the whole publish for a key that is not a connection's (a Pusher socket id, a key cut short): the
    sender would get its own message back, a smaller harm than every subscriber missing it. The message ids stay,
    so the publish is still idempotent."""
    if not keyed:
        return None

    def instead(error: RelayError) -> HttpRequest | None:
        reason = error.message.lower()
        if error.code != MALFORMED_MESSAGE or not any(field in reason for field in _CONNECTION_FIELDS):
            return None
        log.warning("%s refused the socket_id (connectionKey) of a publish, sent again without it: %s", provider, error)
        return unkeyed()

    return instead


def _error_code(value: object) -> int | None:
    """An ErrorInfo's ``code``: a whole number (a proxy's or an older server's "40160" read as one); anything else is
    no code, so that no advice is given for a code that was not Ably's."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or {"https": 443, "http": 80}.get(parts.scheme)


def _occupancy_counts(details: object) -> tuple[int | None, int | None] | None:
    """A ChannelDetails' subscribers and presence members, each None where Ably leaves it out; None for what is not a
    ChannelDetails.

    Occupied means someone subscribed, as on Pusher: Ably keeps a channel active (``isActive``) a while after its last
    subscriber left, or after a publish nobody received, so the subscriber count decides wherever Ably gives it."""
    status = details.get("status", {}) if isinstance(details, Mapping) else None  # optional in Ably's reference
    occupancy = status.get("occupancy", {}) if isinstance(status, Mapping) else None
    metrics = occupancy.get("metrics", {}) if isinstance(occupancy, Mapping) else None
    if not isinstance(metrics, Mapping):
        return None
    return count_of(metrics.get("subscribers")), count_of(metrics.get("presenceMembers"))


def _listed_channel(item: str | Mapping[str, Any], counts_users: bool) -> ChannelInfo | None:
    """A channel of Ably's list of active channels: a name, or ChannelDetails, whose occupancy has the presence set's
    size; None for an active channel nobody is subscribed to, which Pusher would not list."""
    if isinstance(item, str):
        return ChannelInfo(item, True)
    name = item.get("channelId")
    subscribers, members = _occupancy_counts(item) or (None, None)
    if subscribers == 0:
        return None
    return ChannelInfo(name if isinstance(name, str) else "", True, None, members if counts_users else None)


def _ably_webhook_events(index: int, item: Mapping[str, Any]) -> list[WebhookEvent]:
    where = f"Ably webhook items[{index}]"
    data = item.get("data") or {}
    channel = data.get("channelId")
    time_ms = webhook_milliseconds(item.get("timestamp", 0), f"{where}.timestamp")
    name = item.get("name")
    if name in _LIFECYCLE:
        return [webhook_event(where, _LIFECYCLE[str(name)], channel, time_ms)]
    if name == "channel.message":
        return [
            _message_event(where, "message", channel, time_ms, m, event=m.get("name")) for m in data.get("messages", [])
        ]
    if name == "presence.message":
        return [
            _message_event(where, _PRESENCE_ACTIONS[p["action"]], channel, time_ms, p)
            for p in data.get("presence", [])
            if p.get("action") in _PRESENCE_ACTIONS
        ]
    return []


def _message_event(
    where: str, kind: str, channel: object, time_ms: int, message: Mapping[str, Any], event: object = None
) -> WebhookEvent:
    """The event of an Ably message or presence message; its ``connectionId``, the connection key's id part, is
    Pusher's socket id, as a sender."""
    data, encoding = _decoded(f"{where} {kind}", message.get("data"), message.get("encoding"))
    return webhook_event(
        where,
        kind,
        channel,
        webhook_milliseconds(message.get("timestamp", time_ms), f"{where} {kind}.timestamp"),
        user_id=message.get("clientId"),
        event=event,
        data=data,
        socket_id=message.get("connectionId"),
        encoding=encoding,
    )


def _decoded(where: str, data: object, encoding: object) -> tuple[object, str | None]:
    """A webhook message's data decoded as Ably's SDKs decode it (``Message.fromEncoded``, the steps of ``encoding``
    from the last): ``base64`` to bytes, ``utf-8`` to text. ``json`` leaves the JSON text, as a Pusher webhook's data
    is. Decoding ends at a step relay cannot undo (``cipher+aes-…``: it holds no channel cipher key) or one the data
    does not follow (base64 that is not), leaving that message's data as far as it got and the steps still on it:
    one odd message does not cost the others in the batch."""
    if encoding is None or encoding == "":
        return data, None
    if not isinstance(encoding, str):
        raise ProtocolError(f"{where} has an encoding that is not a string: {encoding!r}")
    steps = encoding.split("/")
    while steps:
        step = steps[-1]
        if step == "base64" and isinstance(data, str):
            try:
                data = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                break
        elif step == "utf-8" and isinstance(data, bytes):
            try:
                data = data.decode()
            except UnicodeDecodeError:
                break
        elif step != "json" or not isinstance(data, str):
            break
        steps.pop()
    return data, "/".join(steps) or None


def _refusal(
    provider: str, refused: Sequence[tuple[int, Mapping[str, Any]]], published: int, *, batch: bool
) -> RelayError:
    """The error for ``provider``'s batch answer refusing some channels (or events) and publishing the others: which
    were refused and why, and ``published``, how many were delivered (not to be sent again)."""
    described = "; ".join(
        f"{f'batch[{index}] on ' if batch else ''}{result.get('channel')} ({_refusal_reason(result['error'])})"
        for index, result in refused
    )
    unit = "events" if batch else "channels"
    message = f"refused the publish on {len(refused)} of {len(refused) + published} {unit}: {described}"
    if published:
        message += f"; the rest ({published}) was published: do not send it again"
    first = refused[0][1]["error"] if isinstance(refused[0][1]["error"], dict) else {}
    status, code = first.get("statusCode"), first.get("code")
    code = code if isinstance(code, int) else None
    error: RelayError
    if not isinstance(status, int):
        error = ProviderError(f"{provider} {message}", answered_by=provider)
    elif code == CAPABILITY_DENIED:
        error = PermissionDenied(f"{provider} {message}", http_status=status, code=code, answered_by=provider)
    else:  # a 4xx refusal is the caller's to fix, not a provider failure to fail over
        error = error_for_status(provider, status, message, code=code)
    if published:
        error.published = published
    # A channel whose publish timed out while it was processed (50003) may have had it published all the same
    if any(_undecided(result["error"]) for _, result in refused):
        error.message += "; where it timed out, it may have been published: check before sending it again"
        error.outcome_unknown = True
    return error


def _undecided(error: object) -> bool:
    """Whether a batch result's ErrorInfo leaves open whether its channel's publish was processed."""
    if not isinstance(error, dict):
        return False
    status = error.get("statusCode")
    return leaves_outcome_unknown(status if isinstance(status, int) else None, _error_code(error.get("code")))


def _refusal_reason(error: object) -> str:
    if not isinstance(error, dict):
        return repr(error)
    reason = f"{error.get('message', 'refused')}, code {error.get('code')}"
    return f"{reason}: {_CAPABILITY_ADVICE}" if error.get("code") == CAPABILITY_DENIED else reason
