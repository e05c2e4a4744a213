"""HTTP statuses from a provider turned into Relay's typed errors."""

from __future__ import annotations

import datetime
import email.utils
import math
import time

from relay.errors import (
    AuthenticationError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProtocolError,
    ProviderError,
    RateLimited,
    RelayError,
)

_BY_STATUS: dict[int, type[RelayError]] = {
    400: ProtocolError,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    413: PayloadTooLarge,
    422: ProtocolError,
    429: RateLimited,
}

_ADVICE: dict[int, str] = {
    401: "check the key and secret in the provider URL, and the server clock",
    403: "the app is disabled, over quota, or the key lacks this permission",
    404: "check the app id and host in the provider URL",
    413: "the payload is over the provider's size limit",
    429: "slow down; retry after the given delay",
}


# Error answers that leave open whether the provider processed the request, as no answer at all does: a gateway's 504
# (the provider did not answer it in time), a gateway's 502 (its exchange with the provider broke, maybe once the
# provider had the request: the gateway does not say when) and Ably's 50003 (a publish timed out while it was being
# processed). A 500 is the provider's own answer that it failed, and a 503 that it took nothing on.
_UNDECIDED_STATUSES = frozenset({502, 504})
_UNDECIDED_CODES = frozenset({50003})


def leaves_outcome_unknown(status: int | None, code: int | None) -> bool:
    """Whether an error answer (``status``, the provider's ``code``, each None when not given) may follow the
    request's being processed."""
    return status in _UNDECIDED_STATUSES or code in _UNDECIDED_CODES


def error_for_status(
    provider: str,
    status: int,
    message: str,
    *,
    code: int | None = None,
    retry_after: float | None = None,
    error_class: type[RelayError] | None = None,
    advice: str | None = None,
) -> RelayError:
    """The typed error for an error answer; ``error_class`` when the provider's status means more than usual, and
    ``advice`` when the answer says more than its status about what to check."""
    error_class = error_class or _BY_STATUS.get(status, ProviderError)
    advice = advice or _ADVICE.get(status)
    text = f"{provider} answered {status}: {message}" + (f" ({advice})" if advice else "")
    return error_class(text, http_status=status, code=code, retry_after=retry_after, answered_by=provider)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf" and "nan" parse as floats, but are no delay: a wait without end is no advice, and a gateway could
        # not pass it on
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a bare date without a zone is read as such
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
