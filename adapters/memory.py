"""An in-process provider for tests: every publish is recorded, nothing leaves the process.

``memory://NAME`` URLs with the same name share one store, so application code and test code that each build a
client from the same ``RELAY_URL`` see the same publishes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.adapters.base import Call, HttpResponse, calls_of
from relay.adapters.pusher import (
    PusherAdapter,
    check_encrypted_targets,
    encrypted_data_length,
    presence_channel,
    terminated_user,
    user_channel,
)
from relay.config import ProviderConfig
from relay.errors import InvalidChannelName, LimitExceeded, PayloadTooLarge, ProtocolError, RelayError
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent
from relay.payload import Payload
from relay.protocol.channels import DEFAULT_LIMITS, HOSTED_PUSHER_LIMITS, ChannelKind, classify, validate_channel_name
from relay.protocol.frames import check_event_size, dumps, refuse_lone_surrogates, utf8_length
from relay.protocol.members import parse_channel_data
from relay.protocol.signing import webhook_signature
from relay.protocol.socket_ids import validate_socket_id

MEMORY_KEY = "memory-key"
MEMORY_SECRET = "memory-secret"


@dataclass(frozen=True, slots=True)
class Published:
    """One event as published: ``data`` is the text the provider carries, ``is_json`` whether Relay encoded it as
    JSON (any value but a str) or it was published as that str. Records compare by the text they carry, whatever
    ``is_json`` says."""

    channel: str
    event: str
    data: str
    socket_id: str | None = None
    is_json: bool = field(default=False, compare=False)

    @property
    def value(self) -> Any:
        """What was published: the decoded JSON value, or the str as it was given."""
        return json.loads(self.data) if self.is_json else self.data


@dataclass
class MemoryStore:
    """What was published and terminated, and the subscriptions a test made up, which the queries answer from."""

    published: list[Published] = field(default_factory=list)
    terminated_users: list[str] = field(default_factory=list)
    # Per channel, its subscriptions' user ids (None off presence channels), one per connection, in order
    subscriptions: dict[str, list[str | None]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def subscribe(self, channel: str, user_id: str | int | None = None) -> None:
        """A client's subscription to ``channel``, which ``channel()``, ``channels()`` and ``presence_members()`` then
        count: on a presence channel it is ``user_id``'s (a user subscribed twice, from two tabs, is one member; a
        101st user is refused, as Pusher refuses them), on any other it has none. A ``#server-to-user-`` channel is
        no channel the API counts: ``send_to_user`` reaches the user, and ``published()`` shows it."""
        channel = validate_channel_name(channel, HOSTED_PUSHER_LIMITS)
        if classify(channel) is ChannelKind.SERVER_TO_USER:
            raise ValueError(
                f"{channel!r} is a signed-in user's channel, which Pusher counts and lists as no channel: publish "
                "to it with send_to_user and assert on published()"
            )
        if (classify(channel) is ChannelKind.PRESENCE) != (user_id is not None):
            raise ValueError(
                f"a subscription to {channel!r} needs a user id"
                if user_id is None
                else f"{channel!r} is not a presence channel: its subscriptions have no user id"
            )
        member = _member_id(user_id)
        with self.lock:
            subscribed = self.subscriptions.get(channel, [])
            limit = HOSTED_PUSHER_LIMITS.max_presence_members
            if member is not None and member not in subscribed and len(set(subscribed)) >= limit:
                raise LimitExceeded(f"presence limit of {limit} reached")  # the emulator's subscription_error
            self.subscriptions.setdefault(channel, subscribed).append(member)

    def unsubscribe(self, channel: str, user_id: str | int | None = None) -> None:
        """Ends one of the subscriptions :meth:`subscribe` made (``user_id``'s, on a presence channel): the user's
        latest, so a member stays listed where they first joined while another of their subscriptions lasts."""
        member = _member_id(user_id)
        with self.lock:
            subscribed = self.subscriptions.get(channel, [])
            if member not in subscribed:
                whose = "" if user_id is None else f" of user {member!r}"
                raise ValueError(f"no subscription{whose} to {channel!r} to end")
            del subscribed[len(subscribed) - 1 - subscribed[::-1].index(member)]
            if not subscribed:
                del self.subscriptions[channel]

    def clear(self) -> None:
        with self.lock:
            self.published.clear()
            self.terminated_users.clear()
            self.subscriptions.clear()


def _member_id(user_id: str | int | None) -> str | None:
    """A presence member's id as Pusher takes it in ``channel_data`` (an int as its digits, 1 to 128 characters):
    the rule the emulator holds a subscription to."""
    if user_id is None:
        return None
    if isinstance(user_id, str):  # UTF-8 cannot carry it: no client sends it
        refuse_lone_surrogates(user_id, "user id", InvalidChannelName)
    try:
        return parse_channel_data(dumps({"user_id": user_id}), HOSTED_PUSHER_LIMITS).user_id
    except ProtocolError as exc:
        raise InvalidChannelName(f"user id {user_id!r:.60} cannot be a presence member: {exc.message}") from None


def _channel_info(store: MemoryStore, channel: str, *, user_count: bool) -> ChannelInfo:
    """``channel`` as Pusher's API answers for it, from the store's subscriptions (its lock held)."""
    members = store.subscriptions.get(channel, [])
    return ChannelInfo(channel, bool(members), None, len(set(members)) if user_count else None)


def _end_subscriptions_of(store: MemoryStore, user_id: str) -> None:
    for channel, members in list(store.subscriptions.items()):
        members[:] = [member for member in members if member != user_id]
        if not members:
            del store.subscriptions[channel]


_stores: dict[str, MemoryStore] = {}
_stores_lock = threading.Lock()


def memory_store(name: str = "") -> MemoryStore:
    with _stores_lock:
        return _stores.setdefault(name, MemoryStore())


def _forked() -> None:
    """In the child of a fork(): a thread of the parent's publishing or asserting at the fork held a lock, and none
    in the child would release it (every publish to the store hung). The child keeps a copy of each store."""
    global _stores_lock
    _stores_lock = threading.Lock()
    for store in _stores.values():
        store.lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_forked)


def _check_size(channel: str, payload: Payload) -> None:
    """Pusher's size limit on what would be sent: an encrypted channel's data is sent encrypted, and larger."""
    size = utf8_length(payload.text)
    encrypted = classify(channel) is ChannelKind.ENCRYPTED
    check_event_size(encrypted_data_length(size) if encrypted else size, DEFAULT_LIMITS, (channel,))


class MemoryAdapter:
    scheme = "memory"
    name = "memory"
    capabilities = PusherAdapter.capabilities  # it signs as Pusher does
    unsupported_hints = PusherAdapter.unsupported_hints
    max_channels_per_publish = PusherAdapter.max_channels_per_publish
    max_batch_events = PusherAdapter.max_batch_events
    webhook_headers = PusherAdapter.webhook_headers  # signed as Pusher signs them

    def __init__(self, config: ProviderConfig) -> None:
        self.store = memory_store(config.host)
        self._master_key = config.encryption_master_key
        self._signer = PusherAdapter(
            ProviderConfig(
                "pusher",
                MEMORY_KEY,
                MEMORY_SECRET,
                "memory",
                "memory.invalid",
                encryption_master_key=config.encryption_master_key,
            ),
        )

    def check_channel(self, name: object) -> str:
        # Hosted Pusher's 164 characters, not a self-hosted server's 200: a test passes only where production would
        return validate_channel_name(name, HOSTED_PUSHER_LIMITS)

    def check_socket_id(self, socket_id: object) -> str:
        return validate_socket_id(socket_id)

    def error_for(self, response: HttpResponse) -> RelayError:
        return RelayError(f"memory provider error {response.status}")

    def _record(self, *entries: Published) -> Call[PublishResult]:
        def apply(_: HttpResponse | None) -> PublishResult:
            with self.store.lock:
                self.store.published.extend(entries)
            return PublishResult(tuple(entry.channel for entry in entries))

        return Call(None, apply)

    def check_publish_channels(self, channels: Sequence[str]) -> None:
        check_encrypted_targets(channels, self._master_key)

    def publish(
        self,
        channels: Sequence[str],
        event: str,
        payload: Payload,
        socket_id: str | None,
        idempotency_key: str | None = None,  # nothing here dedupes a resend: the client remembers the key
    ) -> Call[PublishResult]:
        self.check_publish_channels(channels)
        _check_size(channels[0], payload)
        return self._record(
            *(Published(channel, event, payload.text, socket_id, payload.is_json) for channel in channels)
        )

    def batch_parts(self, events: Sequence[tuple[Event, Payload]]) -> list[Sequence[tuple[Event, Payload]]]:
        """``events`` in the calls Pusher would take them in: ``max_batch_events`` a call."""
        return calls_of(events, self.max_batch_events)

    def publish_batch(
        self, events: Sequence[tuple[Event, Payload]], idempotency_key: str | None = None, first: int = 0
    ) -> Call[PublishResult]:
        for event, _ in events:
            check_encrypted_targets([event.channel], self._master_key)
        record = self._record(*(Published(e.channel, e.name, p.text, e.socket_id, p.is_json) for e, p in events))

        def apply(response: HttpResponse | None) -> PublishResult:
            # Sizes are checked when the call runs, as a Pusher-protocol server checks the call it receives: in a
            # batch split over several calls, the earlier calls are published, and the client says how many
            for index, (event, payload) in enumerate(events):
                try:
                    _check_size(event.channel, payload)
                except PayloadTooLarge as exc:
                    raise PayloadTooLarge(f"batch[{index}]: {exc.message}") from None  # as the emulator names it
            return record.parse(response)

        return Call(None, apply)

    def channel(self, name: str) -> Call[ChannelInfo]:
        # What Pusher answers an app with subscription counting off (its default, and the emulator's): a presence
        # channel's member count, no subscription count.
        presence = classify(name) is ChannelKind.PRESENCE

        def answer(_: HttpResponse | None) -> ChannelInfo:
            with self.store.lock:
                return _channel_info(self.store, name, user_count=presence)

        return Call(None, answer)

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]:
        user_count = prefix.startswith("presence-")  # as Pusher's answer has them: asked for presence channels only

        def answer(_: HttpResponse | None) -> dict[str, ChannelInfo]:
            with self.store.lock:
                return {  # in name order, as the emulator lists them
                    name: _channel_info(self.store, name, user_count=user_count)
                    for name in sorted(self.store.subscriptions)
                    if name.startswith(prefix)
                }

        return Call(None, answer)

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]:
        presence_channel(channel)

        def answer(_: HttpResponse | None) -> list[PresenceMember]:
            with self.store.lock:
                members = self.store.subscriptions.get(channel, [])
            return [PresenceMember(user_id) for user_id in dict.fromkeys(members) if user_id is not None]

        return Call(None, answer)

    def send_to_user(self, user_id: str | int, event: str, payload: Payload) -> Call[None]:
        channel = user_channel(user_id, HOSTED_PUSHER_LIMITS)
        _check_size(channel, payload)
        record = self._record(Published(channel, event, payload.text, is_json=payload.is_json))

        def apply(response: HttpResponse | None) -> None:
            record.parse(response)

        return Call(None, apply)

    def terminate_user_connections(self, user_id: str | int) -> Call[None]:
        terminated = terminated_user(user_id)  # refused as Pusher's adapter refuses it, before anything is recorded

        def apply(_: HttpResponse | None) -> None:
            with self.store.lock:
                self.store.terminated_users.append(terminated)
                _end_subscriptions_of(self.store, terminated)  # its connections closed, its memberships end

        return Call(None, apply)

    def authorize_channel(self, socket_id: str, channel: str, user: User | None) -> dict[str, Any]:
        return self._signer.authorize_channel(socket_id, channel, user)

    def authorize_channels(self, channels: Sequence[str], user: User | None) -> dict[str, Any]:
        return self._signer.authorize_channels(channels, user)

    def authenticate_user(self, socket_id: str, user: User) -> dict[str, Any]:
        return self._signer.authenticate_user(socket_id, user)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes | str) -> list[WebhookEvent]:
        return self._signer.verify_webhook(headers, body)

    def webhook_signature_headers(self, body: bytes) -> dict[str, str]:
        """The headers Pusher would sign ``body`` with for this provider's key: what ``verify_webhook`` accepts."""
        return {"X-Pusher-Key": MEMORY_KEY, "X-Pusher-Signature": webhook_signature(MEMORY_SECRET, body)}
