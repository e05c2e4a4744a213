"""An in-process provider for tests: every publish is recorded, nothing leaves the process.

``memory://NAME`` URLs with the same name share one store, so application code and test code that each build a
client from the same ``RELAY_URL`` see the same publishes.
"""

from __future__ import annotations

import json
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
from relay.errors import PayloadTooLarge, RelayError
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent
from relay.payload import Payload
from relay.protocol.channels import DEFAULT_LIMITS, HOSTED_PUSHER_LIMITS, ChannelKind, classify, validate_channel_name
from relay.protocol.frames import check_event_size, utf8_length
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
    published: list[Published] = field(default_factory=list)
    terminated_users: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.published.clear()
            self.terminated_users.clear()


_stores: dict[str, MemoryStore] = {}
_stores_lock = threading.Lock()


def memory_store(name: str = "") -> MemoryStore:
    with _stores_lock:
        return _stores.setdefault(name, MemoryStore())


def _check_size(channel: str, payload: Payload) -> None:
    """Pusher's size limit on what would be sent: an encrypted channel's data is sent encrypted, and larger."""
    size = utf8_length(payload.text)
    encrypted = classify(channel) is ChannelKind.ENCRYPTED
    check_event_size(encrypted_data_length(size) if encrypted else size, DEFAULT_LIMITS)


class MemoryAdapter:
    scheme = "memory"
    name = "memory"
    capabilities = PusherAdapter.capabilities  # it signs as Pusher does
    unsupported_hints = PusherAdapter.unsupported_hints
    max_channels_per_publish = 100
    max_batch_events = 10
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
        self, channels: Sequence[str], event: str, payload: Payload, socket_id: str | None
    ) -> Call[PublishResult]:
        self.check_publish_channels(channels)
        _check_size(channels[0], payload)
        return self._record(
            *(Published(channel, event, payload.text, socket_id, payload.is_json) for channel in channels)
        )

    def batch_parts(self, events: Sequence[tuple[Event, Payload]]) -> list[Sequence[tuple[Event, Payload]]]:
        """``events`` in the calls Pusher would take them in: ``max_batch_events`` a call."""
        return calls_of(events, self.max_batch_events)

    def publish_batch(self, events: Sequence[tuple[Event, Payload]]) -> Call[PublishResult]:
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
        empty = ChannelInfo(name, False, None, 0 if classify(name) is ChannelKind.PRESENCE else None)
        return Call(None, lambda _: empty)

    def channels(self, prefix: str) -> Call[dict[str, ChannelInfo]]:
        return Call(None, lambda _: {})

    def presence_members(self, channel: str) -> Call[list[PresenceMember]]:
        presence_channel(channel)
        return Call(None, lambda _: [])

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
