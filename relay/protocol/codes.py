"""Pusher WebSocket error and close codes, and what each one tells a client to do.

Ranges from the protocol: 4000-4099 do not reconnect unchanged, 4100-4199 reconnect after a back-off, 4200-4299
reconnect at once, 4300-4399 are errors that never close the socket (pusher-js treats a close code >= 4300 as a
refusal, so the server must never close with one).
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    INACTIVE = 4202
    CLIENT_EVENT_REJECTED = 4301
    WATCHLIST_LIMIT = 4302


class Reconnect(enum.Enum):
    NEVER = "never"
    BACKOFF = "backoff"
    IMMEDIATELY = "immediately"
    STAYS_OPEN = "stays open"


def reconnect_strategy(code: int) -> Reconnect:
    """What a client does after receiving ``code``."""
    if 4000 <= code < 4100:
        return Reconnect.NEVER
    if 4100 <= code < 4200:
        return Reconnect.BACKOFF
    if 4200 <= code < 4300:
        return Reconnect.IMMEDIATELY
    if 4300 <= code < 4400:
        return Reconnect.STAYS_OPEN
    raise ValueError(f"{code} is not a Pusher error code (4000-4399)")
