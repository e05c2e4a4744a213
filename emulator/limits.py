"""Per-app protection: the HTTP API rate limit (a token bucket) and the WebSocket Origin allow-list."""

from __future__ import annotations

import fnmatch
import math
from urllib.parse import urlsplit


class TokenBucket:
    """``rate`` requests per second with bursts of up to ``max(1, rate)``; time comes from the caller."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._updated = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def retry_after(self, now: float, cost: float = 1.0) -> int | None:
        """None when a request of ``cost`` tokens may go ahead now; otherwise whole seconds to wait (at least 1). A
        cost over the burst goes ahead from a full bucket rather than never: the debt its ``take`` leaves holds later
        requests back, so the rate still holds."""
        self._refill(now)
        needed = min(cost, self.burst)
        if self._tokens >= needed:
            return None
        return max(1, math.ceil((needed - self._tokens) / self.rate))

    def take(self, now: float, cost: float = 1.0) -> None:
        self._refill(now)
        self._tokens -= cost

    def take_if_available(self, now: float) -> bool:
        """Take a token if one is there now; whether it was."""
        if self.retry_after(now) is not None:
            return False
        self._tokens -= 1.0
        return True


def origin_allowed(allowed: tuple[str, ...], origin: str | None) -> bool:
    """Whether a WebSocket handshake's ``Origin`` may connect.

    An empty list allows every origin. Clients that send no Origin (servers, mobile SDKs, pysher) are not browsers
    and are allowed: the check protects users' browsers from other sites, it does not authenticate anyone. Entries
    are ``*``, a full origin (``https://app.example.com``, port included when not the default) or a host pattern
    (``app.example.com``, ``*.example.com``), compared without regard to case.
    """
    if not allowed or origin is None:
        return True
    origin = origin.strip().lower()
    host = (urlsplit(origin).hostname or "") if "://" in origin else ""
    for entry in allowed:
        entry = entry.strip().lower()
        if entry == "*" or entry == origin:
            return True
        if "://" not in entry and host and fnmatch.fnmatchcase(host, entry):
            return True
    return False
