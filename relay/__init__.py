"""Relay: one publish/auth API over Pusher, Ably and a self-hosted Pusher-protocol server.

import relay
relay.publish("orders", "order-ready", {"id": 42})      # provider from RELAY_URL (or PUSHER_*/ABLY_API_KEY)

client = relay.Relay.from_url("emulator://app-key:app-secret@127.0.0.1:6001/apps/1")
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import TYPE_CHECKING

# In a checkout, relay.adapters and relay.emulator are the top-level adapters/ and emulator/ folders, which
# pyproject.toml maps into place when installing. Python run from the checkout's root imports this folder, not the
# installed copy, so it has to find those two beside it (else "No module named 'relay.adapters'").
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(os.path.dirname(__file__), "adapters")) and os.path.isfile(
    os.path.join(_checkout, "adapters", "__init__.py")
):
    __path__.append(_checkout)

if TYPE_CHECKING:
    from relay.client import AsyncRelay, MirrorError, Relay
    from relay.client import UserLike as UserLike
    from relay.client import WebhookHeaders as WebhookHeaders
    from relay.default import (
        authenticate_user,
        authorize_channel,
        authorize_channels,
        channel,
        channels,
        default_client,
        presence_members,
        publish,
        publish_batch,
        reset_default_client,
        send_to_user,
        terminate_user_connections,
        verify_webhook,
    )
    from relay.errors import IdempotencyKeyReused, InvalidIdempotencyKey, RelayError, UnsupportedCapability
    from relay.models import ChannelInfo, Event, PresenceMember, PublishResult, User, WebhookEvent

    __version__: str


# The package's modules that `import relay` loaded, and so made its attributes, when it imported the client: code
# reading `relay.errors.ProtocolError` after `import relay` alone goes on finding them.
_LOADED_WITH_THE_CLIENT = frozenset(
    {"adapters", "client", "config", "errors", "http_errors", "idempotency", "models", "payload", "protocol", "senders"}
)

__all__ = [
    "AsyncRelay",
    "ChannelInfo",
    "Event",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "MirrorError",
    "PresenceMember",
    "PublishResult",
    "Relay",
    "RelayError",
    "UnsupportedCapability",
    "User",
    "WebhookEvent",
    "authenticate_user",
    "authorize_channel",
    "authorize_channels",
    "channel",
    "channels",
    "default_client",
    "presence_members",
    "publish",
    "publish_batch",
    "reset_default_client",
    "send_to_user",
    "terminate_user_connections",
    "verify_webhook",
]

# The functions of relay/default.py: they use the default client
_DEFAULT_CLIENT_FUNCTIONS = frozenset(name for name in __all__ if name.islower())


def _close_default_client() -> None:
    """The default client has no owner to close it: at exit its kept-alive connection is closed here, not left to the
    garbage collector (which warns of an unclosed socket under `python -X dev`). Registered as the package is
    imported, not as relay/default.py is at the first ``relay.publish``: atexit runs the last registered first, and an
    application's own exit handlers, registered after ``import relay``, may still publish."""
    if "relay.default" in sys.modules:
        from relay.default import reset_default_client

        reset_default_client()


atexit.register(_close_default_client)


def _load(name: str) -> object:
    """The classes and functions above and ``__version__``, loaded at their first use rather than with the package
    (the module's ``__getattr__``): every ``relay.…`` module, the ``relay`` command's entry point first, runs this
    file, and the client's dependencies (httpx) and the installed metadata took a fifth of a second to load, in which
    Ctrl-C was a traceback."""
    value: object
    if name in ("AsyncRelay", "MirrorError", "Relay", "UserLike", "WebhookHeaders"):
        import relay.client as client

        value = getattr(client, name)
    elif name in ("IdempotencyKeyReused", "InvalidIdempotencyKey", "RelayError", "UnsupportedCapability"):
        import relay.errors as errors

        value = getattr(errors, name)
    elif name in ("ChannelInfo", "Event", "PresenceMember", "PublishResult", "User", "WebhookEvent"):
        import relay.models as models

        value = getattr(models, name)
    elif name in _DEFAULT_CLIENT_FUNCTIONS:
        import relay.default as default

        value = getattr(default, name)
    elif name in _LOADED_WITH_THE_CLIENT:
        # Binds each module of the package it imports here, as importing the package did
        import relay.client  # noqa: F401

        if name not in globals():  # the client is still being imported, and has not imported this one yet
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return globals()[name]
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("relay-realtime")
        except PackageNotFoundError:  # a source tree that was never installed
            value = "0.0.0"
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # found here from now on, without this function
    return value


def __dir__() -> list[str]:
    """What the package has, loaded or not: ``dir(relay)``, ``help(relay)`` and an editor's completion list the
    classes before their first use."""
    return sorted({*globals(), *__all__, "__version__"})


if not TYPE_CHECKING:  # a type checker sees the names imported above alone: ``relay.Relayy`` is its error, not object
    __getattr__ = _load
