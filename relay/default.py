"""The default client, built from the environment at its first use, and the module-level functions that use it
(``relay.publish`` and the others, which the package loads from here at their first use).

They live here, not in the package's ``__init__``, so that their annotations name classes this module has imported:
``typing.get_type_hints(relay.publish)`` (FastAPI's ``Depends``, pydantic's ``validate_call``) reads them in the
functions' own module, where the package's lazily loaded classes were not yet defined (a NameError).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from relay.client import Relay, UserLike, WebhookHeaders
from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, WebhookEvent

_default: Relay | None = None
# Reentrant: a signal handler (a worker's SIGTERM handler publishing that it stops, or closing the client) runs in the
# main thread between two of its instructions, perhaps while that thread holds the lock, which it then waited for
# for ever. Making the client takes a while (its TLS settings are loaded), so a signal at the first publish landed so.
_default_lock = threading.RLock()


def default_client() -> Relay:
    """The client the module-level functions use, built from the environment on first use, and again once it was
    closed: by ``with relay.default_client() as client:`` (a ``Relay`` is a context manager) or its ``close()``, after
    which every module-level call raised ClientClosed, saying to create another client, for the process's life."""
    global _default
    with _default_lock:
        if _default is None or _default._closed:
            made = Relay.from_env()
            if _default is None or _default._closed:
                _default = made
            else:  # a signal handler made one meanwhile, which it may have published with: that one stays
                made.close()
        return _default


def reset_default_client() -> None:
    """Forget the default client, so the next call reads the environment again (for tests)."""
    global _default
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = None


def _forked() -> None:
    """In the child of a fork(): a thread of the parent's making or using the default client at the fork held the
    lock, and none in the child would release it (every module-level call hung)."""
    global _default_lock
    _default_lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_forked)


def publish(
    channels: str | Sequence[str],
    event: str,
    data: Any,
    *,
    socket_id: str | None = None,
    idempotency_key: str | None = None,
) -> PublishResult:
    return default_client().publish(channels, event, data, socket_id=socket_id, idempotency_key=idempotency_key)


def publish_batch(events: Iterable[Event | Mapping[str, Any]], *, idempotency_key: str | None = None) -> PublishResult:
    return default_client().publish_batch(events, idempotency_key=idempotency_key)


def channel(name: str) -> ChannelInfo:
    return default_client().channel(name)


def channels(prefix: str = "") -> dict[str, ChannelInfo]:
    return default_client().channels(prefix)


def presence_members(channel: str) -> list[PresenceMember]:
    return default_client().presence_members(channel)


def send_to_user(user_id: str | int, event: str, data: Any) -> None:
    default_client().send_to_user(user_id, event, data)


def terminate_user_connections(user_id: str | int) -> None:
    default_client().terminate_user_connections(user_id)


def authorize_channel(socket_id: str, channel: str, user: UserLike | None = None) -> dict[str, Any]:
    return default_client().authorize_channel(socket_id, channel, user)


def authorize_channels(channels: Iterable[str], user: UserLike | None = None) -> dict[str, Any]:
    return default_client().authorize_channels(channels, user)


def authenticate_user(socket_id: str, user: UserLike) -> dict[str, Any]:
    return default_client().authenticate_user(socket_id, user)


def verify_webhook(headers: WebhookHeaders, body: bytes | str) -> list[WebhookEvent]:
    """Check a webhook's signature and return its events. ``body`` is the raw body received: bytes, or the str they
    decode to."""
    return default_client().verify_webhook(headers, body)
